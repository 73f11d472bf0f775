"""One `isoflop run` per run directory: an advisory lock the kernel drops when its holder dies.

`run.lock` in the run directory is locked (flock) for as long as a run works there and names its
holder (pid, host, since, command); a second run on the same directory is refused with a sentence
naming the holder. A runner killed with SIGKILL holds nothing any more: the next run takes the lock
and then deals with the trainers the dead one left (isoflop.local.backends.LocalBackend.recover).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO


class LockedError(Exception):
    """The run directory is in use; one sentence naming the holder."""


class RunLock:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "run.lock"
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = _describe(f.read())
            f.close()
            raise LockedError(
                f"{self.path.parent} is in use by another isoflop run ({holder}); wait for it "
                "to end, or stop it, before running here"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "command": " ".join(sys.argv),
                }
            )
        )
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "its holder did not say who it is"
