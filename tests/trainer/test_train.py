"""The training loop: it learns, is deterministic across world sizes and restarts, fails cleanly."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from isoflop_trainer.components.compile_cache import ENV, CompileCache, cache_name
from isoflop_trainer.components.step import step_seed
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.datasets import FORMAT, Batch, ProceduralShapes, Shards, write_shards
from isoflop_trainer.evaluation.loss import validation_loss
from isoflop_trainer.models.dit import DiT
from isoflop_trainer.models.flow import flow_loss
from isoflop_trainer.train import train
from tests.trainer.helpers import (
    env,
    free_port,
    run_trial,
    tiny,
    train_command,
    wait_for_file,
)


def test_a_tiny_trial_lowers_validation_loss(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, steps=150, eval_samples=64)
    before = validation_loss(DiT(cfg.model), ProceduralShapes((3, 16, 16), 8, 16, split=1), 64)
    result, code = train(cfg)
    assert code == 0
    assert result["status"] == "succeeded"
    assert result["eval_loss"] < 0.6 * before
    assert result["losses"][-1] < result["losses"][0]
    assert result["samples"] == 150 * 8
    assert result["tokens"] == 150 * 8 * cfg.model.tokens_per_sample
    assert result["flops"] == 150 * 8 * cfg.model.flops_per_sample().total
    assert result["params"] == cfg.model.params().total
    assert json.loads(Path(cfg.results or "").read_text())["eval_loss"] == result["eval_loss"]


def test_the_largest_seed_a_manifest_allows_trains(tmp_path: Path) -> None:
    """A seed of 2^53 - 1 overflowed the step generator's 64 bits; small seeds are unchanged."""
    assert step_seed(7, 3) == 7 * 1_000_003 + 3
    assert step_seed(2**53 - 1, 5) < 2**64
    result, code = train(tiny(tmp_path, steps=3, eval_samples=8, seed=2**53 - 1))
    assert code == 0, result.get("error")
    assert result["status"] == "succeeded"


def test_gradient_accumulation_matches_the_full_batch() -> None:
    full, _ = train(tiny(steps=8))
    accumulated, _ = train(tiny(steps=8, micro_batch_size=3))  # 8 = 3 + 3 + 2
    assert accumulated["losses"] == pytest.approx(full["losses"], rel=1e-4)


def test_two_gloo_processes_match_one_at_the_same_global_batch(tmp_path: Path) -> None:
    one_code, one = run_trial(tiny(tmp_path / "one", steps=12))
    two_code, two = run_trial(tiny(tmp_path / "two", steps=12), procs=2)
    assert (one_code, two_code) == (0, 0)
    assert two["status"] == "succeeded"
    assert two["samples"] == one["samples"]
    assert two["losses"] == pytest.approx(one["losses"], rel=2e-4)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=2e-3)


def test_sigterm_checkpoints_and_a_restart_resumes_exactly(tmp_path: Path) -> None:
    steps = 1500
    reference = tiny(tmp_path / "ref", steps=steps, eval_samples=8)
    _, uninterrupted = run_trial(reference)
    cfg = tiny(
        tmp_path / "run",
        steps=steps,
        eval_samples=8,
        checkpoint=str(tmp_path / "ckpt"),
        checkpoint_every=100,
    )
    proc = subprocess.Popen(train_command(cfg), env=env(), stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, tmp_path / "ckpt" / "checkpoint.pt", 120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143  # preempted: the Job retries
    stopped = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stopped["status"] == "preempted"
    assert 0 < stopped["step"] < steps
    code, resumed = run_trial(cfg)
    assert code == 0
    assert resumed["losses"] == uninterrupted["losses"]  # the same sequence, bit for bit
    assert resumed["eval_loss"] == uninterrupted["eval_loss"]


def test_a_nan_run_fails_cleanly(tmp_path: Path) -> None:
    result, code = train(tiny(tmp_path, steps=200, learning_rate=1e6, grad_clip=0.0))
    assert code == 65  # permanent: training is deterministic, a retry would fail the same way
    assert result["status"] == "failed"
    assert result["permanent"] is True
    assert re.match(
        r"training (loss became (nan|inf) at step \d+|diverged at step \d+)", result["error"]
    )
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["error"] == result["error"]


class OneNanSample:
    """A procedural dataset whose sample `row` has a NaN latent (a corrupt record in a shard)."""

    def __init__(self, row: int) -> None:
        self.source, self.row = ProceduralShapes((3, 16, 16), 8, 16), row
        self.latent_shape, self.text_length, self.text_dim = (3, 16, 16), 8, 16

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, indices: list[int]) -> Batch:
        b = self.source.batch(indices)
        for j, i in enumerate(indices):
            if i == self.row:
                b.latents[j, 0, 0, 0] = math.nan
        return b


