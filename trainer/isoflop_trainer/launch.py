"""`isoflop-torchrun`: torchrun, with the trainer's exit code as its own and no traceback on a stop.

torchrun exits 1 whatever its ranks exit with and prints an "agent got signal" traceback when it is
stopped, so neither Kubernetes nor the local runner could see what happened:

- a rank's exit code becomes the launcher's (the first rank to fail, as torchrun reports it): 65 a
  permanent failure (`FAIL_ON_PERMANENT_ERROR` in the Job's podFailurePolicy), 143 preempted after a
  checkpoint; a rank killed by signal S exits 128+S, as a shell reports it;
- SIGTERM or SIGINT to the launcher (a pod's eviction, the runner's cancel, Ctrl-C) is passed to the
  ranks by torchrun, which wait for their checkpoint; the launcher then says so in one line and
  exits 128+S, the code the ranks' own "preempted" exit uses.

Arguments are torchrun's (and its PET_* environment variables).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

SIGNAL_EXIT_BASE = 128  # a process stopped by signal S exits 128+S (POSIX shells, Kubernetes)


def exit_code(rank_exit: int) -> int:
    """A rank's exit code as the launcher's: a signal (torch reports -S) as 128+S, anything out of
    the range a process can exit with as 1."""
    if rank_exit < 0:
        return SIGNAL_EXIT_BASE + (-rank_exit)
    return rank_exit if 0 < rank_exit < 256 else 1


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    try:
        run(args)  # type: ignore[no-untyped-call]
    except SignalException as err:
        name = signal.Signals(err.sigval).name
        print(
            f"isoflop-torchrun: stopped by {name}; the ranks were told to checkpoint and stop",
            file=sys.stderr,
        )
        return SIGNAL_EXIT_BASE + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = exit_code(failure.exitcode)
        print(
            f"isoflop-torchrun: rank {rank} exited with {failure.exitcode}"
            f"{f' ({failure.signal_name()})' if failure.exitcode < 0 else ''}; exiting {code}",
            file=sys.stderr,
        )
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
