"""`make demo` end to end: the Method 1 DAG of a signed protocol runs through a real scheduler.

Slow (~1 min): the demo builds its own workspace (project DB, store, OpenSSH SFTP server,
Airflow home), so it runs in a subprocess exactly as `make demo` does, in a private folder
under ``var/`` (sshd refuses a chroot below ``/tmp``). Nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.pii_scan import assert_no_insz_in_files
from welfare_exchange.insz import find_insz_shaped


@pytest.mark.slow
@pytest.mark.sftp
def test_demo_runs_the_exchange_through_the_scheduler():
    workspace = Path(os.environ["WELFARE_EXCHANGE_HOME"]) / f"test-demo-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "welfare_exchange.devtools.demo", "--workspace", str(workspace), "--children", "5000"],
            capture_output=True, text=True, timeout=600, check=False,
        )
        output = done.stdout + done.stderr
        assert not find_insz_shaped(output), "the demo printed an INSZ-shaped number"
        assert done.returncode == 0, output[-3000:]
        assert "task deliver_result: success" in output
        assert "audit chain intact" in output
        assert "demo finished" in output
        assert_no_insz_in_files(workspace / "airflow" / "logs")
        # Nothing it started is left running: no process works in its workspace.
        leftovers = [p for p in Path("/proc").glob("[0-9]*") if _cwd(p).startswith(str(workspace))]
        assert not leftovers
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _cwd(proc: Path) -> str:
    try:
        return os.readlink(proc / "cwd")
    except OSError:
        return ""
