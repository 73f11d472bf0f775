"""The `isoflop` and `isoflop-train` command lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop import api, cli
from isoflop.cli.fit import table_labels
from isoflop_trainer import cli as train_cli
from tests.unit.synthetic import paper_rows

ROOT = Path(__file__).resolve().parents[2]


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(ROOT / "examples/paper-in-context.yaml")]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "-d" in line and line.strip()[0].isdigit()]
    assert len(lines) == 84
    assert "84 trials over 6 budgets (budgets counted as 6ND)" in out
    row = next(line for line in lines if "6e18-d15" in line).split()
    assert row[:4] == ["6e18", "6e18-d15", "15", "960"]
    assert float(row[12]) == pytest.approx(6e18, rel=1e-3)  # the 6ND column is the budget
    assert row[7:9] == ["1024", "0.0001"]  # its batch and learning rate


def test_plan_shows_the_tuning_stage_and_that_the_grids_rates_come_from_its_law(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = api.yaml_load((ROOT / "examples/quickstart.yaml").read_text())
    m["spec"]["tuning"] = {}
    (tmp_path / "q.yaml").write_text(json.dumps(m))
    assert cli.main(["plan", str(tmp_path / "q.yaml")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "3e10-d2w40 " in line).split()
    assert row[7:9] == ["16", "law"]
    assert (
        "tuning: rungs d2w40, d2w64, d2w112 at 1.5e10, 3e10 FLOPs over learning rates "
        "(1.56e-05), (3.13e-05), (6.25e-05), (0.000125), 0.00025, 0.0005, 0.001, 0.002, 0.004, "
        "(0.008), (0.016), (0.032), (0.064)"
    ) in out
    assert "30 trials, 6.755e+11 FLOPs (16.7% of the grid above;" in out
    assert cli.main(["plan", str(tmp_path / "q.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["tuning"]) == 2 * 3 * 13
    assert all(t["learning_rate"] is None for t in data["trials"])
    assert {t["learning_rate"] for t in data["tuning"]} >= {2.5e-4, 4e-3}


def test_plan_json_matches_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(ROOT / "examples/quickstart.yaml"), "--json", "--mfu", "0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accounting"] == "exact"
    assert data["mfu"] == {"source": "50% MFU at every size", "points": [[1.0, 0.5]]}
    assert all(t["mfu"] == 0.5 for t in data["trials"])
    assert data["gpuHours"] == pytest.approx(sum(t["gpu_hours"] for t in data["trials"]))
    assert len(data["trials"]) == 36
    assert data["infeasible"] == []
    for t in data["trials"]:
        assert t["flops"] == t["samples"] * t["flops_per_sample"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["plan", "/nonexistent.yaml"],
            "isoflop: error: cannot read /nonexistent.yaml: No such file",
        ),
        (
            ["plan", "examples/quickstart.yaml", "--mfu", "2"],
            "isoflop: error: --mfu must lie in (0, 1]",
        ),
    ],
)
def test_errors_are_one_sentence_and_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_invalid_manifest_exit_code_from_a_real_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "examples/quickstart.yaml")
        .read_text()
        .replace("family: in-context", "family: unet")
    )
    out = subprocess.run(
        [sys.executable, "-m", "isoflop.cli", "validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "isoflop: error: spec.model.family: Input should be 'in-context', 'cross-attention', "
        "'diffusers' or 'custom'"
    )
    assert "Traceback" not in out.stderr


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(ROOT / "examples/quickstart.yaml")]) == 0
    assert "ScalingSweep 'quickstart' is valid" in capsys.readouterr().out


def test_plan_estimates_gpu_hours_from_an_mfu_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paper = str(ROOT / "examples/paper-in-context.yaml")
    assert cli.main(["plan", paper]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    assert "1.106e+20 FLOPs in all counted exactly (1.540e+20 as 6ND)" in said
    assert "About 257 GPU-hours" in said
    assert said.endswith("(77.7 at a flat 40%).")
    curve = tmp_path / "bench.jsonl"
    curve.write_text('{"params": 1e6, "mfu": 0.1}\n{"params": 1e9, "mfu": 0.1}\n')
    assert cli.main(["plan", paper, "--json", "--mfu-curve", str(curve)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpuHours"] == pytest.approx(4 * 77.7, rel=0.01)  # 10% is a quarter of 40%
    assert {t["mfu"] for t in out["trials"]} == {0.1}
    assert cli.main(["plan", paper, "--mfu", "0.4", "--mfu-curve", str(curve)]) == 2
    assert "give --mfu or --mfu-curve, not both" in capsys.readouterr().err
    curve.write_text("not json\n")
    assert cli.main(["plan", paper, "--mfu-curve", str(curve)]) == 2
    assert f"{curve} line 1: expected JSON" in capsys.readouterr().err


def test_validate_and_run_refuse_a_sweep_that_cannot_give_a_law(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = api.yaml_load((ROOT / "examples/quickstart.yaml").read_text())
    manifest["spec"]["budgets"] = manifest["spec"]["budgets"][:1]  # one budget: no power law
    path = tmp_path / "one.yaml"
    path.write_text(json.dumps(manifest))
    for command in (["validate", "--no-data"], ["run", "--simulate", "--run-dir", str(tmp_path)]):
        assert cli.main([*command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("isoflop: error: spec.budgets: a scaling law needs 2 or more budgets")
        assert err.count("\n") == 1
    assert not (tmp_path / "state.json").exists()  # refused before anything ran


def test_crd_write_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "crd.yaml"
    assert cli.main(["crd", "--check", "-o", str(target)]) == 2  # missing
    assert cli.main(["crd", "-o", str(target)]) == 0
    assert cli.main(["crd", "--check", "-o", str(target)]) == 0
    target.write_text(target.read_text().replace("sweep", "swoop"))
    assert cli.main(["crd", "--check", "-o", str(target)]) == 2
    assert "is out of date" in capsys.readouterr().err


def test_train_count_reports_exact_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli.main(["count", "--depth", "2", "--width", "128", "--heads", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["total"] == sum(data["params"]["by_module"].values())
    assert data["flopsPerSample6ND"] == 6 * data["params"]["total"] * data["tokensPerSample"]
    assert train_cli.main(["count", "--depth", "2", "--width", "100", "--heads", "3"]) == 2
    assert "not divisible by 3 heads" in capsys.readouterr().err


def write_csv(path: Path, rows: list[dict[str, float]]) -> Path:
    keys = list(rows[0])
    path.write_text(
        ",".join(keys)
        + "\n"
        + "\n".join(",".join(str(float(r[k])) for k in keys) for r in rows)
        + "\n"
    )
    return path


def test_fit_json_reports_the_paper_exponents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_csv(tmp_path / "ic.csv", paper_rows())
    argv = [
        "fit",
        str(table),
        "--json",
        "--method",
        "parabola",
        "--bootstrap",
        "100",
        "--predict",
        "1.5e21",
    ]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert round(out["laws"]["params"]["exponent"], 4) == 0.5681
    assert round(out["laws"]["tokens"]["exponent"], 4) == 0.4319
    assert round(out["laws"]["loss"]["exponent"], 4) == -0.0273
    assert out["predictions"][0]["budget"] == 1.5e21
    # the paper checked its laws on a 958.3M model at 1.5e21; its rounded coefficients give ~965M
    assert out["predictions"][0]["params"]["value"] == pytest.approx(958.3e6, rel=0.01)
    assert out["holdOut"]["budget"] == 6e18


def test_fit_text_plots_and_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write_csv(tmp_path / "in-context.csv", paper_rows(noise=3e-4, seed=1))
    second = write_csv(
        tmp_path / "cross-attention.csv",
        paper_rows(n_coef=0.003, n_exp=0.54, l_exp=-0.0385, noise=3e-4, seed=2),
    )
    argv = [
        "fit",
        str(first),
        "--method",
        "parabola",
        "--bootstrap",
        "100",
        "--compare",
        str(second),
        "--plot",
        str(tmp_path / "plots"),
        "--predict",
        "1e21",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "N*(C)" in out
    assert "cross-attention allocates more of extra compute to data" in out
    for name in ("isoflop.png", "laws.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 20_000


def test_compared_tables_are_named_by_their_sweeps(tmp_path: Path) -> None:
    def run_dir(folder: str, sweep: str | None) -> Path:
        (tmp_path / folder).mkdir()
        if sweep is not None:
            (tmp_path / folder / "state.json").write_text(json.dumps({"sweep": sweep}))
        return tmp_path / folder / "trials.csv"

    a, b = run_dir("run-1", "dit-in-context"), run_dir("run-2", "dit-cross-attention")
    assert table_labels(a, b) == ("dit-in-context", "dit-cross-attention")
    c, d = run_dir("monday", "same"), run_dir("tuesday", "same")  # one sweep run twice
    assert table_labels(c, d) == ("monday", "tuesday")
    e, f = run_dir("x", None), tmp_path / "other.csv"  # no run directory: the file names
    assert table_labels(e, f) == ("trials", "other")
    (tmp_path / "y").mkdir()
    g, h = tmp_path / "x" / "t.csv", tmp_path / "y" / "x" / "t.csv"
    (tmp_path / "y" / "x").mkdir()
    assert table_labels(g, h) == (str(g), str(h))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "budget,params,tokens,loss\n1e17,1e6,1e10,0.5\n1e17,2e6,5e9,0.49\n1e17,4e6,2.5e9,0.5\n",
            "isoflop: error: scaling laws need at least 2 budgets, got 1 (1e+17)",
        ),
        ("budget,params,tokens,loss\n1e17,1e6,1e10,nan\n", "isoflop: error: row 1: loss is nan"),
        ("budget,params,loss\n1e17,1e6,0.5\n", "isoflop: error: missing column 'tokens'"),
    ],
)
def test_fit_errors_are_one_sentence(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "t.csv"
    table.write_text(content)
    assert cli.main(["fit", str(table), "--bootstrap", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_a_full_disk_ends_a_run_in_one_sentence_and_leaves_no_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after a few writes: the old file stays whole, no .tmp stays behind, and the
    run ends with one sentence (before: three chained tracebacks and .tmp files)."""
    import errno

    from isoflop.local import runner
    from isoflop_trainer.data import store

    writes = []
    real_write_bytes = Path.write_bytes

    def filling(self: Path, data: bytes) -> int:
        writes.append(self)
        if len(writes) > 3:
            real_write_bytes(self, data[:10])  # part of it lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    monkeypatch.setattr(runner, "atomic_write", store.atomic_write)
    run_dir = tmp_path / "run"
    code = cli.main(
        ["run", "examples/quickstart.yaml", "--simulate", "--run-dir", str(run_dir), "--plain"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("isoflop: error: cannot write ")
    assert "No space left on device" in err[-1]
    assert "run the same command again to resume" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert sorted(p.name for p in run_dir.rglob("*.tmp")) == []
    for written in run_dir.glob("*.json"):  # what was written before is whole
        json.loads(written.read_text())


def test_every_option_with_a_default_shows_it_in_help() -> None:
    import argparse

    root = cli.parser()
    (sub,) = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    checked = 0
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if action.default in (None, False, [], argparse.SUPPRESS) or not action.help:
                continue
            checked += 1
            help_start = " ".join(action.help.split()[:3])
            assert "default" in " ".join(text.split()).split(help_start, 1)[1][:400], (
                name,
                action.dest,
            )
    assert checked >= 7  # run --noise, forecast --runs, plan --peak-tflops, fit --bootstrap, ...
    assert "simulated sweeps (default: 40)" in " ".join(
        sub.choices["forecast"].format_help().split()
    )
