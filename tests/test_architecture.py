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
