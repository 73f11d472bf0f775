"""A team's own family through its entry point (examples/custom-family): found in the group
isoflop.families of the environment, measured by the model check, planned, and trained; a missing
one is a sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop import api
from isoflop.local.modelcheck import model_checked
from isoflop.sweep.plan import ladder, plan
from isoflop.sweep.trials import train_config

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "custom-family"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example package as pip would install it: its module importable and its entry point
    in a dist-info directory on the path (what importlib.metadata reads)."""
    info = tmp_path / "tiny_dit_family-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-dit-family\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[isoflop.families]\ntiny-dit = tiny_dit:TinyDiT\n")
    path = os.pathsep.join([str(tmp_path), str(PACKAGE), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)  # the model check's subprocess and the trainer's
    return tmp_path


def test_a_custom_family_is_measured_planned_and_trained(installed: Path) -> None:
    sweep = api.load_sweep(PACKAGE / "sweep.yaml")
    spec = model_checked(sweep.spec)
    p = plan(spec)
    rungs = {t.rung: t for t in p.trials if t.budget == 3e10}
    assert list(rungs) == ["w32", "w48", "w64", "w96"]
    configs = {r.name: r.config for r in ladder(spec)}
    sizes = [rungs[n].params for n in rungs]
    assert sizes == sorted(sizes)
    assert sizes == [configs[n].params().total for n in rungs]
    w32 = configs["w32"]
    assert (w32.depth, w32.width, w32.heads, w32.tokens_per_sample) == (2, 32, 4, 24)
    flops = w32.flops_per_sample()
    assert flops.backward == pytest.approx(2 * flops.forward, rel=0.1)
    cfg = train_config(spec, "tiny-dit", rungs["w32"]).to_dict()
    cfg.update(steps=12, eval_samples=16, log_every=4, termination_log=None,
               results=str(installed / "result.json"))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "isoflop_trainer.cli", "train", "--config-json", json.dumps(cfg)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((installed / "result.json").read_text())
    assert result["params"] == w32.params().total
    assert result["losses"][-1] < result["losses"][0]


def test_an_entry_point_that_is_not_installed_is_one_sentence() -> None:
    obj = api.load_sweep(PACKAGE / "sweep.yaml").to_wire()
    obj["spec"]["model"]["transformer"] = "not-installed"
    with pytest.raises(api.ManifestError) as err:
        model_checked(api.parse_sweep(obj).spec)
    assert str(err.value).startswith(
        "spec.model.configs[0] ('w32'): no entry point 'not-installed' in the group "
        "isoflop.families is installed in this environment"
    )
