"""benchmarks/gpu.py, the prepared GPU run, in its --tiny mode on the CPU: every step runs and
writes the figures the GPU run will, so the script cannot rot while no GPU is at hand."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu as gpu_run

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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # steps of known length, so that the cut never depends on how busy the machine is
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    steps = [
        gpu_run.Step("long", 240, lambda tiny, work: [gpu_run.Command(sleep, "sleeper")]),
        gpu_run.Step("later", 240, lambda tiny, work: [gpu_run.Command(sleep, "never")]),
    ]
    monkeypatch.setattr(gpu_run, "STEPS", steps)
    args = argparse.Namespace(
        out_dir=str(tmp_path), deadline_s=8.0, steps=None, tiny=True, time_scale=1.0
    )
    results = gpu_run.run_steps(args)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    ends = {r["step"]: r["status"] for r in rows if "candidate" not in r}
    assert ends == {"long": "timeout", "later": "timeout"}
    (cut,) = [r for r in rows if "candidate" in r]  # the later step never started its command
    assert (cut["candidate"], cut["status"], cut["exit_code"]) == ("sleeper", "timeout", None)
    assert 4 < cut["seconds"] < 10  # what was left of the 8 s (at least 5), then cut
