"""Every GPU figure isoflop reports, measured in one bounded run on a bare GPU machine.

The steps, most valuable first, so that a run cut short by its deadline loses only the last ones:

    trainer    bench_trainer on the large rungs (435M and 793M parameters), compiled, with the
               candidates for 50% MFU: the baseline, coordinate-descent tuning,
               `max-autotune-no-cudagraphs`, a bf16 residual stream, a doubled micro-batch
    sweep      bench_sweep_gpu for three compile modes (default, reduce-overhead, auto): per-rung
               and sweep MFU, alone and packed
    pytest     `pytest -m gpu`: the GPU tests, counted
    prepare    bench_prepare: Stable Diffusion's VAE and CLIP-L shapes (random weights)
    estimate   a short real sweep (`isoflop run`) timed against `isoflop plan`'s GPU-hour estimate

Each step runs as its own process with a time limit (its share, and never past the deadline),
and every JSON line it prints goes to one results file, `benchmarks/results/gpu-<device>-<date>
.jsonl`, with the step, the device's name and the date added; each step ends with a line of its
own (`"status"`: ok, failed or timeout, with its seconds). `--tiny` runs every step on the CPU
with tiny sizes in a few minutes: tests/integration/test_gpu_script.py runs it, so the script
keeps working while no GPU is at hand.

    benchmarks/gpu.sh                       # on the GPU machine (installs what it lacks)
    .venv/bin/python -m benchmarks.gpu --tiny --out-dir /tmp/gpu   # the same steps on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass(frozen=True)
class Command:
    """One process of a step: its arguments, and the share of the step's time it may take."""

    args: list[str]
    label: str
    share: float = 1.0


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float  # its limit on a GPU (--tiny: TINY_SECONDS, a guard on a busy CPU)
    commands: Callable[[bool, Path], list[Command]]


def trainer(tiny: bool, work: Path) -> list[Command]:
    bench = [PY, "benchmarks/bench_trainer.py"]
    if tiny:
        base = [*bench, "--ladder", "quickstart", "--rungs", "1", "2", "--batch", "4",
                "--steps", "2", "--warmup", "1", "--modes", "eager", "loop-eager"]  # fmt: skip
        return [Command(base, "baseline"), Command([*base, "--low-precision-residual"], "bf16-res")]
    # depths 18 and 22 of the paper ladder: 435M and 793M parameters
    base = [*bench, "--ladder", "paper", "--rungs", "18", "22", "--batch", "64", "--steps", "20",
            "--modes", "compiled", "loop-compiled"]  # fmt: skip
    return [
        Command(base, "baseline", 1.5),
        Command([*base, "--inductor", "coordinate_descent_tuning=1"], "coordinate-descent", 1.5),
        Command([*base, "--compile-mode", "max-autotune-no-cudagraphs"], "max-autotune", 2.0),
        Command([*base, "--low-precision-residual"], "bf16-residual"),
        Command([*base[:-4], "--batch", "128", *base[-4:]], "batch-128"),
    ]


def sweep(tiny: bool, work: Path) -> list[Command]:
    bench = [PY, "-m", "benchmarks.bench_sweep_gpu"]
    size = (
        ["--device", "cpu", "--depths", "2", "--steps", "2", "--batch", "8",
         "--peak-tflops", "1", "--latent", "4", "8", "8", "--max-per-gpu", "2"]
        if tiny else []
    )  # fmt: skip
    return [
        Command([*bench, *size, "--compile-mode", m, "--out", str(work / f"sweep-{m}.jsonl")], m)
        for m in ("default", "reduce-overhead", "auto")
    ]


def pytest(tiny: bool, work: Path) -> list[Command]:
    args = [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/trainer"]
    return [Command(args if tiny else [*args, "tests/integration"], "gpu-tests")]


def prepare(tiny: bool, work: Path) -> list[Command]:
    bench = [PY, "benchmarks/bench_prepare.py"]
    if tiny:
        return [Command([*bench, "--device", "cpu", "--images", "8", "--sd-images", "2",
                         "--sd-size", "64", "--workers", "0"], "cpu")]  # fmt: skip
    return [Command([*bench, "--device", "cuda", "--images", "2048", "--sd-images", "1024"], "sd")]


def manifest(tiny: bool, work: Path) -> Path:
    """The quickstart, trained on the GPU (bf16, compiled); tiny: two small budgets on the CPU."""
    m = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    m["metadata"]["name"] = "gpu-estimate"
    if tiny:
        m["spec"]["model"].pop("configs", None)
        m["spec"]["model"].update({"depths": [1, 2, 3], "widthPerDepth": 32, "headDim": 32})
        m["spec"]["budgets"] = [1e10, 3e10]  # a law needs two
        m["spec"]["training"].update({"minSteps": 5, "evalSamples": 16})
        m["spec"]["fit"] = {"bootstrap": 0, "method": "parabola"}
    path = work / "estimate.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def estimate(tiny: bool, work: Path) -> list[Command]:
    path = manifest(tiny, work)
    gpus = ["--gpus", "none"] if tiny else ["--gpus", "0"]
    cli = [PY, "-m", "isoflop.cli"]
    return [
        Command([*cli, "plan", str(path), "--json"], "plan", 0.1),
        Command([*cli, "run", str(path), "--run-dir", str(work / "run"), "--plain", *gpus], "run"),
    ]


TINY_SECONDS = 150
STEPS = [
    Step("trainer", 240, trainer),
    Step("sweep", 240, sweep),
    Step("pytest", 120, pytest),
    Step("prepare", 90, prepare),
    Step("estimate", 150, estimate),
]


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name())
    except ImportError:
        pass
    return "cpu"


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                out.append(row)
    return out


