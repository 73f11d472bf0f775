"""torch.compile's caches for one model shape, kept in a folder or on S3 between trials.

Every trial of a sweep compiles its model afresh: on a GPU that is 30-70 s per process, and a
rung is trained once per budget, with the same shapes each time. Inductor already caches its
work (generated kernels, Triton binaries, autotuning results, AOT-autograd graphs) in the folder
TORCHINDUCTOR_CACHE_DIR. On a cluster that folder dies with the pod, so the trainer keeps a
tarball of it per model shape next to the checkpoints. The first trial of a shape saves it after
its first step; the later ones unpack it before compiling. Inductor's own keys decide what
is reused (they cover torch, Triton, the GPU and the graph), so a stale or foreign
tarball costs only the download.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.store import Store

ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_name(cfg: TrainConfig, world: int, device: str) -> str:
    """The tarball of one compiled shape: model, per-process micro-batch, precision, world size,
    sharding, torch version and device."""
    per_rank = cfg.global_batch_size // world
    identity: dict[str, Any] = {
        "model": asdict(cfg.model),
        "micro_batch": min(cfg.micro_batch_size or per_rank, per_rank),
        "precision": cfg.precision,
        "low_precision_residual": cfg.low_precision_residual,
        "world": world,
        "fsdp": cfg.fsdp,
        "torch": torch.__version__,
        "device": device,
    }
    if cfg.compile_mode is not None:  # (unset: the names caches had before modes existed)
        identity["compile_mode"] = cfg.compile_mode
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    m = cfg.model
    return f"{m.family}-d{m.depth}-w{m.width}-{digest}.tar.gz"


class CompileCache:
    """Points inductor at a private folder, filled from the store's tarball when there is one."""

    def __init__(self, uri: str, name: str) -> None:
        self.store, self.name = Store(uri), name
        self.folder = tempfile.mkdtemp(prefix="isoflop-inductor-")
        self.previous = os.environ.get(ENV)
        self.hit = self.saved = False

    @property
    def status(self) -> str:
        """hit (unpacked), saved (the first of its shape) or miss (compiled cold, not saved)."""
        return "hit" if self.hit else "saved" if self.saved else "miss"

    def restore(self) -> bool:
        """Before the first compilation: use the folder, filled from the tarball if there is a
        good one. A cache never fails a trial: an unreadable tarball means compiling cold."""
        os.environ[ENV] = self.folder
        try:
            if not self.store.exists(self.name):
                return False
            with tarfile.open(fileobj=io.BytesIO(self.store.read(self.name)), mode="r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4+, 3.10.12+
                    tar.extractall(self.folder, filter="data")
                else:  # older: refuse paths that leave the folder, as the data filter would
                    for member in tar.getmembers():
                        if member.name.startswith("/") or ".." in Path(member.name).parts:
                            raise ValueError(f"unsafe path {member.name!r}")
                    tar.extractall(self.folder)  # members checked above
        except Exception as err:  # corrupt, truncated, unreadable: compile cold, save anew
            print(f"isoflop: compile cache {self.name} not used: {err}", file=sys.stderr)
            shutil.rmtree(self.folder, ignore_errors=True)
            os.makedirs(self.folder, exist_ok=True)
            return False
        self.hit = True
        return True

    def save(self) -> bool:
        """After the first step has compiled everything: the folder as one tarball (atomic).
        A failure (no write access, say) is reported and the trial goes on."""
        buf = io.BytesIO()
        try:
            with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
                for entry in sorted(os.listdir(self.folder)):
                    if entry != "locks":  # inductor's lock files: nothing to reuse
                        tar.add(os.path.join(self.folder, entry), arcname=entry)
            self.store.write(self.name, buf.getvalue())
        except Exception as err:
            print(f"isoflop: compile cache {self.name} not saved: {err}", file=sys.stderr)
            return False
        self.saved = True
        return True

    def close(self) -> None:
        """Give the process its previous cache folder back (the files stay until tmp is cleaned)."""
        if self.previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self.previous


def inductor_cache_misses() -> int | None:
    """Inductor's FX-graph cache misses so far in this process (None: not recorded)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["inductor"].get("fxgraph_cache_miss", 0))
