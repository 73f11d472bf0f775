"""A manifest file read as kubectl reads it (isoflop.api.kubeyaml): go-yaml v2's scalars, several
documents, v1 Lists, byte-order marks, and what the server drops on create. The same files go to
the real API server in tests/e2e/test_corpus.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

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


# go-yaml v2's maps, tags and anchors (tests/e2e/test_corpus.py checks the same against the
# real server, with the perturbed files of tests/perturb.py)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        # a merge sets its keys over those before it; a later key wins over the merge
        ("{x: 9, <<: {x: 1, z: 2}}", {"x": 1, "z": 2}),
        ("{<<: {x: 1, z: 2}, x: 9}", {"x": 9, "z": 2}),
        # of a list of maps, the first wins; two merges: the later wins
        ("{<<: [{x: 1}, {x: 2, z: 3}]}", {"x": 1, "z": 3}),
        ("{<<: {x: 1}, <<: {x: 2}}", {"x": 2}),
        # keys that are not strings, as JSON gets them (010 is 8 too: the later wins)
        ("{8: a, y: b, 0x10: c, 1e3: d, 1.5: e, 010: f, n: g, 1e-5: h, 1234567.0: i}",
         {"true": "b", "16": "c", "1000": "d", "1.5": "e", "8": "f", "false": "g",
          "1e-05": "h", "1.234567e+06": "i"}),
        # explicit tags
        ("{a: !!float 3, b: !!int '3', c: !!str 3, d: !!bool yes, e: !foo 3, f: !!binary aGk=}",
         {"a": 3.0, "b": 3, "c": "3", "d": True, "e": "3", "f": "hi"}),
        ("{a: !!timestamp 2026-01-02, b: !!null '', c: !!merge 3, d: !!set {q}}",
         {"a": "2026-01-02", "b": None, "c": "3", "d": {"q": None}}),
        # an anchor defined again: later aliases take the new value
        ("{a: &x 1, b: &x 2, c: *x}", {"a": 1, "b": 2, "c": 2}),
    ],
)  # fmt: skip
def test_maps_tags_and_anchors_as_go_yaml_builds_them(written: str, read: Any) -> None:
    assert kubeyaml.load(written) == read


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("v: !!int", "cannot decode !!null `` as a !!int"),
        ("v: !!int 1e3", "cannot decode !!float `1e3` as a !!int"),
        ("v: !!float abc", "cannot decode !!str `abc` as a !!float"),
        ("v: !!bool maybe", "cannot decode !!str `maybe` as a !!bool"),
        ("v: !!timestamp bogus", "cannot decode !!str `bogus` as a !!timestamp"),
        ("v: !!int 1:30", "cannot decode !!str `1:30` as a !!int"),
        ("v: !!null x", "cannot decode !!str `x` as a !!null"),
        ("v: !!binary a*b", "!!binary value contains invalid base64 data"),
        ("v: {~: a}", "a map key cannot be null"),
        ("v: {[a]: b}", "a map key cannot be list"),
        ("v: {<<: 3}", "expected a map"),
    ],
)
def test_what_go_yaml_refuses_is_one_sentence_with_its_line(
    written: str, says: str, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"apiVersion: isoflop.dev/v1alpha1\nkind: ScalingSweep\n{written}\n")
    with pytest.raises(api.ManifestError) as err:
        api.read_manifests(path)
    assert str(err.value) == f"{path} is not valid YAML at line 3: {says}" or (
        says in str(err.value) and "at line 3" in str(err.value)
    ), err.value
    assert "\n" not in str(err.value)


def test_an_alias_bomb_is_refused_and_a_few_aliases_are_not() -> None:
    levels = ["[q, q, q, q, q, q, q, q, q]"]
    for i in range(7):
        levels.append(f"[&l{i} {levels[-1]}, " + ", ".join([f"*l{i}"] * 8) + "]")
    with pytest.raises(yaml.YAMLError, match="excessive aliasing"):
        kubeyaml.load(f"v: {levels[-1]}")
    assert kubeyaml.load("{a: &x [1, 2], b: *x, c: *x}") == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


@pytest.mark.parametrize(
    ("head", "expanded"),
    [
        ("apiVersion: v1\nkind: List", True),
        ("apiVersion: apps/v1\nkind: List", True),  # kubectl expands a List of any group
        ("apiVersion: isoflop.dev/v1alpha1\nkind: ScalingSweepList", True),
        ("kind: List", False),  # kubectl refuses a list without an apiVersion
    ],
)
def test_the_lists_kubectl_expands(head: str, expanded: bool) -> None:
    body = QUICKSTART.replace("\n", "\n    ")
    docs = kubeyaml.objects(f"{head}\nitems:\n  - {body}\n")
    assert [d.obj.get("kind") for d in docs] == (["ScalingSweep"] if expanded else [head[-4:]])


def test_a_generate_name_names_the_sweep_as_the_server_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(QUICKSTART.replace("  name: quickstart", "  generateName: quickstart-"))
    assert cli.main(["validate", "--no-data", str(path)]) == 0
    assert "ScalingSweep 'quickstart' is valid" in capsys.readouterr().out
    # with the 5 characters the server adds, the name must fit a sweep's 40 (its CEL rule)
    path.write_text(QUICKSTART.replace("  name: quickstart", f"  generateName: {'q' * 36}"))
    assert cli.main(["validate", "--no-data", str(path)]) == 2
    assert "metadata.generateName must start a name that is a DNS label" in capsys.readouterr().err
    path.write_text(QUICKSTART.replace("  name: quickstart", "  namespace: default"))
    assert cli.main(["validate", "--no-data", str(path)]) == 2
    assert "metadata.name is required (or generateName" in capsys.readouterr().err


def test_metadata_the_server_refuses_is_refused(tmp_path: Path) -> None:
    manifest = api.yaml_load(QUICKSTART)
    for field, value, says in (
        ("namespace", "Team_A", "metadata.namespace"),
        ("finalizers", ["a b/c"], "metadata.finalizers[0]"),
        ("ownerReferences", [{"apiVersion": "v1", "kind": "X", "name": "o"}], "uid: is required"),
        ("annotations", {"a": "x" * 270_000}, "more than the 262144 allowed"),
        ("annotations", {"a": "x" * 70_000}, "more than a sweep's 65536"),
        ("owner", "me", "metadata.owner: is not a known field"),
    ):
        broken = {**manifest, "metadata": {**manifest["metadata"], field: value}}
        with pytest.raises(api.ManifestError, match=re.escape(says)):
            api.parse_sweep(broken)
    # kopf's and kubectl's own annotations are not the sweep's to count
    big = {"kopf.zalando.org/last-handled-configuration": "x" * 100_000}
    api.parse_sweep({**manifest, "metadata": {**manifest["metadata"], "annotations": big}})