def run_command(
    args: list[str], timeout: float, env: dict[str, str]
) -> tuple[str, str, int | None]:
    """stdout, stderr and the exit code (None: cut at its timeout). The command runs in a process
    group of its own, and a cut takes the whole group: the trainers a benchmark started too."""
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        return out, err, proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return out, err, None


def pytest_counts(text: str) -> dict[str, int]:
    """pytest's summary line ("3 passed, 5 skipped, 1 failed in 9.1s") as counts."""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                              text)}  # fmt: skip


def run_steps(args: argparse.Namespace) -> Path:
    today = datetime.date.today().isoformat()
    device = device_name()
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"gpu-{slug}-{today}.jsonl"
    deadline = time.monotonic() + args.deadline_s
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    wanted = args.steps or [s.name for s in STEPS]
    with results.open("a") as f:

        def write(row: dict[str, Any]) -> None:
            f.write(json.dumps({**row, "device": device, "date": today}) + "\n")
            f.flush()

        for step in (s for s in STEPS if s.name in wanted):
            scratch = tempfile.TemporaryDirectory(prefix=f"isoflop-gpu-{step.name}-")
            work = Path(scratch.name)
            limit = (TINY_SECONDS if args.tiny else step.seconds) * args.time_scale
            commands = step.commands(args.tiny, work)
            total_share = sum(c.share for c in commands)
            started = time.monotonic()
            status = "ok"
            hours: dict[str, float] = {}
            for c in commands:
                left = deadline - time.monotonic()
                if left < 5:
                    status = "timeout"
                    break
                timeout = min(left, limit * c.share / total_share)
                t0 = time.monotonic()
                print(f"gpu: {step.name}/{c.label}: up to {timeout:.0f} s", flush=True)
                text, err, code = run_command(c.args, timeout, env)
                rows = json_lines(text)
                for p in sorted(work.glob("*.jsonl")):  # a step that wrote only its own file
                    rows = rows or json_lines(p.read_text())
                    p.unlink()
                for row in rows:
                    write({"step": step.name, "candidate": c.label, **row})
                extra: dict[str, Any] = {}
                if step.name == "pytest":
                    extra["counts"] = pytest_counts(text)
                if c.label == "plan" and code == 0:
                    extra["estimated_gpu_hours"] = json.loads(text)["gpuHours"]
                if c.label == "run" and code == 0:  # one device, its whole wall time
                    extra["measured_gpu_hours"] = (time.monotonic() - t0) / 3600
                write({"step": step.name, "candidate": c.label, "command": c.args[1:],
                       "status": "ok" if code == 0 else "timeout" if code is None else "failed",
                       "exit_code": code, "seconds": round(time.monotonic() - t0, 1), **extra,
                       **({} if code == 0 else {"tail": (text + err)[-1500:]})})  # fmt: skip
                hours.update({k: v for k, v in extra.items() if k.endswith("_gpu_hours")})
                if code != 0 and status == "ok":
                    status = "timeout" if code is None else "failed"
            if len(hours) == 2:  # the estimate step: how far off the plan was
                hours["measured_over_estimated"] = (
                    hours["measured_gpu_hours"] / hours["estimated_gpu_hours"]
                )
            write({"step": step.name, "status": status,
                   "seconds": round(time.monotonic() - started, 1), **hours})  # fmt: skip
            print(f"gpu: {step.name}: {status}", flush=True)
            scratch.cleanup()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="every step on the CPU, tiny sizes")
    ap.add_argument("--deadline-s", type=float, default=780, help="the whole run's limit")
    ap.add_argument("--time-scale", type=float, default=1.0, help="scales each step's limit")
    ap.add_argument("--steps", nargs="*", choices=[s.name for s in STEPS], help="default: all")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    results = run_steps(args)
    print(f"gpu: results in {results}")


if __name__ == "__main__":
    main()
