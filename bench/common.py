"""Shared pieces of the benchmarks: the cached synthetic store."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bench_home() -> pathlib.Path:
    """``var/bench`` (under ``WELFARE_EXCHANGE_HOME``, as everything the project writes)."""
    from welfare_exchange.settings import get_settings

    return get_settings().home / "bench"


def fresh_sqlite(path: pathlib.Path, revision: str = "head") -> str:
    """A new SQLite project database at ``path`` (leftovers removed), migrated to ``revision``; its URL."""
    from welfare_exchange.db import upgrade

    for leftover in (path, pathlib.Path(f"{path}-wal"), pathlib.Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url, revision)
    return url


def timed_child(code: str, url: str) -> tuple[float, float, str]:
    """Run ``code`` in a child Python with the project DB at ``url``: (seconds, its peak RSS in MB, its output)."""
    script = (
        "import resource, time\n"
        f"{code}\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    env = {**os.environ, "WELFARE_EXCHANGE_DB_URL": url, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return time.perf_counter() - started, float(lines[-1]), "\n".join(lines[:-1])


def cached_store(children: int, seed: int) -> pathlib.Path:
    """The generated store for (children, seed), generated once into ``var/bench/``.

    Generating 2,000,000 children takes under a minute; every benchmark shares the same file,
    migrated to the current schema whenever it is handed out.
    """
    from welfare_exchange.db import upgrade
    from welfare_exchange.db.engine import dispose_engines
    from welfare_exchange.entitlements import generate

    path = bench_home() / f"store-{children}-seed{seed}.db"
    if path.exists():  # made by an earlier version of the schema, perhaps: bring it up to date
        upgrade(f"sqlite:///{path}")
        dispose_engines()
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


def process_tree(pid: int) -> list:
    """``pid``'s process and all its descendants (``psutil.Process``), or none when it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class MemorySampler(threading.Thread):
    """Samples the memory of every process under some root pids until :meth:`stop`.

    Keeps, for the largest single process, its peak RSS and its peak *own* memory (RSS minus
    shared, file-backed pages): SQLite reads the store through a memory map, and those pages —
    the OS page cache, shared with every reader — count in RSS. And the peak of the whole tree's
    own memory. ``pids`` is called on every sample (processes come and go).
    """

    def __init__(self, pids: Callable[[], Iterable[int]], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak_rss = self.peak_own = self.peak_own_total = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            total = 0
            for pid in self.pids():
                for proc in process_tree(pid):
                    try:
                        info = proc.memory_info()
                    except psutil.Error:
                        continue
                    own = info.rss - info.shared
                    self.peak_rss, self.peak_own = max(self.peak_rss, info.rss), max(self.peak_own, own)
                    total += own
            self.peak_own_total = max(self.peak_own_total, total)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def report(self) -> dict[str, int]:
        """Megabytes: ``largest_process_own``, ``largest_process_rss``, ``all_processes_own``."""
        mb = 2**20
        return {"largest_process_own": round(self.peak_own / mb), "largest_process_rss": round(self.peak_rss / mb),
                "all_processes_own": round(self.peak_own_total / mb)}
