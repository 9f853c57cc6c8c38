"""tcplb's module graph has no cycle, and every module imports on its own.

The graph counts every import of a tcplb module anywhere in a file (module level or inside a function), except
under ``if TYPE_CHECKING:``: a function-level import that dodges a cycle is still a cycle here. Issue 10's
design: the relay workers sit behind the accounting seam (tcplb/accounting.py), so daemon, lb, stats and
workers import each other one way only; process start-up helpers are in tcplb/procstart.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tcplb"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(source: str) -> set[str]:
    """The tcplb modules (short names) a module's source imports at run time."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and _is_type_checking(ch):
                for e in ch.orelse:
                    visit(e)
                continue
            if isinstance(ch, ast.ImportFrom):
                if ch.level == 1:
                    if ch.module:
                        out.add(ch.module.split(".")[0])
                    else:
                        out.update(a.name for a in ch.names)
                elif ch.level == 0 and ch.module is not None:
                    parts = ch.module.split(".")
                    if parts[0] == "tcplb":
                        if len(parts) > 1:
                            out.add(parts[1])
                        else:
                            out.update(a.name for a in ch.names)
            elif isinstance(ch, ast.Import):
                for a in ch.names:
                    parts = a.name.split(".")
                    if parts[0] == "tcplb" and len(parts) > 1:
                        out.add(parts[1])
            visit(ch)

    visit(ast.parse(source))
    return out


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    files = {p.stem: p for p in pkg.glob("*.py")}
    return {m: {d for d in imports_of(p.read_text()) if d in files and d != m} for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(g[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, sorted(g[w])))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    from .c import X\n"
    )
    (tmp_path / "b.py").write_text("def f() -> None:\n    from .a import g\n")
    (tmp_path / "c.py").write_text("from .a import y\n")
    assert cycles(graph(tmp_path)) == [["a", "b"]]  # a -> c only under TYPE_CHECKING: no cycle there


def test_no_import_cycle_in_tcplb() -> None:
    g = graph()
    assert {"accounting", "procstart", "lb", "workers", "daemon"} <= set(g)
    assert cycles(g) == []
    # the core knows the seam, not the workers or the process start-up
    for core in ("lb", "frontend", "session", "snapshot", "relay", "backend"):
        assert not g[core] & {"workers", "daemon", "procstart"}, (core, g[core])


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    mods = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__main__")
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", f"import tcplb.{m}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for m in mods
    }
    failed = {}
    for m, p in procs.items():
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            failed[m] = out.decode(errors="replace")[-800:]
    assert not failed, failed