def test_a_nan_between_reads_fails_at_its_own_step_and_is_never_checkpointed(
    tmp_path: Path,
) -> None:
    """Losses are read back from the device every few steps, not every step; a NaN in between
    must still be reported at the step it happened, before any checkpoint could hold it."""
    shards = tmp_path / "shards"
    # 64 samples in one shard: steps 0-7 of batch 8 are its first epoch; the bad row is read
    # at step 7, between the read-backs at the ends of steps 5 and 9 (log and checkpoint every 5)
    bad_row = Shards(str(_empty_index(shards, 64)))._locate(7 * 8 + 3)[1]
    write_shards(str(shards), OneNanSample(bad_row), samples=64, shard_size=64)
    cfg = tiny(
        tmp_path,
        steps=12,
        data=str(shards),
        validation_data="procedural://shapes",
        checkpoint=str(tmp_path / "ckpt"),
        checkpoint_every=5,
    )
    result, code = train(cfg)
    assert code == 65  # permanent: a retry would meet the same NaN
    assert result["error"] == "training loss became nan at step 7"
    saved = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=False)
    assert saved["state"]["step"] == 5
    assert len(saved["state"]["losses"]) == 5
    assert all(torch.isfinite(w).all() for w in saved["model"].values())


def _empty_index(folder: Path, samples: int) -> Path:
    """A one-shard index, for working out the shuffled order before the shard is written."""
    folder.mkdir(parents=True)
    index = {"format": FORMAT, "latent_shape": [3, 16, 16], "text_length": 8, "text_dim": 16}
    index["shards"] = [{"name": "shard-00000.npz", "samples": samples}]
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_the_loop_reads_the_device_only_at_log_and_checkpoint_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of a device value waits for the GPU queue to drain; one read per step would leave
    the GPU idle every step. Count the loop's reads (tensor -> Python)."""
    reads: list[str] = []
    loop = tuple(  # the modules of the training loop (not evaluation, which runs after it)
        os.path.join("isoflop_trainer", *m.split("/"))
        for m in ("trainer.py", "components/step.py", "components/losses.py",
                  "components/preemption.py", "components/throughput.py")
    )  # fmt: skip
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: object, _f: Any = original, _n: str = name) -> object:
            caller = sys._getframe(1).f_code.co_filename
            if caller.endswith(loop):
                reads.append(_n)
            return _f(self, *a)

        monkeypatch.setattr(torch.Tensor, name, counted)
    result, code = train(tiny(steps=23, log_every=10, eval_samples=0))
    assert code == 0
    assert len(result["losses"]) == 23
    # after steps 0, 10, 20 (logged) and 22 (the last), one transfer each
    assert reads == ["tolist"] * 4


