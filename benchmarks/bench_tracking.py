"""What MLflow tracking adds to a trial: the same tiny trial (a CPU process, every 5 steps logged)
with no tracker, into a real `mlflow server` (SQLite store) on 127.0.0.1, and into a tracker that
is down (a closed port), alternated `--repeats` times in one run.

One JSON line per variant: the median and spread of the trial process's wall seconds, of the
trainer's own training seconds, the ratio of each median to the untracked baseline's, and the
values the tracker logged and dropped.

    python -m benchmarks.bench_tracking --out benchmarks/results/tracking-DATE.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from isoflop_trainer.components.tracking import KEY_TAG
from tests.mlflow_server import MlflowServer
from tests.trainer.helpers import env, free_port, tiny, train_command


def once(root: Path, steps: int, uri: str | None, n: int) -> dict[str, Any]:
    tracking: dict[str, Any] = {}
    if uri is not None:
        tracking = {
            "tracking_uri": uri,
            "tracking_experiment": "bench-tracking",
            "tracking_tags": {KEY_TAG: f"bench/{root.name}/{n}"},
        }
    cfg = tiny(root / str(n), steps=steps, eval_samples=8, **tracking)
    start = time.perf_counter()
    subprocess.run(train_command(cfg), env=env(), check=True, capture_output=True)
    wall = time.perf_counter() - start
    result = json.loads((root / str(n) / "result.json").read_text())
    record = result.get("tracking") or {}
    return {
        "wall": wall,
        "train": result["train_seconds"],
        "logged": record.get("logged", 0),
        "dropped": record.get("dropped", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="append JSON lines here (default: stdout only)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    server = MlflowServer(root / "server").start()
    try:
        uris = {
            "none": None,
            "server": server.url,
            "down": f"http://127.0.0.1:{free_port()}",
        }
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in uris}
        for n in range(args.repeats):  # alternated: drift on the machine hits every variant
            for name, uri in uris.items():
                samples[name].append(once(root / name, args.steps, uri, n))
    finally:
        server.stop()
    base_wall = statistics.median(s["wall"] for s in samples["none"])
    base_train = statistics.median(s["train"] for s in samples["none"])
    lines = []
    for name, runs in samples.items():
        wall = [s["wall"] for s in runs]
        train = [s["train"] for s in runs]
        lines.append(
            {
                "benchmark": "tracking",
                "variant": name,
                "steps": args.steps,
                "log_every": 5,
                "repeats": args.repeats,
                "wall_s_median": round(statistics.median(wall), 3),
                "wall_s_min": round(min(wall), 3),
                "wall_s_max": round(max(wall), 3),
                "train_s_median": round(statistics.median(train), 3),
                "wall_ratio": round(statistics.median(wall) / base_wall, 3),
                "train_ratio": round(statistics.median(train) / base_train, 3),
                "logged_median": statistics.median(s["logged"] for s in runs),
                "dropped_median": statistics.median(s["dropped"] for s in runs),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            }
        )
    text = "\n".join(json.dumps(line) for line in lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
