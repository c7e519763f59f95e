"""`make up` as a newcomer meets it: where to log in, and the CLI pointed at its data.

Runs ``python -m welfare_exchange.devtools.up`` (what `make up` runs) in a subprocess with its
own workspace under ``var/`` (sshd refuses a chroot below ``/tmp``), its own Airflow home and a
free port, reads what it prints, follows it — logs in with the password from the file it
names, runs the CLI command it prints in a fresh shell — and stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from welfare_exchange.devtools.airflow_server import free_port
from welfare_exchange.insz import find_insz_shaped
from welfare_exchange.settings import REPO_ROOT


def _wait_for_line(log: Path, proc: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if marker in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"`make up` exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"`make up` did not print {marker!r} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.sftp
def test_make_up_says_where_to_log_in_and_how_to_point_the_cli_at_its_data(tmp_path):
    workspace = REPO_ROOT / "var" / f"test-up-{uuid.uuid4().hex[:8]}"
    airflow_home = tmp_path / "airflow"
    port = free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "welfare_exchange.devtools.up", "--workspace", str(workspace),
             "--airflow-home", str(airflow_home), "--port", str(port), "--children", "2000"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            output = _wait_for_line(log, proc, "Ctrl-C stops everything", timeout=420)

            # Where to log in: the URL, the user, the password's file — never the password.
            assert f"log in at http://127.0.0.1:{port}/  user: admin" in output
            [password_file] = re.findall(r"password \(generated, not printed\): cat (\S+)", output)
            password = json.loads(Path(password_file).read_text())["admin"]
            assert password not in output
            token = httpx.post(f"http://127.0.0.1:{port}/auth/token", json={"username": "admin", "password": password})
            assert token.status_code == 201, token.text
            assert f"http://127.0.0.1:{port}/plugin/welfare-exchanges" in output

            # The CLI command it prints, in a newcomer's fresh shell, sees the workspace's protocol.
            [command] = re.findall(r"^  (cd .* welfare-exchange protocol list)$", output, flags=re.MULTILINE)
            assert f"WELFARE_EXCHANGE_HOME=var/{workspace.name} " in command
            shell = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
            listed = subprocess.run(["bash", "-c", command], env=shell, capture_output=True, text=True, timeout=120)
            assert listed.returncode == 0, listed.stderr[-2000:]
            assert re.search(r"44021\s+Gent\s+method1\s+sftp\s+signed", listed.stdout), listed.stdout
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(workspace, ignore_errors=True)
    output = log.read_text()
    assert proc.returncode == 0, output[-2000:]
    assert "stopping Airflow and the SFTP server" in output
    assert not find_insz_shaped(output)
