"""Intake of a 200,000-row Agile-encrypted request: the project's path beside the naive one.

Both paths decrypt, read and (for ours) validate the same synthetic file, each in a fresh
subprocess so that its time and peak RSS are its own: the project's ``read_request`` (python-
calamine, fast-path validation) and the naive path (msoffcrypto decrypt + pandas
``read_excel`` with openpyxl, ``dtype=str``; where pandas is not installed, the openpyxl
read-only load that read_excel performs underneath). Targets: ≥ 5× faster than naive, < 3 s, peak
RSS < 600 MB. The file and its password are generated for the run and deleted after it.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = 200_000
AS_OF = dt.date(2025, 6, 30)

# Each child reads the file, runs one path, and prints seconds, peak RSS and a row count.
_CHILD = r"""
import io, json, os, resource, sys, time, datetime as dt
path, kind = sys.argv[1], sys.argv[2]
password = os.environ["BENCH_INTAKE_PASSWORD"]
data = open(path, "rb").read()
started = time.perf_counter()
if kind == "project":
    from welfare_exchange.intake import read_request
    result = read_request(data, password, as_of=dt.date.fromisoformat(sys.argv[3]))
    rows = result.report.rows
else:
    import msoffcrypto
    office = msoffcrypto.OfficeFile(io.BytesIO(data))
    office.load_key(password=password, verify_password=True)
    plain = io.BytesIO()
    office.decrypt(plain)
    plain.seek(0)
    try:
        import pandas
    except ModuleNotFoundError:
        pandas = None
    if pandas is not None:
        rows = len(pandas.read_excel(plain, engine="openpyxl", dtype=str))
    else:
        # What read_excel(engine="openpyxl", dtype=str) does underneath, minus the DataFrame.
        import openpyxl
        book = openpyxl.load_workbook(plain, read_only=True, data_only=True, keep_links=False)
        values = [["" if v is None else str(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
        rows = len(values) - 1
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "rows": rows}))
"""


def _corpus():
    spec = importlib.util.spec_from_file_location("bench_corpus", ROOT / "scripts" / "corpus" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path: pathlib.Path, kind: str, password: str) -> dict:
    env = dict(os.environ, BENCH_INTAKE_PASSWORD=password, PYTHONPATH=str(ROOT / "include"))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), kind, AS_OF.isoformat()],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} path failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> dict:
    """Measure both paths on one generated file; print a table and return the figures."""
    corpus = _corpus()
    password = corpus.new_password()
    plain, _ = corpus.big_request(ROWS, AS_OF)
    encrypted = corpus.encrypt_agile(plain, password)
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as folder:
        path = pathlib.Path(folder) / "request.xlsx"
        path.write_bytes(encrypted)
        project = _run(path, "project", password)
        naive = _run(path, "naive", password)
    try:
        import pandas  # noqa: F401
        naive_label = "naive (pandas read_excel openpyxl)"
    except ModuleNotFoundError:
        naive_label = "naive (openpyxl, no pandas here)"
    assert project["rows"] == naive["rows"] == ROWS, "both paths must read every row"
    ratio = naive["seconds"] / project["seconds"]
    print(f"{'path':<34}{'seconds':>10}{'peak RSS MB':>14}")
    print(f"{'read_request (calamine)':<34}{project['seconds']:>10.2f}{project['peak_rss_mb']:>14.0f}")
    print(f"{naive_label:<34}{naive['seconds']:>10.2f}{naive['peak_rss_mb']:>14.0f}")
    print(f"speed-up {ratio:.1f}x (target >= 5x); project path target < 3 s and < 600 MB")
    return {
        "rows": ROWS,
        "file_mb": round(len(encrypted) / 1e6, 2),
        "project_seconds": round(project["seconds"], 3),
        "project_peak_rss_mb": round(project["peak_rss_mb"], 1),
        "naive_path": naive_label,
        "naive_seconds": round(naive["seconds"], 3),
        "naive_peak_rss_mb": round(naive["peak_rss_mb"], 1),
        "speedup": round(ratio, 2),
        "meets_targets": ratio >= 5 and project["seconds"] < 3 and project["peak_rss_mb"] < 600,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
