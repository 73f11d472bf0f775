"""GPU assignment for local trials, without a GPU: the pool, `--gpus`, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest

from isoflop.devices import DeviceError, DevicePool, parse_gpus, visible_devices


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
    assert pool.free_slots() == 2
    a, b = pool.acquire("a"), pool.acquire("b")
    assert (a, b) == (("0", "1"), ("2", "3"))
    assert pool.acquire("a") == a  # asked again: the same devices
    assert pool.free_slots() == 0  # one GPU left, two needed
    with pytest.raises(DeviceError, match="no 2 free GPU"):
        pool.acquire("c")
    pool.release("a")
    assert pool.acquire("c") == ("0", "1")
    pool.release("nobody")  # harmless


def test_no_gpu_means_the_cpu_and_no_device_limit() -> None:
    pool = DevicePool((), per_trial=1)
    assert pool.free_slots() is None
    assert pool.acquire("a") == ()
    assert DevicePool(("0",), per_trial=0).acquire("a") == ()  # gpusPerNode 0: a CPU trial


def test_a_trial_bigger_than_the_machine_is_refused_at_the_start() -> None:
    with pytest.raises(DeviceError) as err:
        DevicePool(("0", "1"), per_trial=4)
    assert str(err.value) == (
        "spec.resources.gpusPerNode is 4, but this machine gives the run 2 GPUs (0,1): "
        "lower gpusPerNode, or name more with --gpus"
    )
