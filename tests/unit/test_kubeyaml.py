"""A manifest file read as kubectl reads it (isoflop.api.kubeyaml): go-yaml v2's scalars, several
documents, v1 Lists, byte-order marks, and what the server drops on create. The same files go to
the real API server in tests/e2e/test_corpus.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from isoflop import api, cli
from isoflop.api import kubeyaml

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "examples" / "quickstart.yaml").read_text()


@pytest.mark.parametrize(
    ("written", "read"),
    [
        # integers: Go's ParseInt(s, 0, 64) after dropping underscores, then ParseUint
        ("7", 7),
        ("+7", 7),
        ("-7", -7),
        ("0o7", 7),
        ("07", 7),  # a leading 0 is octal
        ("010", 8),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("9223372036854775807", 2**63 - 1),
        ("18446744073709551615", 2**64 - 1),  # ParseUint
        # floats: the YAML style Go accepts; an integer too large for 64 bits is one
        ("08", 8.0),
        ("1e17", 1e17),
        ("3.0e10", 3e10),
        (".5", 0.5),
        ("+.5", 0.5),
        ("1.", 1.0),
        ("1000000000000000000000000000000", 1e30),
        ("-9223372036854775809", -9.223372036854775809e18),
        # strings: no sexagesimal, no YAML 1.1 base-60, nothing out of a float's range
        ("1:30", "1:30"),
        ("1e400", "1e400"),
        ("0x", "0x"),
        ("2026-01-02", "2026-01-02"),  # no timestamp: as written (the server stores it so)
        ("-x", "-x"),
        # booleans and null: go-yaml v2's tables (y and n too, unlike YAML 1.1 in PyYAML)
        ("y", True),
        ("Y", True),
        ("yes", True),
        ("On", True),
        ("TRUE", True),
        ("n", False),
        ("NO", False),
        ("off", False),
        ("False", False),
        ("~", None),
        ("null", None),
        ("NULL", None),
        ("", None),
        ("yEs", "yEs"),
        # quoted: always a string
        ('"7"', "7"),
        ("'y'", "y"),
    ],
)
def test_plain_scalars_are_read_as_go_yaml_reads_them(written: str, read: object) -> None:
    got = kubeyaml.load(f"v: {written}")["v"]
    assert got == read, written
    assert type(got) is type(read), (written, got)


def test_infinities_and_nan() -> None:
    assert kubeyaml.load("v: .inf")["v"] == math.inf
    assert kubeyaml.load("v: -.Inf")["v"] == -math.inf
    assert math.isnan(kubeyaml.load("v: .NaN")["v"])


@pytest.mark.parametrize(
    ("mark", "codec"),
    [
        (b"", "utf-8"),
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ],
)
def test_a_byte_order_mark_names_the_encoding(mark: bytes, codec: str, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_bytes(mark + QUICKSTART.encode(codec))
    assert api.load_sweep(path).name == "quickstart"
    assert cli.main(["validate", "--no-data", str(path)]) == 0


def test_documents_and_lists_are_checked_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = QUICKSTART.replace("name: quickstart", "name: second")
    assert second != QUICKSTART
    broken = QUICKSTART.replace("name: quickstart", "name: broken").replace(
        "parallelism:", "parallelism: 1:30 #"
    )
    path = tmp_path / "sweeps.yaml"
    path.write_text(f"{QUICKSTART}\n---\n---\n{second}\n---\n{broken}")
    assert [d.where for d in api.read_manifests(path)] == ["document 1", "document 3", "document 4"]
    assert cli.main(["validate", "--no-data", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f"{path}: document 1: ScalingSweep 'quickstart' is valid." in out
    assert f"{path}: document 3: ScalingSweep 'second' is valid." in out
    assert f"{path}: document 4: invalid: spec.parallelism: Input should be a valid integer" in err
    assert "1 of 3 ScalingSweeps invalid" in err
    # `isoflop run` runs one sweep: it says so rather than picking one
    with pytest.raises(api.ManifestError, match="exactly one ScalingSweep, found 3"):
        api.load_sweep(path)
    # a v1 List (kubectl get -o yaml writes one), with something other than a sweep in it
    obj = kubeyaml.load(QUICKSTART)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}
    listed = {"apiVersion": "v1", "kind": "List", "items": [namespace, obj]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(listed))
    assert cli.main(["validate", "--no-data", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert f"{path}: document 1, item 1: Namespace is not a ScalingSweep: not checked" in out
    assert f"{path}: document 1, item 2: ScalingSweep 'quickstart' is valid." in out
    assert api.load_sweep(path).name == "quickstart"


def test_nulls_and_a_status_are_dropped_as_the_server_drops_them_on_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = kubeyaml.load(QUICKSTART)
    obj["spec"]["parallelism"] = None
    obj["spec"]["model"]["family"] = None
    obj["spec"]["resources"] = {"nodeSelector": {"gpu": None}}
    obj["status"] = {"phase": "Succeeded"}
    path = tmp_path / "nulls.json"
    path.write_text(json.dumps(obj))
    sweep = api.load_sweep(path)
    assert sweep.spec.parallelism == api.ScalingSweepSpec.model_fields["parallelism"].default
    assert sweep.spec.model.family == "in-context"  # the default
    assert sweep.spec.resources.node_selector == {}
    assert sweep.status is None
    assert cli.main(["validate", "--no-data", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert f"{path}: note: dropped status (the server drops a manifest's status on create)" in out
    assert "dropped spec.parallelism: null (the server drops it; the default applies)" in out
    assert "dropped spec.resources.nodeSelector.gpu: null" in out
    # a key the schema does not know is refused by name, null or not (strict field validation)
    obj = kubeyaml.load(QUICKSTART)
    obj["spec"]["famliy"] = None
    path.write_text(json.dumps(obj))
    with pytest.raises(api.ManifestError, match=r"^spec.famliy: is not a known field"):
        api.load_sweep(path)
    # and a null item of a list is no field: refused
    obj = kubeyaml.load(QUICKSTART)
    obj["spec"]["budgets"][1] = None
    path.write_text(json.dumps(obj))
    with pytest.raises(api.ManifestError, match=r"^spec.budgets\[1\]"):
        api.load_sweep(path)


def test_every_file_of_the_second_corpus_is_read_or_refused_in_one_sentence(
    tmp_path: Path,
) -> None:
    """tests/perturb.py's files (the e2e test compares them with the server): validate reads each
    or refuses it in one sentence, never a traceback, and reads the dialect as kubectl does."""
    from tests.perturb import perturbed_files

    read = refused = 0
    for i, (what, names, data) in enumerate(perturbed_files()):
        path = tmp_path / f"{i:04d}.yaml"
        path.write_bytes(data)
        said = ""
        try:
            sweeps = [api.parse_sweep(d.obj) for d in api.sweep_documents(path)]
        except api.ManifestError as err:
            said = str(err)
            sweeps = []
        if not sweeps:
            assert "\n" not in said, what
            refused += 1
            continue
        assert [s.name for s in sweeps] == names.split(","), what
        read += 1
        if what == "paper-cross-attention.yaml parallelism 0o octal":
            assert sweeps[0].spec.parallelism == 8
        if what == "paper-cross-attention.yaml compile y/n":
            assert sweeps[0].spec.training.compile is True  # y, as kubectl reads it
    assert read > 400
    assert refused > 100
