"""Rules the test suite keeps about itself, checked by reading its source."""

from __future__ import annotations

import ast
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PYPROJECT = TESTS.parent / "pyproject.toml"

# Playwright's waits take milliseconds (`wait_for`, `wait_for_function`, `set_default_timeout`, ...);
# asyncio.wait_for takes seconds.
_MILLISECOND_PREFIXES = ("wait_for", "set_default_")


@dataclass(frozen=True)
class Wait:
    """A call that waits at most `seconds`, and the pytest timeout of the test it runs in."""

    where: str
    seconds: float
    owner: str
    limit: float


def _ini_timeout() -> float:
    return float(tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]["timeout"])


def _number(node: ast.expr | None) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    return None


def _is_timeout_mark(node: ast.expr) -> bool:
    """`pytest.mark.timeout(...)` (or `mark.timeout(...)`)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "timeout"
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "mark")


def _mark_seconds(marks: list[ast.expr]) -> float | None:
    for mark in marks:
        if _is_timeout_mark(mark):
            assert isinstance(mark, ast.Call)
            given = mark.args[0] if mark.args else next((k.value for k in mark.keywords if k.arg == "timeout"), None)
            seconds = _number(given)
            assert seconds is not None, f"line {mark.lineno}: pytest.mark.timeout needs a number literal"
            return seconds
    return None


def _module_mark(tree: ast.Module) -> float | None:
    for statement in tree.body:
        if (isinstance(statement, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)):
            value = statement.value
            return _mark_seconds(list(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return None


def _wait_seconds(call: ast.Call) -> float | None:
    """The seconds a call with a number literal `timeout=` waits at most, or None if it has none."""
    if _is_timeout_mark(call):
        return None
    value = _number(next((k.value for k in call.keywords if k.arg == "timeout"), None))
    if value is None:
        return None
    func = call.func
    if (isinstance(func, ast.Attribute) and func.attr.startswith(_MILLISECOND_PREFIXES)
            and not (isinstance(func.value, ast.Name) and func.value.id == "asyncio")):
        return value / 1000
    return value


def _waits(path: Path, root: Path, ini: float) -> list[Wait]:
    tree = ast.parse(path.read_text(), filename=str(path))
    module_limit = _module_mark(tree)
    found: list[Wait] = []

    def is_test(function: ast.AST, parent: ast.AST) -> bool:
        """A function pytest collects: test* in the module, or in a Test* class of the module."""
        in_class = isinstance(parent, ast.ClassDef) and parent.name.startswith("Test") and parent in tree.body
        return (isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) and function.name.startswith("test")
                and (parent is tree or in_class))

    def visit(node: ast.AST, owner: str, limit: float) -> None:
        for child in ast.iter_child_nodes(node):
            child_owner, child_limit = owner, limit
            if not owner and is_test(child, node):
                assert isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                class_marks = node.decorator_list if isinstance(node, ast.ClassDef) else []
                marks = (_mark_seconds(child.decorator_list), _mark_seconds(class_marks), module_limit)
                child_owner, child_limit = child.name, next((s for s in marks if s is not None), ini)
            if isinstance(child, ast.Call) and (seconds := _wait_seconds(child)) is not None:
                where = f"{path.relative_to(root)}:{child.lineno}"
                found.append(Wait(where, seconds, owner or "(fixture or helper)", limit or math.inf))
            visit(child, child_owner, child_limit)

    visit(tree, "", ini)
    return found


def test_every_wait_in_a_test_ends_before_pytest_gives_up_on_the_test():
    """A hung child process is reported by the test's own timeout (with its output), not by pytest-timeout's
    stack dump, only if each wait is shorter than the pytest timeout that applies to the test.

    Checked: every call in tests/**/*.py with a `timeout=` keyword whose value is a number literal
    (subprocess.run, Popen.wait/communicate, httpx, openai clients, ...), in seconds, except Playwright's
    `wait_for*` / `set_default_*` methods, whose milliseconds are turned into seconds. Each must be strictly
    smaller than the pytest timeout of the test function it is written in: the function's
    `@pytest.mark.timeout(N)`, else its Test class's, else the module's `pytestmark`, else
    [tool.pytest.ini_options] timeout in pyproject.toml. Calls in fixtures and helpers (anything outside a
    test function) are held to the ini value. Not checked: timeouts given positionally or by a variable,
    `default_timeout=` and the like, and whether a test's waits in sequence add up to more than its timeout.
    """
    ini = _ini_timeout()
    waits = [wait for path in sorted(TESTS.rglob("*.py")) for wait in _waits(path, TESTS.parent, ini)]
    assert len(waits) > 40  # the parser found the suite's waits (a broken walk would find none and pass)
    too_long = [f"{w.where}: waits {w.seconds:g} s in {w.owner}, whose pytest timeout is {w.limit:g} s"
                for w in waits if w.seconds >= w.limit]
    assert too_long == [], "\n".join(too_long)


def test_the_checker_reads_marks_and_milliseconds(tmp_path):
    """The walk above on a made-up module: each kind of limit, and Playwright's milliseconds."""
    source = tmp_path / "tests" / "test_made_up.py"
    source.parent.mkdir()
    source.write_text(
        "import pytest, subprocess\n"
        "pytestmark = [pytest.mark.slow, pytest.mark.timeout(1000)]\n"
        "def helper():\n"
        "    subprocess.run(['true'], timeout=100)\n"
        "def test_module_mark(page):\n"
        "    page.wait_for(timeout=999_000)\n"
        "    def inner():\n"
        "        subprocess.run(['true'], timeout=5)\n"
        "@pytest.mark.timeout(timeout=50)\n"
        "def test_own_mark():\n"
        "    asyncio.wait_for(x, timeout=60)\n"
        "@pytest.mark.timeout(70)\n"
        "class TestGroup:\n"
        "    def test_class_mark(self):\n"
        "        httpx.get('http://x', timeout=80.5)\n"
        "@pytest.mark.timeout(0)\n"
        "def test_no_limit():\n"
        "    subprocess.run(['true'], timeout=10_000)\n"
    )
    waits = _waits(source, tmp_path, 900.0)
    assert [(w.seconds, w.owner, w.limit) for w in waits] == [
        (100.0, "(fixture or helper)", 900.0),
        (999.0, "test_module_mark", 1000.0),
        (5.0, "test_module_mark", 1000.0),
        (60.0, "test_own_mark", 50.0),
        (80.5, "test_class_mark", 70.0),
        (10_000.0, "test_no_limit", math.inf),  # timeout(0): pytest-timeout's "no timeout"
    ]
    assert waits[0].where == "tests/test_made_up.py:4"
