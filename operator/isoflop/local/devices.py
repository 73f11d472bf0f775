"""Which GPUs each local trial gets: whole devices from a pool, or a share of one when packed.

`isoflop run` finds the GPUs this process may use (`--gpus 0,1,2,3`, else CUDA_VISIBLE_DEVICES
when set, else every GPU nvidia-smi lists), gives each trial `spec.resources.gpusPerNode` of them
(one torchrun rank per GPU), and launches a trial only when its GPUs are free: at most
min(parallelism, GPUs // per trial) trials at once. With `spec.resources.packing`, a small rung's
trial takes 1/k of one GPU (isoflop.sweep.packing) and up to k share it. A trial sees only its own
devices (CUDA_VISIBLE_DEVICES), so its ranks' `cuda:LOCAL_RANK` are its GPUs. With no GPU, trials
run on the CPU and parallelism alone limits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction


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
    """Hands out `per_trial` devices to each trial and takes them back when it ends. A packed
    trial (isoflop.sweep.packing: a small rung's) takes a share 1/k of one GPU instead: up to k of
    them share it, filling a GPU before opening the next."""

    def __init__(self, devices: Sequence[str], per_trial: int) -> None:
        self.devices = tuple(devices)
        self.per_trial = per_trial if self.devices else 0
        if self.devices and per_trial > len(self.devices):
            raise DeviceError(
                f"spec.resources.gpusPerNode is {per_trial}, but this machine gives the run "
                f"{len(self.devices)} GPU{'s' if len(self.devices) != 1 else ''} "
                f"({','.join(self.devices)}): lower gpusPerNode, or name more with --gpus"
            )
        self.held: dict[str, tuple[tuple[str, ...], Fraction]] = {}

    def load(self, device: str) -> Fraction:
        """The part of a device its trials hold: 1 for a whole trial, k/n for k of n packed."""
        return sum((share for devs, share in self.held.values() if device in devs), Fraction(0))

    @property
    def free(self) -> list[str]:
        return [d for d in self.devices if self.load(d) == 0]

    def fits(self, share: Fraction = Fraction(1)) -> bool:
        """Whether a trial taking `share` of a GPU (1: whole ones) can start now; always on the
        CPU, where parallelism alone limits trials."""
        if not self.per_trial:
            return True
        if share >= 1:
            return len(self.free) >= self.per_trial
        return any(self.load(d) + share <= 1 for d in self.devices)

    def acquire(self, owner: str, share: Fraction = Fraction(1)) -> tuple[str, ...]:
        """The owner's devices (the same ones again if it holds some); () on the CPU. A share
        below 1 goes to the fullest GPU it still fits on (packs fill before a new GPU opens)."""
        if owner in self.held:
            return self.held[owner][0]
        if not self.per_trial:
            return ()
        if share < 1:  # packed: a share of one GPU, whatever gpusPerNode says
            room = [d for d in self.devices if self.load(d) + share <= 1]
            if not room:
                raise DeviceError(f"no GPU has {share} free for trial {owner!r}")
            device = max(room, key=lambda d: (self.load(d), -self.devices.index(d)))
            self.held[owner] = ((device,), share)
            return (device,)
        free = self.free
        if len(free) < self.per_trial:
            raise DeviceError(
                f"no {self.per_trial} free GPU(s) for trial {owner!r}: "
                f"{', '.join(f'{o} holds {d}' for o, (d, _) in self.held.items())}"
            )
        self.held[owner] = (tuple(free[: self.per_trial]), Fraction(1))
        return self.held[owner][0]

    def release(self, owner: str) -> None:
        self.held.pop(owner, None)