def test_reported_throughput_leaves_out_the_warm_up_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile makes a process's first step take tens of seconds on a GPU; a short trial's
    tokens/s and MFU must not be averaged over it. Here the first step takes an extra second."""
    from isoflop_trainer.components import step as step_module

    calls = 0

    def slow_first(*args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            time.sleep(1.0)
        return flow_loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "flow_loss", slow_first)
    cfg = tiny(steps=21, log_every=10, eval_samples=0)
    result, code = train(cfg)
    assert code == 0
    assert result["train_seconds"] >= 1.0  # the whole run, warm-up included
    per_sample = cfg.model.tokens_per_sample
    steady_seconds = 20 * 8 * per_sample / result["tokens_per_second"]  # steps 1-20
    assert steady_seconds < result["train_seconds"] - 0.9


def test_trials_of_one_shape_share_compiled_kernels(tmp_path: Path) -> None:
    """The first trial of a shape saves torch.compile's caches after its first step; a later
    trial of the same shape (another budget: other steps, another seed) compiles nothing anew."""
    store = tmp_path / "compile-cache"
    first = tiny(tmp_path / "a", steps=3, eval_samples=8, compile=True, compile_cache=str(store))
    code, a = run_trial(first)
    assert code == 0, a.get("error")
    assert a["compile_cache"] == "saved"
    assert a["compile_cache_misses"] > 0  # compiled from scratch, in a folder of its own
    (tarball,) = store.iterdir()
    assert tarball.name.startswith("in-context-d2-w32-")
    assert tarball.name.endswith(".tar.gz")
    later = tiny(
        tmp_path / "b", steps=5, seed=1, eval_samples=8, compile=True, compile_cache=str(store)
    )
    code, b = run_trial(later)
    assert code == 0, b.get("error")
    assert b["compile_cache"] == "hit"
    assert b["compile_cache_misses"] == 0
    assert [p.name for p in store.iterdir()] == [tarball.name]
    # what the key covers: another micro-batch, rung, world size or precision is another shape
    name = cache_name(first, 1, "cpu")
    assert name == tarball.name
    assert cache_name(later, 1, "cpu") == name
    assert cache_name(tiny(global_batch_size=16), 1, "cpu") != name
    assert cache_name(tiny(model={"depth": 3}), 1, "cpu") != name
    assert cache_name(first, 2, "cpu") != name
    assert cache_name(tiny(low_precision_residual=True), 1, "cpu") != name
    assert cache_name(tiny(compile_mode="reduce-overhead"), 1, "cpu") != name


def test_the_compile_mode_reaches_torch_compile_and_nonsense_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPU sibling of test_bf16_compiled_trial_on_gpu's reduce-overhead case: the mode the config
    names is the one torch.compile gets (the model itself is trained eagerly here)."""
    modes: list[str | None] = []

    def record(model: Any, mode: str | None = None, **_: Any) -> Any:
        modes.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", record)
    result, code = train(tiny(steps=3, eval_samples=0, compile=True, compile_mode="max-autotune"))
    assert code == 0, result.get("error")
    assert modes == ["max-autotune"]
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        tiny(compile_mode="fast")


def test_a_broken_compile_cache_never_fails_a_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated tarball means compiling cold (and saving a good one); a store that can't be
    written is reported. The process's own cache folder comes back afterwards."""
    before = os.environ.get(ENV)
    store = tmp_path / "store"
    store.mkdir()
    (store / "shape.tar.gz").write_bytes(b"\x1f\x8b truncated")
    cache = CompileCache(str(store), "shape.tar.gz")
    assert cache.restore() is False
    assert os.environ[ENV] == cache.folder
    assert "compile cache shape.tar.gz not used" in capsys.readouterr().err
    Path(cache.folder, "fxgraph").mkdir()
    Path(cache.folder, "fxgraph", "entry").write_text("kernel")
    Path(cache.folder, "locks").mkdir()
    assert cache.save() is True
    cache.close()
    assert os.environ.get(ENV) == before
    again = CompileCache(str(store), "shape.tar.gz")
    assert again.restore() is True
    assert Path(again.folder, "fxgraph", "entry").read_text() == "kernel"
    assert not Path(again.folder, "locks").exists()
    again.close()
    (tmp_path / "file").write_text("")
    unwritable = CompileCache(str(tmp_path / "file"), "shape.tar.gz")  # a file, not a folder
    assert unwritable.restore() is False
    assert unwritable.save() is False
    assert "compile cache shape.tar.gz not saved" in capsys.readouterr().err
    unwritable.close()


