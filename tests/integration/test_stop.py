"""Stopping a trial's processes: each gets one SIGTERM a round.

torchrun's agent that gets a second SIGTERM while it handles the first (it is then telling its
ranks to stop) breaks off its shutdown with a "Logging error" traceback in the trial's log; the
runner used to send it two, one to its process group and one to its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isoflop.local import backends
from isoflop.local.backends import TRIAL_ENV, stop_trials

# an agent (argv[2] == "agent") that starts a rank in a session of its own, as torchrun does; each
# says when its handler is in place and writes its pid once for every SIGTERM it handles
PROCESS = """
import os, signal, subprocess, sys, time
log = sys.argv[1]
def on_term(signum, frame):
    with open(log, "a") as f:
        f.write(f"term {os.getpid()}\\n")
    time.sleep(0.5)  # a second signal now runs this handler again
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
if sys.argv[2] == "agent":
    subprocess.Popen([sys.executable, "-c", sys.argv[3], log, "rank", ""], start_new_session=True)
with open(log, "a") as f:
    f.write(f"ready {os.getpid()}\\n")
while True:
    time.sleep(0.05)
"""


def test_an_agent_and_its_rank_each_get_one_sigterm_and_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "signals.txt"
    env = {**os.environ, TRIAL_ENV: str(tmp_path)}
    agent = subprocess.Popen(
        [sys.executable, "-c", PROCESS, str(log), "agent", PROCESS],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = log.read_text().split("\n") if log.exists() else []
        ready = {int(w.split()[1]) for w in lines if w.startswith("ready")}
        if len(ready) == 2:
            break
        time.sleep(0.05)
    assert len(ready) == 2
    assert agent.pid in ready
    (rank,) = ready - {agent.pid}

    sent: list[tuple[str, int, int]] = []
    kill, killpg = os.kill, os.killpg

    def record_kill(pid: int, sig: int) -> None:
        sent.append(("pid", pid, sig))
        kill(pid, sig)

    def record_killpg(pgid: int, sig: int) -> None:
        sent.append(("group", pgid, sig))
        killpg(pgid, sig)

    monkeypatch.setattr(backends.os, "kill", record_kill)
    monkeypatch.setattr(backends.os, "killpg", record_killpg)
    stop_trials([tmp_path], [agent], grace=30)

    assert agent.poll() == 143
    # the agent by its group (it leads it), the rank in a session of its own by its pid
    assert sent == [("group", agent.pid, signal.SIGTERM), ("pid", rank, signal.SIGTERM)]
    handled = sorted(int(w.split()[1]) for w in log.read_text().split("\n") if w.startswith("term"))
    assert handled == sorted([agent.pid, rank])
