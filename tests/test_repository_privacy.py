"""No committed file holds a checksum-valid INSZ number or a private key: test data is generated."""

from __future__ import annotations

import pathlib
import subprocess

from welfare_exchange.insz import find_insz_shaped

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tracked_texts():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        path = ROOT / name
        if path.is_file():
            yield name, path.read_text(errors="replace")


def test_no_insz_and_no_private_key_in_tracked_files():
    insz_files = [name for name, text in _tracked_texts() if find_insz_shaped(text)]
    key_files = [name for name, text in _tracked_texts() if "PRIVATE KEY-----" in text and "BEGIN" in text
                 and not name.endswith(".py")]
    assert insz_files == [], f"INSZ-shaped numbers committed in: {insz_files}"
    assert key_files == [], f"private keys committed in: {key_files}"
