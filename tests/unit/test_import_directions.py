"""Which mailguard modules may import which (issue #10), read from the source with `ast`:

(a) checks never import the front end, the daemon's wiring (app) or the scanning stage,
    not even for type hints: a check must be testable and reusable without them;
(b) the lean entry points (started per connection / message) reach nothing beyond the
    standard library and the control protocol they use today;
(c) only mailguard/store/ imports SQLAlchemy or Alembic;
(d) no import cycle among mailguard modules at module level (imports inside functions
    and under `if TYPE_CHECKING:` are the way to break one, so they do not count).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailguard"

# (a) Known violations still being removed, as (importing module, imported module): a new
# violation fails the test, and so does an entry that is no longer needed. Issue #10
# removed those of commit 180c221 (keep this list empty):
#   checks.dnsbl, .greylist, .limits, .spf, .tarpit -> mailguard.app (Resources, for
#     type hints; now mailguard.resources)
#   checks.limits -> mailguard.frontend.services, mailguard.scanning.engine
#   checks.relay -> mailguard.frontend.replies (now mailguard.qmail.replies)
CHECKS_ALLOWED: set[tuple[str, str]] = set()

# (b) What the lean entry points may reach besides the standard library: themselves, the
# control protocol module and the packages these live in (imported on the way).
LEAN_ALLOWED = frozenset({
    "mailguard",
    "mailguard.lean",
    "mailguard.lean.queue",
    "mailguard.lean.settings",
    "mailguard.lean.smtpd",
    "mailguard.control",
    "mailguard.control.protocol",
})
CHECKS_FORBIDDEN = ("mailguard.frontend", "mailguard.app", "mailguard.scanning")
STORE_ONLY = ("sqlalchemy", "alembic")


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (for `from p import name`: p.name when a module)
    line: int
    module_level: bool  # executed on import: not in a function, not under TYPE_CHECKING


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import in the file, with whether it runs when the module is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, module_level) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, is_package)
            found.append(Import(base, node.lineno, module_level))
            for alias in node.names:  # `from pkg import submodule`
                if f"{base}.{alias.name}" in modules:
                    found.append(Import(f"{base}.{alias.name}", node.lineno, module_level))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, module_level)

    visit(tree, True)
    return found


def _within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def _with_parents(target: str) -> Iterator[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = target.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def module_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """mailguard module → the mailguard modules its import runs (module level only)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for imp in imports_of(name, path, modules):
            if imp.module_level and _within(imp.target, "mailguard"):
                edges.update(t for t in _with_parents(imp.target) if t in modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def checks_violations(modules: dict[str, Path]) -> set[tuple[str, str]]:
    return {
        (name, imp.target)
        for name, path in modules.items()
        if _within(name, "mailguard.checks")
        for imp in imports_of(name, path, modules)
        if any(_within(imp.target, f) for f in CHECKS_FORBIDDEN)
    }


def lean_violations(modules: dict[str, Path]) -> list[str]:
    """What the lean entry points reach (any import in their own files; module-level
    imports of the mailguard modules they reach) beyond the stdlib and LEAN_ALLOWED."""
    graph = module_graph(modules)
    bad: list[str] = []
    seen: set[str] = set()
    todo = [n for n in modules if _within(n, "mailguard.lean")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        own = _within(name, "mailguard.lean")
        for imp in imports_of(name, modules[name], modules):
            if not (own or imp.module_level):
                continue
            top = imp.target.split(".")[0]
            if top == "mailguard":
                for target in _with_parents(imp.target):
                    if target not in LEAN_ALLOWED:
                        bad.append(f"{name}:{imp.line} reaches {target}")
                    elif target in modules:
                        todo.append(target)
            elif top not in sys.stdlib_module_names:
                bad.append(f"{name}:{imp.line} imports {imp.target}")
        todo.extend(graph[name] & LEAN_ALLOWED)
    return sorted(set(bad))


def store_violations(modules: dict[str, Path]) -> list[str]:
    return sorted(
        f"{name}:{imp.line} imports {imp.target}"
        for name, path in modules.items()
        if not _within(name, "mailguard.store")
        for imp in imports_of(name, path, modules)
        if imp.target.split(".")[0] in STORE_ONLY
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop inside a component, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        step = next((n for n in nxt if n == start and len(path) > 1), None)
        if step:
            return " -> ".join([*path, start])
        unvisited = [n for n in nxt if n not in seen]
        if not unvisited:  # wander back: any member leads on, the component is strong
            return " -> ".join([*path, nxt[0]])
        path.append(unvisited[0])
        seen.add(unvisited[0])


# --- the rules ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = all_modules()
    assert "mailguard.checks.relay" in found and "mailguard.lean.queue" in found
    return found


def test_checks_do_not_import_frontend_app_or_scanning(modules: dict[str, Path]) -> None:
    found = checks_violations(modules)
    new = sorted(found - CHECKS_ALLOWED)
    assert not new, (
        "checks must not import mailguard.frontend, mailguard.app or mailguard.scanning "
        f"(not even under TYPE_CHECKING): {new}"
    )
    stale = sorted(CHECKS_ALLOWED - found)
    assert not stale, f"fixed: remove these from CHECKS_ALLOWED: {stale}"


def test_lean_entry_points_stay_lean(modules: dict[str, Path]) -> None:
    bad = lean_violations(modules)
    assert not bad, (
        "the lean entry points may import only the standard library and "
        f"{sorted(LEAN_ALLOWED)}: {bad}"
    )


def test_only_the_store_imports_sqlalchemy_or_alembic(modules: dict[str, Path]) -> None:
    bad = store_violations(modules)
    assert not bad, f"only mailguard/store/ may import {STORE_ONLY}: {bad}"


def test_no_import_cycles(modules: dict[str, Path]) -> None:
    graph = module_graph(modules)
    found = cycles(graph)
    assert not found, "import cycles at module level: " + "; ".join(
        _cycle_path(graph, c) for c in found
    )


# --- the rules can fail -----------------------------------------------------------------------

def _fake_tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    """A throw-away `mailguard` package with these files, as all_modules() sees one."""
    out: dict[str, Path] = {}
    for rel, text in files.items():
        path = tmp_path / "mailguard" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in sorted((tmp_path / "mailguard").rglob("*.py")):
        parts = path.relative_to(tmp_path).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    return _fake_tree(tmp_path, {
        "__init__.py": "",
        "checks/__init__.py": "",
        "checks/good.py": "from mailguard import verdict\n",
        "checks/typed.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from mailguard.app import Resources\n"
        ),
        "checks/late.py": "def f():\n    from mailguard.frontend import replies\n",
        "verdict.py": "import dataclasses\n",
        "a.py": "from mailguard import b\n",
        "b.py": "import mailguard.a\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mailguard.d\n",
        "d.py": "import mailguard.c\n\ndef f():\n    import mailguard.e\n",
        "e.py": "import mailguard.d\n",
        "lean/__init__.py": "",
        "lean/queue.py": (
            "import os\nfrom mailguard.control import protocol\n"
            "def f():\n    import mailguard.verdict\n"
        ),
        "control/__init__.py": "",
        "control/protocol.py": "import json\nimport mailguard.b\n",
        "cli.py": "def f():\n    import sqlalchemy.orm\n",
        "store/__init__.py": "import alembic\n",
    })


def test_each_rule_fails_on_a_bad_import(fake: dict[str, Path]) -> None:
    assert checks_violations(fake) == {
        ("mailguard.checks.typed", "mailguard.app"),  # under TYPE_CHECKING: still counts
        ("mailguard.checks.late", "mailguard.frontend"),  # in a function: still counts
    }
    assert lean_violations(fake) == [
        "mailguard.control.protocol:2 reaches mailguard.b",  # reached through the protocol
        "mailguard.lean.queue:4 reaches mailguard.verdict",  # own imports count anywhere
    ]
    assert store_violations(fake) == ["mailguard.cli:2 imports sqlalchemy.orm"]
    graph = module_graph(fake)
    # a <-> b is a cycle; c -> d only under TYPE_CHECKING and d -> e in a function are not
    assert cycles(graph) == [["mailguard.a", "mailguard.b"]]
    assert _cycle_path(graph, ["mailguard.a", "mailguard.b"]) == (
        "mailguard.a -> mailguard.b -> mailguard.a"
    )
