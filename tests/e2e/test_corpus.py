"""One definition of valid: the invalid corpus (tests/corpus.py) given to the real API server
(`kubectl apply --dry-run=server`, as a user applies a manifest) and, for what the server stores,
to the operator. `isoflop validate` refuses every one of them (tests/unit/test_corpus.py); here,
each is refused by the server too, or the operator marks it InvalidSpec with one sentence and
creates nothing, and stays alive for the next sweep."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.sweep.check import runnable_plan
from tests.corpus import base_manifest, write_corpus
from tests.e2e.cluster import Cluster, Operator
from tests.perturb import perturbed_files

NAMESPACE = "corpus"


def server_verdicts(cluster: Cluster, directory: Path, files: dict[str, str]) -> set[str]:
    """The files the API server refuses, from one `kubectl apply --dry-run=server` of them all."""
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(directory), check=False)
    refused = set(re.findall(r'"[^"]*/(\d{4}\.json)"', out.stderr))
    stored = out.stdout.count("(server dry run)")
    assert refused <= set(files)
    assert stored + len(refused) == len(files), (stored, len(refused), out.stderr[-3000:])
    return refused


def sweeps(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "scalingsweeps", "-n", NAMESPACE, "-o", "json")
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def sweeps_named(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [o for o in sweeps(cluster) if o["metadata"]["name"] == name]


def depth(obj: Any) -> int:
    if isinstance(obj, dict):
        return 1 + max((depth(v) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max((depth(v) for v in obj), default=0)
    return 0


def invalid_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == "Failed" and c["reason"] == "InvalidSpec":
            return c  # type: ignore[no-any-return]
    return None


def test_the_api_server_isoflop_validate_and_the_operator_agree_on_every_invalid_manifest(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "corpus")
    assert len(files) >= 250
    refused = server_verdicts(cluster, tmp_path / "corpus", files)
    stored = sorted(set(files) - refused)
    print(f"corpus: {len(files)} manifests, {len(refused)} refused by the server, {len(stored)}")
    print("stored, for the operator to refuse:", "; ".join(files[f] for f in stored))
    by_server = {files[f] for f in refused}
    # the server's own rules: types, bounds, patterns, unknown and snake_case keys, names
    for what in (
        "name with a dot",
        "name of 41 characters",
        "spec.training.globalBatchSize a numeric string",
        "spec.training.compile a string",
        "spec.training.globalBatchSize in snake_case",
        "spec.fit.bootstrap below its minimum",
        "affinity of unknown shape",
        "affinity nested 1000 deep",
    ):
        assert what in by_server, what
    # what only the operator can judge is stored by the server: it must say InvalidSpec
    assert stored, "every manifest refused by the server: the operator's part is untested"
    cluster.kubectl("create", "namespace", NAMESPACE)
    operator = Operator(installed, tmp_path / "operator.log")
    log = (tmp_path / "operator.log").read_text
    try:
        for i, name in enumerate(stored):
            manifest = json.loads((tmp_path / "corpus" / name).read_text())
            manifest["metadata"] = {"name": f"invalid-{i}", "namespace": NAMESPACE}
            out = cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest), check=False)
            assert out.returncode == 0, (files[name], out.stderr)
        deadline = time.monotonic() + 180
        while True:
            items = sweeps(cluster)
            pending = [o["metadata"]["name"] for o in items if invalid_condition(o) is None]
            if not pending:
                break
            assert operator.proc.poll() is None, log()[-3000:]
            assert time.monotonic() < deadline, (pending, log()[-3000:])
            time.sleep(1)
        assert len(items) == len(stored)
        for obj in items:
            condition = invalid_condition(obj)
            assert condition is not None
            assert obj["status"]["phase"] == "Failed"
            assert condition["message"].startswith(("spec", "metadata.")), condition
            assert "\n" not in condition["message"]
        jobs = cluster.kubectl("get", "jobs,services", "-n", NAMESPACE, "-o", "name").stdout
        assert jobs.strip() == ""  # nothing created for an invalid sweep
        # the 1,000-deep affinity sent without field validation, as an API client may: the
        # server prunes what the schema does not know and stores a shallow object (before: a
        # free-form field kept it, and kopf's watch failed on it at every restart)
        deep = next(n for n, what in files.items() if what == "affinity nested 1000 deep")
        text = (tmp_path / "corpus" / deep).read_text()  # too deep for Python's json module
        named = text.replace('"name": "quickstart"', f'"name": "deep", "namespace": "{NAMESPACE}"')
        assert named != text
        (tmp_path / "deep.json").write_text(named)
        cluster.kubectl("create", "--validate=false", "-f", str(tmp_path / "deep.json"))
        stored = json.loads(
            cluster.kubectl("get", "scalingsweep", "deep", "-n", NAMESPACE, "-o", "json").stdout
        )
        assert depth(stored) < 20
        cluster.wait_for(
            lambda: bool(sweeps_named(cluster, "deep")[0].get("status", {}).get("conditions")),
            60,
            "a status on the pruned sweep: " + log()[-2000:],
        )
        assert operator.proc.poll() is None, log()[-3000:]
        # and the operator still serves the next, valid sweep
        manifest = base_manifest()
        manifest["metadata"] = {"name": "valid-after", "namespace": NAMESPACE}
        trials = runnable_plan(api.parse_sweep(manifest).spec).trials
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest))

        def valid_jobs() -> int:
            out = cluster.kubectl(
                "get", "jobs", "-n", NAMESPACE, "-l", "isoflop.dev/sweep=valid-after", "-o", "name"
            )
            return len(out.stdout.split())

        cluster.wait_for(
            lambda: valid_jobs() == min(manifest["spec"]["parallelism"], len(trials)),
            60,
            "the valid sweep's first Jobs: " + log()[-2000:],
        )
        assert operator.proc.poll() is None
        assert "Traceback" not in log(), log()[-3000:]
    finally:
        cluster.kubectl("delete", "scalingsweeps", "--all", "-n", NAMESPACE, check=False)
        operator.stop()


def stored_objects(out: str) -> dict[str, dict[str, Any]]:
    """The objects `kubectl create -o json` printed (one JSON document each, or a List)."""
    decoder, found, at = json.JSONDecoder(), {}, 0
    while at < len(out):
        if out[at].isspace():
            at += 1
            continue
        obj, at = decoder.raw_decode(out, at)
        for item in obj.get("items", [obj]) if obj.get("kind") == "List" else [obj]:
            found[item["metadata"]["name"]] = item
    return found


def test_validate_reads_every_file_as_kubectl_and_the_server_do(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """The second corpus (tests/perturb.py: the paper examples rewritten in every YAML spelling,
    explicit tag, merge key, map key, anchor and file form that readers disagree on) through
    `kubectl create --dry-run=server`. For every sweep: what validate reads is what the server
    stores and the operator then parses, to the value (spec, labels and annotations); validate
    refuses nothing the operator would run, and accepts nothing the server refuses."""
    directory = tmp_path / "perturbed"
    directory.mkdir()
    cases = []
    for i, (what, names, data) in enumerate(perturbed_files()):
        path = directory / f"{i:04d}.yaml"
        path.write_bytes(data)
        cases.append((what, names.split(","), path))
    cluster.kubectl("create", "namespace", "perturbed", check=False)
    out = cluster.kubectl(
        "create", "--dry-run=server", "-n", "perturbed", "-o", "json", "-f", str(directory),
        check=False,
    )  # fmt: skip
    stored = stored_objects(out.stdout)
    print(f"perturbed: {len(cases)} files, {len(stored)} sweeps stored by the server")
    problems = []
    accepted = 0
    for what, names, path in cases:
        refusal = ""
        try:
            docs = api.sweep_documents(path)
            validated = {d.obj["metadata"]["name"]: api.parse_sweep(d.obj) for d in docs}
        except api.ManifestError as err:
            validated, refusal = {}, str(err)
        for name in names:
            mine = validated.get(name)
            if name not in stored:
                if mine is not None:
                    problems.append(f"{what}: validate accepts, the server refuses")
                continue
            try:
                operator_sees = api.parse_sweep(stored[name])
            except api.ManifestError as err:
                if mine is not None:
                    problems.append(f"{what}: validate accepts, the operator refuses: {err}")
                continue
            if mine is None:
                problems.append(f"{what}: validate refuses ({refusal}), the operator would run it")
            elif mine.spec != operator_sees.spec:
                problems.append(f"{what}: validate reads another spec than the server stores")
            elif any(
                getattr(mine.metadata, k) != getattr(operator_sees.metadata, k)
                for k in ("labels", "annotations")
            ):
                problems.append(f"{what}: validate reads other metadata than the server stores")
            else:
                accepted += 1
    assert not problems, "\n".join(problems[:40])
    # the corpus has teeth: many sweeps of each kind, the dialect read as kubectl reads it
    assert accepted >= 300, accepted
    assert len(stored) < sum(len(n) for _, n, _ in cases) - 50
    octal = next(p for w, _, p in cases if w == "paper-in-context.yaml parallelism 0o octal")
    assert api.load_sweep(octal).spec.parallelism == 8


def test_children_the_server_refuses_end_the_sweep_before_any_trial_runs(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """The child corpus (the offline rules take it; the API server refuses a trial's Job or
    pod) given to the operator with the chart's rights: each sweep is InvalidSpec within one
    reconcile, in the server's own words, no Job is made and no failure budget spent."""
    from tests.corpus import child_corpus

    namespace = "children"
    cluster.kubectl("create", "namespace", namespace)
    operator = Operator(installed, tmp_path / "operator.log")
    log = (tmp_path / "operator.log").read_text
    corpus = dict(child_corpus())
    try:
        names = {}
        for i, (what, manifest) in enumerate(corpus.items()):
            manifest["metadata"] = {"name": f"child-{i}", "namespace": namespace}
            cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest))
            names[f"child-{i}"] = what
        deadline = time.monotonic() + 120
        while True:
            items = {o["metadata"]["name"]: o for o in sweeps_in(cluster, namespace)}
            pending = [n for n, o in items.items() if invalid_condition(o) is None]
            if not pending:
                break
            assert operator.proc.poll() is None, log()[-3000:]
            assert time.monotonic() < deadline, (pending, log()[-3000:])
            time.sleep(1)
        for name, obj in items.items():
            message = invalid_condition(obj)["message"]  # type: ignore[index]
            assert message.startswith("the API server would refuse a trial's "), (
                names[name],
                message,
            )
        said = {names[n]: invalid_condition(o)["message"] for n, o in items.items()}  # type: ignore[index]
        assert (
            "no PriorityClass with name no-such-priority"
            in said["a PriorityClass that does not exist"]
        )
        assert (
            'serviceaccount "no-such-account" not found'
            in said["a ServiceAccount that does not exist"]
        )
        assert (
            "must be specified when `operator` is 'In'" in said["node affinity In without values"]
        )
        jobs = cluster.kubectl("get", "jobs,pods", "-n", namespace, "-o", "name").stdout
        assert jobs.strip() == ""  # a dry run creates nothing
        assert "Traceback" not in log(), log()[-3000:]
        # the same from a user's machine: isoflop validate --server, with their kubeconfig
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        for what, says in (
            ("a PriorityClass that does not exist", "no PriorityClass with name no-such-priority"),
            ("node affinity Gt with two values", "must be specified single value when"),
        ):
            path = tmp_path / "child.json"
            manifest = {**corpus[what], "metadata": {"name": "mine", "namespace": namespace}}
            path.write_text(json.dumps(manifest))
            out = subprocess.run(
                [sys.executable, "-m", "isoflop.cli", "validate", "--no-data", "--server",
                 str(path)], capture_output=True, text=True, env=env, timeout=120,
            )  # fmt: skip
            assert out.returncode == 2, (what, out.stdout, out.stderr)
            assert out.stderr.startswith("isoflop: error: the API server would refuse a trial's")
            assert says in out.stderr, out.stderr
        good = base_manifest()
        good["metadata"] = {"name": "fine", "namespace": namespace}
        (tmp_path / "good.json").write_text(json.dumps(good))
        out = subprocess.run(
            [sys.executable, "-m", "isoflop.cli", "validate", "--no-data", "--server",
             str(tmp_path / "good.json")], capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"takes it in namespace {namespace}" in out.stdout
        assert cluster.kubectl(
            "get", "scalingsweep", "fine", "-n", namespace, check=False
        ).returncode
    finally:
        cluster.kubectl("delete", "scalingsweeps", "--all", "-n", namespace, check=False)
        operator.stop()


def sweeps_in(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "scalingsweeps", "-n", namespace, "-o", "json")
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]
