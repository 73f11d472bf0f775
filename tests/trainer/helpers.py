"""Tiny trial configurations and process helpers for the trainer tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from isoflop_trainer.config import DiTConfig, TrainConfig

TINY_MODEL = dict(
    family="in-context",
    depth=2,
    width=32,
    heads=2,
    patch_size=4,
    latent_channels=3,
    latent_height=16,
    latent_width=16,
    text_length=8,
    text_dim=16,
)


def tiny(tmp: Path | None = None, **kw: Any) -> TrainConfig:
    given = kw.pop("model", {})  # overrides of the tiny DiT, or a whole model config
    model = given if not isinstance(given, dict) else DiTConfig(**{**TINY_MODEL, **given})
    base: dict[str, Any] = dict(
        model=model,
        steps=30,
        global_batch_size=8,
        learning_rate=2e-3,
        precision="fp32",
        eval_samples=32,
        log_every=5,
        termination_log=None,
        sweep="s",
        trial="t1",
        budget=1e9,
    )
    if tmp is not None:
        base["results"] = str(tmp / "result.json")
    base.update(kw)
    return TrainConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update({"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    out.update(extra)
    return out


def train_command(cfg: TrainConfig, procs: int = 1) -> list[str]:
    text = json.dumps(cfg.to_dict())
    if procs == 1:
        return [sys.executable, "-m", "isoflop_trainer.cli", "train", "--config-json", text]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(procs),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "-m",
        "isoflop_trainer.cli",
        "train",
        "--config-json",
        text,
    ]


def run_trial(cfg: TrainConfig, procs: int = 1, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        train_command(cfg, procs),
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert cfg.results is not None
    path = Path(cfg.results)
    assert path.exists(), out.stderr[-3000:]
    return out.returncode, json.loads(path.read_text())


def wait_for_file(proc: subprocess.Popen[str], path: Path, timeout: float) -> None:
    """Wait until `path` exists (a trainer's first checkpoint: training is under way), failing
    with the process's output if it exits first or the time runs out."""
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout or proc.stderr
            raise AssertionError(out.read() if out else f"exited {proc.returncode}")
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)
