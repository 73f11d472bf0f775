"""Which GPUs each local trial gets: whole devices from a pool, never shared between trials.

`isoflop run` finds the GPUs this process may use (`--gpus 0,1,2,3`, else CUDA_VISIBLE_DEVICES
when set, else every GPU nvidia-smi lists), gives each trial `spec.resources.gpusPerNode` of them
(one torchrun rank per GPU), and launches a trial only when its GPUs are free: at most
min(parallelism, GPUs // per trial) trials at once. A trial sees only its own devices
(CUDA_VISIBLE_DEVICES), so its ranks' `cuda:LOCAL_RANK` are its GPUs. With no GPU, trials run on the
CPU and parallelism alone limits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DeviceError(ValueError):
    """GPUs asked for that this machine cannot give; one sentence."""


def parse_gpus(text: str) -> tuple[str, ...]:
    """`--gpus`: "0,1,3" (device indices, as nvidia-smi numbers them), or "none" for the CPU."""
    text = text.strip()
    if text.lower() in ("", "none", "cpu"):
        return ()
    ids = [p.strip() for p in text.split(",")]
    bad = [p for p in ids if not p.isdigit()]
    if bad:
        raise DeviceError(
            f"--gpus {text!r}: {bad[0]!r} is not a GPU index (use e.g. 0,1,2 or none)"
        )
    out = tuple(str(int(p)) for p in ids)
    if len(set(out)) != len(out):
        raise DeviceError(f"--gpus {text!r} names a GPU twice")
    return out


def visible_devices(env: Mapping[str, str], detected: int) -> tuple[str, ...]:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES when set (empty: none; ids or
    UUIDs, kept as given), else the `detected` devices 0..n-1."""
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return tuple(d.strip() for d in given.split(",") if d.strip())
    return tuple(str(i) for i in range(detected))


class DevicePool:
    """Hands out `per_trial` devices to each trial and takes them back when it ends."""

    def __init__(self, devices: Sequence[str], per_trial: int) -> None:
        self.devices = tuple(devices)
        self.per_trial = per_trial if self.devices else 0
        if self.devices and per_trial > len(self.devices):
            raise DeviceError(
                f"spec.resources.gpusPerNode is {per_trial}, but this machine gives the run "
                f"{len(self.devices)} GPU{'s' if len(self.devices) != 1 else ''} "
                f"({','.join(self.devices)}): lower gpusPerNode, or name more with --gpus"
            )
        self.held: dict[str, tuple[str, ...]] = {}

    @property
    def free(self) -> list[str]:
        taken = {d for devs in self.held.values() for d in devs}
        return [d for d in self.devices if d not in taken]

    def free_slots(self) -> int | None:
        """How many more trials can start now; None: no limit (the CPU)."""
        if not self.per_trial:
            return None
        return len(self.free) // self.per_trial

    def acquire(self, owner: str) -> tuple[str, ...]:
        """The owner's devices (the same ones again if it holds some); () on the CPU."""
        if owner in self.held:
            return self.held[owner]
        if not self.per_trial:
            return ()
        free = self.free
        if len(free) < self.per_trial:
            raise DeviceError(
                f"no {self.per_trial} free GPU(s) for trial {owner!r}: "
                f"{', '.join(f'{o} holds {d}' for o, d in self.held.items())}"
            )
        self.held[owner] = tuple(free[: self.per_trial])
        return self.held[owner]

    def release(self, owner: str) -> None:
        self.held.pop(owner, None)
