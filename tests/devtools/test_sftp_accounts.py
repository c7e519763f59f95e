"""The dev SFTP server's accounts do not pile up run after run (CI once ran out of group ids)."""
import os
import pwd
import subprocess
import sys

import pytest

from welfare_exchange.devtools import sftp_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")


def _make(name: str, pid: int) -> None:
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--comment", f"{sftp_server._ACCOUNT_MARK}{pid}", name], check=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_accounts_of_an_ended_process_are_swept_and_a_live_ones_are_kept():
    dead = subprocess.Popen(["true"])
    dead.wait()
    _make("wx_99990", dead.pid)
    _make("wx_99991", os.getppid())
    try:
        swept = sftp_server.sweep_stale_accounts()
        assert "wx_99990" in swept and not _exists("wx_99990")
        assert _exists("wx_99991")
    finally:
        for name in ("wx_99990", "wx_99991"):
            subprocess.run(["userdel", name], capture_output=True)


def test_an_account_made_by_the_server_is_removed_when_its_process_exits(tmp_path):
    script = ("from welfare_exchange.devtools import sftp_server as s; "
              "s._ensure_system_account('wx_99992'); import pwd; pwd.getpwnam('wx_99992')")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not _exists("wx_99992")


def test_an_account_two_processes_hold_stays_until_the_last_one_exits():
    holder = subprocess.Popen([sys.executable, "-c", (
        "from welfare_exchange.devtools import sftp_server as s; s._ensure_system_account('wx_99993'); "
        "import sys; print('made', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "made"
        # A second process takes the same account and exits first: the account stays for the holder.
        subprocess.run([sys.executable, "-c", "from welfare_exchange.devtools import sftp_server as s; "
                        "s._ensure_system_account('wx_99993')"], check=True)
        assert _exists("wx_99993")
    finally:
        holder.communicate("")
    assert not _exists("wx_99993")
