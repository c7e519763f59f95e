"""Shared pieces of the benchmarks: the cached synthetic store."""

from __future__ import annotations

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bench_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("WELFARE_EXCHANGE_HOME", ROOT / "var")) / "bench"


def cached_store(children: int, seed: int) -> pathlib.Path:
    """The generated store for (children, seed), generated once into ``var/bench/``.

    Generating 2,000,000 children takes a few minutes; every benchmark shares the same file.
    """
    from welfare_exchange.db import upgrade
    from welfare_exchange.db.engine import dispose_engines
    from welfare_exchange.entitlements import generate

    path = bench_home() / f"store-{children}-seed{seed}.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".db.tmp")
    for leftover in (tmp, pathlib.Path(f"{tmp}-wal"), pathlib.Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    url = f"sqlite:///{tmp}"
    upgrade(url)
    print(f"   generating a {children:,}-child store (seed {seed}); cached for later runs", flush=True)
    generate(children, seed, url=url, progress=False)
    dispose_engines()  # checkpoints the WAL into the file before it is renamed
    os.replace(tmp, path)
    return path
