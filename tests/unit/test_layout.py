"""Guards on the layout: source roots never shadow the standard library; the core stays pure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The pure core: no kopf, kubernetes, torch or boto3, so it runs and is tested anywhere.
PURE_MODULES = [
    "isoflop.fit",
    "isoflop.fit.report",
    "isoflop.sweep.engine",
    "isoflop.sweep.trials",
    "isoflop.sweep.forecast",
    "isoflop.api",
    "isoflop.sweep.plan",
    "isoflop.api.crd",
    "isoflop.cli",
    "isoflop_trainer.config",
]
HEAVY = ["kopf", "kubernetes", "torch", "boto3", "torchx"]


def test_operator_dir_is_a_source_root_not_a_package() -> None:
    assert (ROOT / "operator" / "isoflop" / "__init__.py").exists()
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "trainer" / "__init__.py").exists()


def test_stdlib_operator_still_imports_from_repository_root() -> None:
    # -S: no site-packages, so sys.path[0] is the repository root and nothing else can interfere.
    out = subprocess.run(
        [sys.executable, "-S", "-c", "import operator; print(operator.itemgetter(1)('ab'))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b"


def test_pure_core_imports_no_heavy_dependency() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE_MODULES)
        + f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"pure core imported: {out.stdout.strip()}"
