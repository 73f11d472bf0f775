#!/usr/bin/env bash
# Wheels for what a bare GPU machine's Python lacks, into .whl/ (ignored by git), for
# benchmarks/gpu.sh to install there without a network. The versions are this checkout's venv's;
# the machine's Python is 3.12 on x86-64 (see ../.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
names=(pydantic pydantic_core annotated_types typing_inspection diffusers torch_fidelity
       webdataset braceexpand)
pins=()
for n in "${names[@]}"; do
    pins+=("$n==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$n'))")")
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${pins[@]}"
du -sh .whl
