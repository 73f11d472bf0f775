"""The model check on this machine: a class family's rungs measured in the trainer's environment.

`isoflop run`, `plan` and `validate` run `isoflop-train check-model` as a subprocess of the same
Python (the operator never imports torch, diffusers or a user's family), and plan from its
measures. A run keeps the result in its directory, so the check runs once per sweep: the family and
its arguments are immutable, and a changed ladder (another request) checks again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.sweep.families import class_configs, measured, rung_field
from isoflop_trainer.data.store import atomic_write
from isoflop_trainer.families import Measure

CACHE = "model-check.json"
TIMEOUT_S = 600.0


def model_checked(
    spec: api.ScalingSweepSpec, cache: Path | None = None, say: Any = None
) -> api.ScalingSweepSpec:
    """The spec with its class family's measures attached (a built-in family's unchanged), or a
    ManifestError naming the rung the class refused and its sentence."""
    if not spec.model.is_class_family:
        return spec
    rungs = class_configs(spec)
    requests = {name: cfg.request() for name, cfg in rungs}
    verdict = cached(cache, requests)
    if verdict is None:
        start = time.perf_counter()
        verdict = run_check(requests)
        if say is not None:
            say(
                f"model check: {len(rungs)} rungs of {spec.model.transformer} built and counted "
                f"in {time.perf_counter() - start:.1f} s"
            )
        if cache is not None and verdict.get("status") == "succeeded":
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps({"requests": requests, "verdict": verdict}).encode())
    results = verdict.get("rungs", {})
    measures: dict[str, Measure] = {}
    for name, cfg in rungs:
        got = results.get(name, {})
        if "error" in got or "measure" not in got:
            why = got.get("error", "the model check did not measure it")
            raise api.ManifestError(f"{rung_field(spec, name)} ('{name}'): {why}")
        measures[cfg.digest()] = Measure.from_dict(got["measure"])
    return measured(spec, measures)


def cached(cache: Path | None, requests: dict[str, Any]) -> dict[str, Any] | None:
    """An earlier check's verdict for exactly these rungs, if the run directory has one."""
    if cache is None or not cache.is_file():
        return None
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None  # unreadable: checked again and rewritten
    if not isinstance(saved, dict) or saved.get("requests") != requests:
        return None
    verdict = saved.get("verdict")
    return verdict if isinstance(verdict, dict) else None


def run_check(requests: dict[str, Any]) -> dict[str, Any]:
    """`isoflop-train check-model` in this Python: its verdict, or a ManifestError saying why the
    check could not run (the trainer or torch missing, the check crashed)."""
    cmd = [sys.executable, "-m", "isoflop_trainer.cli", "check-model", "-"]
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise api.ManifestError(
            f"spec.model: the model check did not finish in {TIMEOUT_S:g} s"
        ) from None
    lines = proc.stdout.strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else None
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or "rungs" not in verdict:
        said = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        why = said[-1] if said else f"it exited with status {proc.returncode}"
        raise api.ManifestError(
            f"spec.model: the model check could not run in this environment ({sys.executable}): "
            f"{why}"
        )
    return verdict
