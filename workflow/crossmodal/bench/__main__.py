"""Run every benchmark module's ``main()`` in turn: ``python -m crossmodal.bench [name ...]``."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import crossmodal.bench as pkg


def main(argv=None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_"))
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"=== {name} ===", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"crossmodal.bench.{name}").main()
        print(f"=== {name}: {time.perf_counter() - t0:.1f} s ===\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
