"""Print the figures tests/test_architecture.py bounds (issue 14): module sizes, cyclomatic
complexity (radon), import cycles and lists of kind names outside ledger/kinds.py.

    PYTHONPATH=$PWD python scripts/code_health.py [--lines 500] [--complexity 15]

It reports every product module and function over the given figures, with no allowlist, so
the files the tests still allow show up here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radon.visitors import ComplexityVisitor  # noqa: E402

from tests import test_architecture as arch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=500, help="list modules longer than this (default 500)")
    p.add_argument("--complexity", type=int, default=15, help="list functions more complex than this (default 15)")
    args = p.parse_args()
    modules = arch._product_modules()
    sizes = sorted(((len(path.read_text(encoding="utf-8").splitlines()), arch._rel(path)) for path in modules.values()),
                   reverse=True)
    print(f"modules: {len(sizes)}, lines: {sum(n for n, _ in sizes)}, longest: {sizes[0][1]} ({sizes[0][0]})")
    for n, rel in sizes:
        if n > args.lines:
            print(f"  over {args.lines} lines: {rel} {n}")
    worst = []
    for path in modules.values():
        visitor = ComplexityVisitor.from_code(path.read_text(encoding="utf-8"))
        for f in visitor.functions + [m for c in visitor.classes for m in c.methods]:
            worst.append((f.complexity, f"{arch._rel(path)}:{f.lineno} {f.fullname}"))
    worst.sort(reverse=True)
    print(f"functions: {len(worst)}, most complex: {worst[0][1]} ({worst[0][0]})")
    for cc, where in worst:
        if cc > args.complexity:
            print(f"  complexity over {args.complexity}: {where} {cc}")
    cycles = arch._cycles(arch._import_graph())
    print(f"import cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    lists = arch.kind_lists()
    print(f"lists of kind names outside ledger/kinds.py: {len(lists)}" + "".join(f"\n  {f}" for f in lists))
    return 0


if __name__ == "__main__":
    sys.exit(main())
