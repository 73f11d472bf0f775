"""GPU assignment for local trials, without a GPU: the pool, `--gpus`, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from fractions import Fraction

import pytest

from isoflop.local.devices import DeviceError, DevicePool, parse_gpus, visible_devices


def test_gpus_flag_parses_indices_and_refuses_nonsense_in_a_sentence() -> None:
    assert parse_gpus("0,1, 3") == ("0", "1", "3")
    assert parse_gpus("none") == ()
    assert parse_gpus("") == ()
    with pytest.raises(DeviceError, match=r"'a' is not a GPU index"):
        parse_gpus("0,a")
    with pytest.raises(DeviceError, match="names a GPU twice"):
        parse_gpus("1,01")


def test_cuda_visible_devices_wins_over_what_nvidia_smi_finds() -> None:
    assert visible_devices({}, 4) == ("0", "1", "2", "3")
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}, 4) == ("2", "3")
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}, 4) == ()  # hidden: the CPU
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-5f0e,GPU-77aa"}, 0) == (
        "GPU-5f0e",
        "GPU-77aa",
    )


def test_the_pool_hands_out_whole_devices_and_never_the_same_one_twice() -> None:
    pool = DevicePool(("0", "1", "2", "3", "4"), per_trial=2)
    assert pool.fits()
    a, b = pool.acquire("a"), pool.acquire("b")
    assert (a, b) == (("0", "1"), ("2", "3"))
    assert pool.acquire("a") == a  # asked again: the same devices
    assert not pool.fits()  # one GPU left, two needed
    with pytest.raises(DeviceError, match="no 2 free GPU"):
        pool.acquire("c")
    pool.release("a")
    assert pool.acquire("c") == ("0", "1")
    pool.release("nobody")  # harmless


def test_no_gpu_means_the_cpu_and_no_device_limit() -> None:
    pool = DevicePool((), per_trial=1)
    assert pool.fits()
    assert pool.fits(Fraction(1, 4))
    assert pool.acquire("a") == ()
    assert DevicePool(("0",), per_trial=0).acquire("a") == ()  # gpusPerNode 0: a CPU trial


def test_a_trial_bigger_than_the_machine_is_refused_at_the_start() -> None:
    with pytest.raises(DeviceError) as err:
        DevicePool(("0", "1"), per_trial=4)
    assert str(err.value) == (
        "spec.resources.gpusPerNode is 4, but this machine gives the run 2 GPUs (0,1): "
        "lower gpusPerNode, or name more with --gpus"
    )


def test_packed_trials_share_a_gpu_up_to_its_whole_and_fill_one_before_the_next() -> None:
    pool = DevicePool(("0", "1"), per_trial=1)
    quarter, half = Fraction(1, 4), Fraction(1, 2)
    got = [pool.acquire(f"q{i}", quarter) for i in range(3)]
    assert got == [("0",), ("0",), ("0",)]  # the fullest GPU that still fits: packs fill first
    assert pool.load("0") == Fraction(3, 4)
    assert pool.acquire("h", half) == ("1",)  # 3/4 + 1/2 would overfill GPU 0
    assert pool.acquire("q3", quarter) == ("0",)
    assert pool.free == []
    assert not pool.fits()  # no whole GPU for an unpacked trial
    assert pool.fits(half)
    assert not pool.fits(Fraction(3, 4))
    with pytest.raises(DeviceError, match="no GPU has 3/4 free"):
        pool.acquire("x", Fraction(3, 4))
    for i in range(4):
        pool.release(f"q{i}")
    assert pool.load("0") == 0
    assert pool.fits()
    assert pool.acquire("whole") == ("0",)
    # a packed trial of a sweep whose trials take two GPUs: a share of one GPU
    two = DevicePool(("0", "1", "2"), per_trial=2)
    assert two.acquire("big") == ("0", "1")
    assert two.acquire("small", half) == ("2",)
    assert not two.fits()
    assert two.fits(half)
