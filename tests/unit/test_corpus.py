"""`isoflop validate` refuses every manifest of the invalid corpus (tests/corpus.py) in one
sentence naming what is wrong; nothing in it crashes it. tests/e2e/test_corpus.py gives the same
files to the real API server and the operator."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoflop import api, cli
from isoflop.sweep.check import runnable_plan
from tests.corpus import base_manifest, invalid_manifests, write_corpus


def test_the_corpus_is_large_and_its_base_is_valid() -> None:
    corpus = invalid_manifests()
    assert len(corpus) >= 250
    runnable_plan(api.parse_sweep(base_manifest()).spec)  # each manifest breaks a valid one
    kinds = {what.split(" ", 1)[-1] for what, _ in corpus}
    for kind in ("a numeric string", "in snake_case", "above its maximum", "an unknown key"):
        assert kind in kinds


def test_isoflop_validate_refuses_every_manifest_of_the_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_corpus(tmp_path)
    accepted = []
    for name, what in files.items():
        code = cli.main(["validate", "--no-data", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        if code == 0:
            accepted.append(what)
            continue
        assert code == 2, (what, err)
        assert err.startswith("isoflop: error: "), (what, err)
        assert "\n" not in err, (what, err)  # one sentence, no traceback
    assert accepted == []


@pytest.mark.parametrize(
    ("what", "says"),
    [
        ("name with a dot", "metadata.name: must be a DNS label"),
        ("spec.training.globalBatchSize a numeric string", "spec.training.globalBatchSize"),
        ("spec.training.compile a string", "spec.training.compile: Input should be a valid bool"),
        ("spec.training.globalBatchSize in snake_case", "global_batch_size: is not a known field"),
        ("affinity nested 1000 deep", "nests too deep"),
        ("affinity of unknown shape", "spec.resources.affinity.gpuAffinity: is not a known"),
        ("budgets too close to tell apart", "spec.budgets: two budgets are too close"),
        ("mlpRatio 1e-9", "spec.model: the ladder cannot be built: mlp_ratio"),
        ("budgets too small for any trial", "spec.budgets: no trial fits any budget"),
    ],
)
def test_what_validate_says(
    what: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {v: k for k, v in write_corpus(tmp_path).items()}
    assert cli.main(["validate", "--no-data", str(tmp_path / files[what])]) == 2
    assert says in capsys.readouterr().err


def test_a_whole_number_is_an_integer_as_json_has_it() -> None:
    manifest = base_manifest()
    manifest["spec"]["training"]["globalBatchSize"] = 16.0
    manifest["spec"]["data"]["latentShape"] = [3.0, 16, 16]
    spec = api.parse_sweep(manifest).spec
    assert spec.training.global_batch_size == 16
    assert isinstance(spec.training.global_batch_size, int)
    assert spec.data.latent_shape == [3, 16, 16]


def test_the_child_corpus_passes_the_offline_rules() -> None:
    """What only the API server's dry run refuses (tests/e2e/test_corpus.py): the offline rules
    take it, so the operator's dry run is what stops it."""
    from tests.corpus import child_corpus

    corpus = child_corpus()
    assert len(corpus) >= 7
    for _, manifest in corpus:
        runnable_plan(api.parse_sweep(manifest).spec)
