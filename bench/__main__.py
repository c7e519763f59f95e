"""``make bench``: run every ``bench/bench_*.py`` and print its figures.

Each benchmark module has a ``main() -> dict`` that measures the project's path beside a
baseline in the same run and reports ratios, never pass/fail on absolute time. The results
are also written to ``var/bench/results.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def main() -> int:
    only = set(sys.argv[1:])
    results = {}
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        results[name] = importlib.import_module(f"bench.{name}").main()
    out = pathlib.Path(os.environ.get("WELFARE_EXCHANGE_HOME", "var")) / "bench" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Running one benchmark keeps the others' last figures.
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2, default=str))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
