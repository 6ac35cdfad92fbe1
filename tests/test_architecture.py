"""The rings of STYLE.md P1/P2 and §2.2, checked on the AST with the standard library only.

ledger/ ← consensus/ ← node/: the pure rings do no I/O and read no clock, randomness or
environment; inside node/, SQLite, the clock and zeroconf each live in one place.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# §2.2: what ledger/ and consensus/ must never import. `time` and `secrets` are here because
# every use of them reads the clock or the OS's randomness (P2); `os` because it is I/O.
PURE_BANNED = ("node", "asyncio", "aiohttp", "aiosqlite", "sqlite3", "zeroconf", "socket",
               "threading", "logging", "subprocess", "os", "time", "secrets")
# Inside node/: module -> the only paths that may import it.
ONLY_IN = {
    "sqlite3": ("node/store/",), "aiosqlite": ("node/store/",), "zeroconf": ("node/discovery.py",),
    # node/progress.py draws the CLI progress bar of `ats verify-db`: it reads time.monotonic()
    # only to show a rate on a terminal, never for protocol or storage decisions.
    "time": ("node/clock.py", "node/progress.py"),
    # the exporters' clients (docs/fleets.md), each behind its sink
    "asyncpg": ("node/export/postgres.py",), "nats": ("node/export/jetstream.py",),
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path, tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import; `from a import b` also yields `a.b`."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = ".".join(package[: len(package) - n.level + 1] + ((n.module,) if n.module else ()))
            base = base if n.level else n.module or ""
            out += [(n.lineno, base)] + [(n.lineno, f"{base}.{a.name}") for a in n.names]
    return out


def _is(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _pure_violations(path: Path, banned: tuple[str, ...]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = [f"{_rel(path)}:{line} imports {name}" for line, name in _imports(path, tree)
             if any(_is(name, b) for b in banned) or (name.startswith("random.") and name != "random.Random")]
    aliases = {a.asname or a.name: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        # random.Random(seed) is how pure code gets randomness (P2); module functions are banned.
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            if aliases.get(n.value.id) == "random" and n.attr != "Random":
                found.append(f"{_rel(path)}:{n.lineno} uses random.{n.attr}")
            if n.value.id in ("datetime", "date") and n.attr in ("now", "utcnow", "today"):
                found.append(f"{_rel(path)}:{n.lineno} reads the clock with {n.value.id}.{n.attr}")
    return found


def test_ledger_imports_nothing_impure_and_not_consensus() -> None:
    assert [v for p in _modules("ledger") for v in _pure_violations(p, PURE_BANNED + ("consensus",))] == []


def test_consensus_imports_nothing_impure() -> None:
    assert [v for p in _modules("consensus") for v in _pure_violations(p, PURE_BANNED)] == []


def test_node_keeps_sqlite_clock_and_zeroconf_in_their_modules() -> None:
    found = []
    for path in _modules("node"):
        rel = _rel(path)
        for line, name in _imports(path, ast.parse(path.read_text(encoding="utf-8"), rel)):
            for module, allowed in ONLY_IN.items():
                if _is(name, module) and not rel.startswith(allowed):
                    found.append(f"{rel}:{line} imports {name} (only {', '.join(allowed)} may)")
            if rel.startswith("node/api/") and _is(name, "node.store"):
                found.append(f"{rel}:{line} imports {name} (node/api goes through ingest/queries)")
    assert found == []


def test_every_package_and_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = ["ledger", "consensus", "node"] + [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("ledger", "consensus", "node") for p in _modules(pkg) if p.name != "__main__.py"
    ]
    procs = {n: subprocess.Popen([sys.executable, "-c", f"import {n}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for n in dict.fromkeys(names)}
    failures = {n: p.communicate(timeout=60)[1].strip().splitlines()[-1:] for n, p in procs.items()}
    assert {n: err for n, err in failures.items() if procs[n].returncode != 0} == {}


# -- issue 14: one kind registry, no import cycles, small modules and functions --------------

PRODUCT = ("ledger", "consensus", "node")
LINES_MAX = 520
COMPLEXITY_MAX = 20  # radon's cyclomatic complexity

def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _product_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PRODUCT for p in _modules(pkg)}


def kinds_listed(source: str, rel: str) -> list[str]:
    """The collection literals in source that name two or more registered kinds."""
    from ledger.kinds import KINDS

    found = []
    for n in ast.walk(ast.parse(source, rel)):
        items = n.keys if isinstance(n, ast.Dict) else n.elts if isinstance(n, (ast.Tuple, ast.List, ast.Set)) else []
        named = [e.value for e in items if isinstance(e, ast.Constant) and e.value in KINDS]
        if len(named) >= 2:
            found.append(f"{rel}:{n.lineno} lists kinds {named}")
    return found


def kind_lists() -> list[str]:
    """Every collection literal naming two or more registered kinds outside ledger/kinds.py."""
    return [f for path in _product_modules().values() if _rel(path) != "ledger/kinds.py"
            for f in kinds_listed(path.read_text(encoding="utf-8"), _rel(path))]


def test_no_list_of_kind_names_outside_the_kind_registry() -> None:
    """Every list of kinds derives from ledger/kinds.py: a collection literal naming two or more
    registered kinds anywhere else is a list someone must remember to extend, and forgetting one
    silently stops metering it (issue 14)."""
    assert kind_lists() == []
    assert kinds_listed('METERING = ("act", "dat", "cpt")\nstep = {"run.post": 1, "run.void": 2}', "x.py") == [
        "x.py:1 lists kinds ['act', 'dat', 'cpt']", "x.py:2 lists kinds ['run.post', 'run.void']"]  # it sees them


def _import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports, at module level or inside a function (a lazy
    import still makes a cycle): `from a import b` is a.b when that is a module, else a.
    Imports under `if TYPE_CHECKING:` are left out: they never run."""
    modules = _product_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        names = []
        tree = ast.parse(path.read_text(encoding="utf-8"), _rel(path))
        # imports under `if TYPE_CHECKING:` never run: a type named in an annotation is no cycle
        type_only = {id(sub) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
                     for stmt in n.body for sub in ast.walk(stmt)}
        for n in ast.walk(tree):
            if id(n) in type_only:
                continue
            if isinstance(n, ast.Import):
                names += [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = _imports(path, ast.Module(body=[n], type_ignores=[]))[0][1]
                names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in n.names]
        targets = set()
        for dotted in names:
            while dotted and dotted not in modules:
                dotted = dotted.rpartition(".")[0]
            if dotted:
                targets.add(dotted)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_import_cycles_are_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_product_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_no_product_module_is_over_520_lines() -> None:
    long = {rel: n for rel, n in ((_rel(p), len(p.read_text(encoding="utf-8").splitlines()))
                                  for p in _product_modules().values()) if n > LINES_MAX}
    assert long == {}


def test_no_function_is_over_complexity_20() -> None:
    from radon.visitors import ComplexityVisitor

    def blocks(items: list) -> list:
        return [b for item in items for b in [item, *blocks(getattr(item, "closures", []))]]

    found = {}
    for path in _product_modules().values():
        rel = _rel(path)
        visitor = ComplexityVisitor.from_code(path.read_text(encoding="utf-8"))
        functions = visitor.functions + [m for c in visitor.classes for m in c.methods]
        for f in blocks(functions):
            if f.complexity > COMPLEXITY_MAX:
                found[f"{rel}:{f.lineno} {f.fullname}"] = f.complexity
    assert found == {}