def test_metrics_endpoint_and_termination_message_carry_the_final_values(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "termination-log"
    log.touch()  # Kubernetes mounts this file; the trainer writes it only when it exists
    cfg = tiny(
        tmp_path,
        steps=20,
        metrics_port=port,
        metrics_address="127.0.0.1",
        metrics_linger_seconds=20,
        termination_log=str(log),
    )
    proc = subprocess.Popen(train_command(cfg), env=env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline, text = time.time() + 120, ""
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                text = (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    .read()
                    .decode()
                )
            except OSError:
                text = ""
            if re.search(r"^isoflop_done\{.*\} 1\.0$", text, re.M):
                break
            time.sleep(0.2)
        result = json.loads((tmp_path / "result.json").read_text())
        labels = 'budget="1e+09",sweep="s",trial="t1"'
        assert f"isoflop_eval_loss{{{labels}}} {result['eval_loss']!r}" in text
        assert f"isoflop_step{{{labels}}} 20.0" in text
        assert f"isoflop_samples{{{labels}}} 160.0" in text
        message = log.read_text()
        assert len(message.encode()) <= 4096
        compact = json.loads(message)
        assert compact["eval_loss"] == result["eval_loss"]
        assert "losses" not in compact  # the long curve stays in the results file
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_data_and_checkpoints_through_a_real_s3_endpoint(tmp_path: Path, bucket: str) -> None:
    write_shards(
        f"s3://{bucket}/train", ProceduralShapes((3, 16, 16), 8, 16), samples=64, shard_size=32
    )
    cfg = tiny(
        tmp_path,
        steps=10,
        data=f"s3://{bucket}/train",
        validation_data="procedural://shapes",
        checkpoint=f"s3://{bucket}/ckpt/t1",
    )
    result, code = train(cfg)
    assert code == 0
    assert result["epochs"] == pytest.approx(10 * 8 / 64)
    import boto3

    head = boto3.client("s3").head_object(Bucket=bucket, Key="ckpt/t1/checkpoint.pt")
    assert head["ContentLength"] > 10_000
    again, code = train(cfg)  # finished trial: resumes at the end, trains nothing
    assert code == 0
    assert again["losses"] == result["losses"]
    assert again["train_seconds"] == pytest.approx(result["train_seconds"])


def test_bad_data_source_is_a_clear_failure_that_no_retry_repeats(tmp_path: Path) -> None:
    result, code = train(tiny(tmp_path, data=str(tmp_path / "no-such-shards")))
    assert code == 65  # EX_DATAERR: the Job's podFailurePolicy fails it at once
    assert result["permanent"] is True
    assert result["error"].startswith(f"no shard index at {tmp_path / 'no-such-shards'}")


def test_the_ema_is_evaluated_and_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, _ = train(tiny(steps=10))
    averaged, _ = train(tiny(steps=10, ema_decay=0.9))
    assert averaged["losses"] == plain["losses"]  # the average never feeds back into training
    assert averaged["eval_loss"] != plain["eval_loss"]  # but it is what is evaluated
    ckpt = str(tmp_path / "ckpt")
    _, code = train(tiny(steps=5, ema_decay=0.9, checkpoint=ckpt))
    assert code == 0
    saved = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=False)
    assert set(saved) >= {"ema", "scaler"}
    capsys.readouterr()
    resumed, code = train(tiny(steps=10, ema_decay=0.9, checkpoint=ckpt))
    assert code == 0
    assert resumed["eval_loss"] == averaged["eval_loss"]  # the average resumed, not restarted
    assert re.search(
        rf"trial \S+ resumed from step 5 of 10 \({re.escape(ckpt)}\)", capsys.readouterr().out
    )
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        tiny(ema_decay=1.0)


def test_config_round_trips_and_validates() -> None:
    cfg = tiny(steps=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown training settings: colour"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="steps must be at least 1"):
        tiny(steps=0)
    with pytest.raises(ValueError, match="log_every must be at least 1, got 0"):
        tiny(log_every=0)
    with pytest.raises(ValueError, match="checkpoint_every must be 0 or more, got -5"):
        tiny(checkpoint_every=-5)
    wsd = tiny(steps=100, warmup_steps=10, schedule="wsd", decay_fraction=0.2)
    assert [wsd.lr_multiplier(s) for s in (0, 9, 10, 79, 80, 99)] == [0.1, 1.0, 1.0, 1.0, 0.95, 0.0]
    cos = tiny(steps=100, schedule="cosine")
    assert cos.lr_multiplier(0) == 1.0
    assert cos.lr_multiplier(50) == pytest.approx(0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"low_precision_residual": True},
        # CUDA graphs for small rungs, with gradient accumulation over micro-batches
        {"compile_mode": "reduce-overhead", "micro_batch_size": 4},
    ],
)
def test_bf16_compiled_trial_on_gpu(tmp_path: Path, settings: dict[str, Any]) -> None:
    """GPU sibling of test_a_tiny_trial_lowers_validation_loss: bf16 autocast, torch.compile,
    with the residual stream in fp32 or bf16 (CPU sibling: test_model's residual test), and
    compiled with CUDA graphs (CPU sibling: test_the_compile_mode_reaches_torch_compile...)."""
    cfg = tiny(tmp_path, steps=150, eval_samples=64, precision="bf16", compile=True, **settings)
    val = ProceduralShapes((3, 16, 16), 8, 16, split=1)
    before = validation_loss(DiT(cfg.model).cuda(), val, 64, device="cuda")
    result, code = train(cfg)
    assert code == 0, result.get("error")
    assert result["status"] == "succeeded"
    assert result["eval_loss"] < 0.6 * before
    assert result["mfu"] is not None
    assert 0 < result["mfu"] < 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_trains_with_loss_scaling_on_gpu(tmp_path: Path) -> None:
    """GPU sibling of test_the_ema_is_evaluated_and_survives_a_restart (the scaler's state is
    checkpointed on CPU too): fp16 autocast with a gradient scaler lowers the loss."""
    cfg = tiny(tmp_path, steps=150, eval_samples=64, precision="fp16", checkpoint=str(tmp_path))
    val = ProceduralShapes((3, 16, 16), 8, 16, split=1)
    before = validation_loss(DiT(cfg.model).cuda(), val, 64, device="cuda")
    result, code = train(cfg)
    assert code == 0, result.get("error")
    assert result["eval_loss"] < 0.6 * before
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["scaler"]["scale"] > 0  # a live scaler, not a disabled one


