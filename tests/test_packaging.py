"""What the wheel holds and what kb's packages import: the product stands alone, without bench/ or tests/."""

from __future__ import annotations

import ast
import tomllib

from setuptools import find_packages

from tests.conftest import ROOT

PRODUCT = ("ingest", "kb_app")


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import statement names, at any depth (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_product_never_imports_bench_or_tests():
    offenders = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            bad = {m for m in imported_modules(ast.parse(path.read_text())) if m.split(".")[0] in ("bench", "tests")}
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders


def test_the_checker_sees_lazy_imports():
    tree = ast.parse("def f():\n    from bench.run import main\n    import tests.rigs\n")
    assert imported_modules(tree) == {"bench.run", "tests.rigs"}


def test_the_wheel_holds_only_kbs_own_packages():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(str(ROOT), include=config["include"], exclude=config.get("exclude", ())))
    assert {p.split(".")[0] for p in packages} == set(PRODUCT)
    # Every folder of Python modules inside them is packaged (a new subpackage is not left out of the wheel).
    folders = {str(p.parent.relative_to(ROOT)).replace("/", ".") for package in PRODUCT
               for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert folders == packages
