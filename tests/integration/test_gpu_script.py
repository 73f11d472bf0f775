"""benchmarks/gpu.py, the prepared GPU run, in its --tiny mode on the CPU: every step runs and
writes the figures the GPU run will, so the script cannot rot while no GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def gpu(tmp_path: Path, *args: str, timeout: float) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--out-dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = tmp_path.glob("gpu-cpu-*.jsonl")
    return [json.loads(line) for line in results.read_text().splitlines()]


def test_the_tiny_gpu_run_measures_every_step_on_the_cpu(tmp_path: Path) -> None:
    rows = gpu(tmp_path, timeout=900)
    assert all(r["device"] == "cpu" and r["date"] for r in rows)
    ends = {r["step"]: r for r in rows if "candidate" not in r}
    assert list(ends) == ["trainer", "sweep", "pytest", "prepare", "estimate"]
    assert {s: e["status"] for s, e in ends.items()} == dict.fromkeys(ends, "ok"), [
        r.get("tail") for r in rows if r.get("status") not in (None, "ok")
    ]
    by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if "candidate" in r and "status" not in r:  # a figure, not a step's end
            by_step[r["step"]].append(r)
    trainer = by_step["trainer"]
    assert {(r["candidate"], r["depth"], r["mode"]) for r in trainer} == {
        (c, d, m) for c in ("baseline", "bf16-res") for d in (1, 2) for m in ("eager", "loop-eager")
    }
    assert all(r["tokens_per_second"] > 0 for r in trainer)
    sweep = [r for r in by_step["sweep"] if r.get("summary")]  # each compile mode's sweep MFU
    assert sorted(r["candidate"] for r in sweep) == ["auto", "default", "reduce-overhead"]
    assert all(r["steady_sweep_mfu_alone"] > 0 for r in sweep)
    assert all(r["steady_sweep_mfu_packed"] > 0 for r in sweep)
    (tests,) = [r for r in rows if r["step"] == "pytest" and "counts" in r]
    assert tests["counts"]["skipped"] >= 1
    assert "failed" not in tests["counts"]
    assert any(r.get("images_per_second", 0) > 0 for r in by_step["prepare"])
    estimate = ends["estimate"]
    assert estimate["estimated_gpu_hours"] > 0
    assert estimate["measured_gpu_hours"] > 0
    assert estimate["measured_over_estimated"] == (
        estimate["measured_gpu_hours"] / estimate["estimated_gpu_hours"]
    )


def test_a_step_past_the_deadline_is_cut_and_recorded_and_later_steps_are_not_run(
    tmp_path: Path,
) -> None:
    rows = gpu(tmp_path, "--deadline-s", "8", "--steps", "sweep", "pytest", timeout=120)
    ends = {r["step"]: r["status"] for r in rows if "candidate" not in r}
    assert ends == {"sweep": "timeout", "pytest": "timeout"}
    cut = [r for r in rows if r.get("status") == "timeout" and "candidate" in r]
    assert cut
    assert cut[0]["exit_code"] is None
    assert cut[0]["seconds"] < 10