def test_fsdp_matches_one_process_and_its_checkpoint_resumes_anywhere(tmp_path: Path) -> None:
    _, one = run_trial(tiny(tmp_path / "one", steps=10))
    sharded = tiny(tmp_path / "fsdp", steps=6, fsdp=True, checkpoint=str(tmp_path / "ckpt"))
    code, fsdp = run_trial(sharded, procs=2)
    assert code == 0, fsdp.get("error")
    assert fsdp["losses"] == pytest.approx(one["losses"][:6], rel=2e-4)
    # the full-state checkpoint of 2 sharded processes resumes in 1 process
    code, resumed = run_trial(
        tiny(tmp_path / "resumed", steps=10, checkpoint=str(tmp_path / "ckpt"))
    )
    assert code == 0
    assert resumed["losses"] == pytest.approx(one["losses"], rel=2e-4)


def test_failures_that_recur_are_permanent_and_what_the_machine_did_is_not() -> None:
    from isoflop_trainer.components.failures import DataError, TrialFailed, permanent

    assert permanent(TrialFailed("training loss became nan at step 3"), stepped=True)
    assert permanent(DataError("no shard index"), stepped=False)
    oom = torch.OutOfMemoryError("CUDA out of memory")
    assert permanent(oom, stepped=False)  # the same batch at the first step: every time
    assert not permanent(oom, stepped=True)  # after steps ran: fragmentation, a neighbour
    assert not permanent(torch.distributed.DistError("store timeout"), stepped=False)
    assert not permanent(RuntimeError("NCCL watchdog thread terminated"), stepped=True)
    assert not permanent(ConnectionResetError(), stepped=False)
    shapes = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)")
    assert permanent(shapes, stepped=False)  # before any step: the model or config itself
    assert not permanent(RuntimeError("an unknown fault"), stepped=True)
    assert permanent(ValueError("a config the trainer cannot take"), stepped=True)
