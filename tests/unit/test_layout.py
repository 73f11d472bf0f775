"""Guards on the layout: source roots never shadow the standard library; the core stays pure."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The pure core: no kopf, kubernetes, torch or boto3, so it runs and is tested anywhere. Every
# module of these packages, so a module added to one is checked too.
PURE_PACKAGES = ["isoflop.api", "isoflop.sweep", "isoflop.fit"]
PURE_MODULES = [
    *(
        ".".join(p.relative_to(ROOT / "operator").with_suffix("").parts).removesuffix(".__init__")
        for pkg in PURE_PACKAGES
        for p in sorted((ROOT / "operator" / pkg.replace(".", "/")).glob("*.py"))
    ),
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


def _project_modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name (a package by its __init__)."""
    found = {}
    for root in (ROOT / "operator", ROOT / "trainer"):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: Mapping[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != name}


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _project_modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert graph["isoflop.sweep.engine"] >= {"isoflop.sweep.plan", "isoflop.sweep.strategy"}

    cycles = []

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return seen

    for name in sorted(graph):
        if name in reach(name):
            cycles.append(name)
    assert cycles == [], f"modules on an import cycle: {cycles}"
