"""A real OpenSSH SFTP server on loopback, for the tests and the demo.

Not a mock: Debian's ``/usr/sbin/sshd`` runs with its own ``sshd_config``, listening on
``127.0.0.1`` only, on a free port, with a host key generated at first start (never committed).
The same server code path the agency runs in production — chroot, ``internal-sftp``,
public-key authentication, host-key pinning — is what the tests exercise.

Account model
-------------
The agency runs the SFTP server; each municipality (identified by its 5-digit NIS code)
gets **two system accounts**, both confined to the municipality's directory:

* ``wx_<nis>``, the **municipality's** login (its key only), and ``wxa_<nis>``, the
  **agency's** login for that municipality (used by Airflow through the ``sftp_<nis>``
  connection; its key only). The agency never holds one key that opens every municipality's
  directory: a leaked Gent connection cannot touch Antwerp's files; either key can be revoked
  on its own.
* ``Match User`` → ``ChrootDirectory <root>/municipalities/<nis>`` and ``ForceCommand
  internal-sftp``: no shell, no forwarding, no way out of the chroot. The chroot directory
  is root-owned 755 (sshd requires it).

**Rights per directory**, as a managed-file-transfer server gives them, by ownership and mode
(the agency's account owns the folders; the municipality's account is in their group only
where it needs to be):

=============== ============================== ===========================================
directory       municipality (``wx_<nis>``)    agency (``wxa_<nis>``)
=============== ============================== ===========================================
``inbox/``      upload, rename, list, delete   list, read, move out (``wxa:wx 2770``)
``outbox/``     list, read, delete             upload, rename, read, delete (``wxa:wx 2770``)
``received/``   nothing                        everything (``wxa:wxa 0700``)
``quarantine/`` nothing                        everything (``wxa:wxa 0700``)
=============== ============================== ===========================================

Both sessions run with umask 027 (files 640), so the agency reads what the municipality
uploads and the municipality reads results (the group bit, set-gid folders). The
municipality's session may not make directories, symlinks or hard links (``-P``). POSIX
gives one right, "write on the folder", for both creating and deleting files, so a
municipality that may delete results in ``outbox/`` could also create files there: the
municipalities log in on a listener of their own whose sshd runs in a Landlock domain where
files can be created only in an ``inbox/`` (see :class:`SftpServer`). The agency's accounts
log in on the other listener, as before.

**Concurrency.** 285 municipalities and the agency's workers connect at the same time;
OpenSSH's defaults (``MaxStartups 10:30:100``) drop new connections from the tenth
unauthenticated one on. The server allows :data:`MAX_STARTUPS` and :data:`MAX_SESSIONS`;
the agency's client also retries a refused handshake
(:func:`welfare_exchange.transport.sftp.handshake_refused`).

Layout under the server root (keep it in a git-ignored folder such as ``var/``; its path and
every parent must be root-owned and not group/world-writable, which rules out ``/tmp``,
because sshd refuses a chroot below such a directory)::

    sshd_config, sshd.pid, sshd.log
    host_keys/ssh_host_ed25519_key(.pub)
    authorized_keys/wx_<nis>, wxa_<nis>   (one file per account, read by sshd as the user)
    keys/<nis>/agency_ed25519(.pub)       (mode 600)
    keys/<nis>/municipality_ed25519(.pub) (mode 600)
    municipalities/<nis>/{inbox,received,outbox,quarantine}

Run it in the foreground for the demo::

    python -m welfare_exchange.devtools.sftp_server --root var/sftp --nis 44021 --nis 11002

It prints the ``AIRFLOW_CONN_SFTP_<NIS>`` lines for the agency side and stops on Ctrl-C.
Creating system accounts needs root: this module is for dev and CI machines.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import grp
import json
import logging
import os
import posixpath
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from welfare_exchange.settings import REPO_ROOT, get_settings
from welfare_exchange.transport.sftp import conn_id_for

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
#: The launcher that runs the municipalities' sshd under Landlock (shared with the compose service).
LANDLOCK_EXEC = REPO_ROOT / "docker" / "sftp" / "landlock_exec.py"
HOST = "127.0.0.1"
ACCOUNT_PREFIX = "wx_"
AGENCY_ACCOUNT_PREFIX = "wxa_"
REMOTE_DIRS = ("inbox", "received", "outbox", "quarantine")
#: sshd's limit on unauthenticated connections, ``start:rate:full``: random early drop from 300
#: at once, every new one dropped at 600 — room for all 285 municipalities and the workers
#: connecting together (OpenSSH's default, 10:30:100, refuses from the tenth).
MAX_STARTUPS = "300:30:600"
#: Channels per connection (OpenSSH's default 10): clients open one SFTP session per connection.
MAX_SESSIONS = 10
#: Directory → (owner is the agency, group is the municipality's, mode). See the module doc.
DIRECTORY_RIGHTS = {
    "inbox": ("agency", "municipality", 0o2770),
    "outbox": ("agency", "municipality", 0o2770),
    "received": ("agency", "agency", 0o700),
    "quarantine": ("agency", "agency", 0o700),
}
#: internal-sftp of a session: start at the chroot's top ("inbox" is a valid path), umask 027.
AGENCY_SFTP = "internal-sftp -d / -u 0027"
#: The municipality's session also may not make directories or links.
MUNICIPALITY_SFTP = "internal-sftp -d / -u 0027 -P mkdir,rmdir,symlink,hardlink"
_NIS = re.compile(r"^[0-9]{5}$")


def _chroot_safe(folder: Path) -> bool:
    """True when sshd accepts a chroot below ``folder``: every ancestor root-owned, not g/o-writable."""
    for part in [folder, *folder.parents]:
        if not part.exists():
            continue
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def chroot_capable_root(preferred: Path | str) -> Path:
    """``preferred`` when sshd can chroot below it, else a folder under ``/srv/welfare-exchange``.

    A checkout under ``/tmp`` (world-writable) cannot hold chroot directories, however its own
    folders are set: the server then lives in ``/srv/welfare-exchange/<hash of preferred>``,
    still one folder per checkout and purpose.
    """
    preferred = Path(preferred).resolve()
    if _chroot_safe(preferred):
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    fallback = Path("/srv/welfare-exchange") / f"{preferred.name}-{digest}"
    fallback.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(fallback.parent, 0o755)
    return fallback


class SftpServerError(RuntimeError):
    """The local SFTP server could not be set up, started or reached."""


def _check_nis(nis: str) -> str:
    # The NIS code ends up in a user name, a path and sshd_config: accept digits only.
    if not isinstance(nis, str) or not _NIS.match(nis):
        raise ValueError(f"a NIS code is 5 digits (e.g. '44021'), got {nis!r}")
    return nis


@dataclass(frozen=True)
class Account:
    """One municipality's confined account on the server.

    :param nis: the municipality's NIS code.
    :param username: the municipality's system account, ``wx_<nis>``.
    :param agency_username: the agency's system account for it, ``wxa_<nis>``.
    :param agency_key: private key the agency (Airflow) logs in with.
    :param municipality_key: private key the municipality logs in with.
    :param chroot: the accounts' chroot directory on the server's disk.
    :param conn_id: Airflow connection id of the agency side.
    """

    nis: str
    username: str
    agency_username: str
    agency_key: Path
    municipality_key: Path
    chroot: Path
    conn_id: str

    #: Remote paths as seen by the account (relative to its chroot, where a session starts).
    inbox: str = "inbox"
    outbox: str = "outbox"
    received: str = "received"
    quarantine: str = "quarantine"

    def local_dir(self, remote_dir: str) -> Path:
        """The server-side folder behind a remote directory (for tests that inspect the disk)."""
        return self.chroot / remote_dir.strip("/")


class _Listener:
    """One sshd process of the server: its config, pid file, log and process."""

    def __init__(self, name: str, config_path: Path, pid_path: Path, log_path: Path) -> None:
        self.name = name
        self.config_path, self.pid_path, self.log_path = config_path, pid_path, log_path
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, lines: list[str]) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.config_path)
        result = subprocess.run([SSHD, "-t", "-f", str(self.config_path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise SftpServerError(f"sshd rejects {self.config_path}: {result.stderr.strip()}")

    def spawn(self, prefix: list[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        self._log_fh = open(self.log_path, "ab")
        # -D: stay in the foreground so the Popen pid is the listener; -e: log to our file.
        self.proc = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=self._log_fh, start_new_session=True,
        )
        self.wait_ready()

    def reload(self) -> None:
        # On SIGHUP sshd re-executes itself and writes its pid file again once it listens:
        # remove the file first so its reappearance tells us the new config is live.
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        os.kill(self.proc.pid, signal.SIGHUP)
        self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SftpServerError(f"sshd ({self.name}) exited with code {self.proc.returncode}: {self.log_tail()}")
            if self.pid_path.exists() and _banner(self.port):
                return
            time.sleep(0.05)
        raise SftpServerError(f"sshd ({self.name}) did not listen on {HOST}:{self.port} within {timeout:.0f} s: "
                              f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def signal_all(self, sig: int, grace: float, *, sessions: bool = True) -> None:
        """Signal the listener (and, with ``sessions``, every session it serves); wait for it to go."""
        if self.proc is None:
            return
        procs = _descendants(self.proc.pid) if sessions and self.proc.poll() is None else []
        # Session processes call setsid(), so a process-group kill would miss them: signal the
        # listener and every descendant found before it dies (they are then re-parented).
        for pid in [self.proc.pid, *procs]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=grace)
        deadline = time.monotonic() + grace
        for pid in procs:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        # Wait until the port is free again so an immediate restart can bind it.
        deadline = time.monotonic() + grace
        while self.port and _banner(self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)


class SftpServer:
    """OpenSSH on 127.0.0.1 serving chrooted SFTP accounts, two per municipality.

    Two sshd processes share the host key and the directories: the **agency's** listener
    (:attr:`port`; only the ``wxa_<nis>`` accounts may log in — in production the internal
    interface the workers use) and the **municipalities'** listener
    (:attr:`municipality_port`; only ``wx_<nis>``). The municipalities' sshd runs in a Landlock
    domain (``docker/sftp/landlock_exec.py``, the same launcher as the compose service) in
    which no file can be created except in an ``inbox/``: a municipality deletes results in
    its ``outbox/`` but cannot upload there. On a kernel without Landlock it runs without that
    restriction and :attr:`outbox_uploads_refused` is ``False`` (a warning is logged).

    :param root: folder for config, keys, logs and the municipalities' directories.
    :param port: the agency listener's TCP port; a free one is picked at the first start when ``None``.
    :param municipality_port: the municipalities' listener's port; likewise.
    :param max_startups: sshd's ``MaxStartups`` (tests lower it to provoke refused handshakes).
    :param max_sessions: sshd's ``MaxSessions``.
    """

    def __init__(self, root: Path | str, port: int | None = None, *, municipality_port: int | None = None,
                 max_startups: str = MAX_STARTUPS, max_sessions: int = MAX_SESSIONS) -> None:
        if not re.fullmatch(r"[0-9]+(:[0-9]+:[0-9]+)?", max_startups):
            raise ValueError(f"MaxStartups is 'N' or 'start:rate:full', got {max_startups!r}")
        self.root = Path(root).resolve()
        self.max_startups = max_startups
        self.max_sessions = int(max_sessions)
        self._accounts: dict[str, Account] = {}
        self._agency = _Listener("agency", self.root / "sshd_config", self.root / "sshd.pid", self.root / "sshd.log")
        self._municipal = _Listener("municipalities", self.root / "sshd_config.municipalities",
                                    self.root / "run" / "sshd.pid", self.root / "sshd.municipalities.log")
        self._agency.port, self._municipal.port = port, municipality_port
        self.outbox_uploads_refused = False

    # ------------------------------------------------------------------ paths
    @property
    def port(self) -> int | None:
        """The agency's listener (the Airflow connections)."""
        return self._agency.port

    @property
    def municipality_port(self) -> int | None:
        """The municipalities' listener."""
        return self._municipal.port

    @property
    def config_path(self) -> Path:
        return self._agency.config_path

    @property
    def pid_path(self) -> Path:
        return self._agency.pid_path

    @property
    def log_path(self) -> Path:
        """The agency listener's log (its sessions: the Airflow side)."""
        return self._agency.log_path

    @property
    def municipality_log_path(self) -> Path:
        return self._municipal.log_path

    @property
    def host_key_path(self) -> Path:
        return self.root / "host_keys" / "ssh_host_ed25519_key"

    @property
    def host_key_line(self) -> str:
        """The host public key, ``"ssh-ed25519 AAAA…"``, to pin in the Airflow connection."""
        parts = self.host_key_path.with_suffix(".pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    @property
    def pid(self) -> int | None:
        """Process id of the agency's listening sshd, or ``None`` when not running."""
        return self._agency.proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._agency.running and self._municipal.running

    @property
    def accounts(self) -> dict[str, Account]:
        return dict(self._accounts)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> SftpServer:
        """Write the configs, generate missing keys and start both listeners; returns once they accept.

        :raises SftpServerError: sshd is missing, the root is unsafe for a chroot, or sshd
            did not come up (the error carries the tail of its log).
        """
        if self.running:
            return self
        if not os.path.isfile(SSHD):
            raise SftpServerError(
                f"{SSHD} not found: install Debian's openssh-server (`make system-deps` does it)"
            )
        if os.geteuid() != 0:
            raise SftpServerError("the SFTP dev server creates system accounts and chroots: run it as root")
        self._prepare_root()
        # sshd's privilege-separation directory; absent in containers without systemd.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if not self.host_key_path.exists():
            self.host_key_path.parent.mkdir(mode=0o700, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "welfare-exchange-dev-host",
                  "-f", str(self.host_key_path)])
        for listener in (self._agency, self._municipal):
            if listener.port is None:
                listener.port = _free_port()
        self._write_config()
        if not self._agency.running:
            self._agency.spawn([])
        if not self._municipal.running:
            self._spawn_municipal()
        return self

    def _spawn_municipal(self) -> None:
        # Landlock rules are fixed when the domain is made: a new inbox needs a new listener.
        folders = [self._municipal.pid_path.parent, *(a.local_dir(a.inbox) for a in self._accounts.values())]
        self.outbox_uploads_refused = landlock_available()
        if not self.outbox_uploads_refused:
            log.warning("this kernel has no Landlock: the municipalities' sshd runs without it, so a municipality "
                        "could create files in its outbox/ (deleting there is allowed either way)")
        prefix = [sys.executable, str(LANDLOCK_EXEC), "--best-effort"]
        for folder in folders:
            prefix += ["--create-in", str(folder)]
        self._municipal.spawn([*prefix, "--"])

    def stop(self) -> None:
        """Stop both listeners and the sessions they serve (SIGTERM, then SIGKILL after 5 s)."""
        for listener in (self._municipal, self._agency):
            listener.signal_all(signal.SIGTERM, grace=5.0)

    def kill(self) -> None:
        """Kill both listeners and every session process with SIGKILL, as a crash would.

        Open transfers break mid-stream; files being written stay as they were.
        """
        for listener in (self._municipal, self._agency):
            listener.signal_all(signal.SIGKILL, grace=5.0)

    def restart(self) -> SftpServer:
        """Stop (if running) and start again on the same ports with the same host key."""
        self.stop()
        return self.start()

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------- municipalities
    def add_municipality(self, nis: str) -> Account:
        """Create (idempotently) a municipality's two accounts, keys and directories.

        When the server is running it reloads its config (SIGHUP) so the accounts can log in
        at once; the call returns when sshd listens again.

        :param nis: the municipality's 5-digit NIS code.
        """
        return self.add_municipalities([nis])[0]

    def add_municipalities(self, nis_codes: list[str]) -> list[Account]:
        """:meth:`add_municipality` for several, with one reload of a running server."""
        accounts, added = [], False
        for nis in nis_codes:
            nis = _check_nis(nis)
            if nis not in self._accounts:
                self._accounts[nis] = self._create_accounts(nis)
                added = True
            accounts.append(self._accounts[nis])
        if added and self.running:
            self._reload()
        return accounts

    def _create_accounts(self, nis: str) -> Account:
        self._prepare_root()
        username, agency_username = ACCOUNT_PREFIX + nis, AGENCY_ACCOUNT_PREFIX + nis
        municipality = _ensure_system_account(username)
        agency = _ensure_system_account(agency_username, member_of=username)
        owners = {"agency": agency.pw_uid, "municipality": municipality.pw_uid}
        groups = {"agency": agency.pw_gid, "municipality": grp.getgrnam(username).gr_gid}
        chroot = self.root / "municipalities" / nis
        # sshd requires the chroot itself to be root-owned and not writable by anyone else;
        # the accounts write only in the folders inside it, each with its own rights.
        chroot.mkdir(parents=True, exist_ok=True)
        os.chown(chroot, 0, 0)
        os.chmod(chroot, 0o755)
        for name, (owner, group, mode) in DIRECTORY_RIGHTS.items():
            folder = chroot / name
            folder.mkdir(exist_ok=True)
            os.chown(folder, owners[owner], groups[group])
            os.chmod(folder, mode)
        keys_dir = self.root / "keys" / nis
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(keys_dir, 0o700)
        for role, account in (("agency", agency_username), ("municipality", username)):
            key = keys_dir / f"{role}_ed25519"
            if not key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{role}@{nis}", "-f", str(key)])
            os.chmod(key, 0o600)
            os.chmod(key.with_suffix(".pub"), 0o600)
            auth_file = self.root / "authorized_keys" / account
            # sshd reads this file as the account (temporarily dropping to its uid): world-readable,
            # root-owned so the account cannot add keys of its own. One key: its own.
            auth_file.write_text(key.with_suffix(".pub").read_text().strip() + "\n")
            os.chown(auth_file, 0, 0)
            os.chmod(auth_file, 0o644)
        return Account(
            nis=nis, username=username, agency_username=agency_username,
            agency_key=keys_dir / "agency_ed25519", municipality_key=keys_dir / "municipality_ed25519",
            chroot=chroot, conn_id=conn_id_for(nis),
        )

    def account(self, nis: str) -> Account:
        """The account registered for a municipality.

        :param nis: the municipality's NIS code.
        :raises SftpServerError: no account was added for it.
        """
        try:
            return self._accounts[_check_nis(nis)]
        except KeyError:
            raise SftpServerError(f"municipality {nis} has no account on this server: call add_municipality") from None

    # ------------------------------------------------------ Airflow connection
    def airflow_connection(self, nis: str) -> dict:
        """The agency side's Airflow connection for a municipality, as a JSON-ready dict.

        The host key is pinned (``host_key`` extra): no ``no_host_key_check``. ``look_for_keys``
        is off so the hook authenticates with this municipality's agency key only.

        :param nis: the municipality's NIS code.
        """
        account = self.account(nis)
        if self.port is None:
            raise SftpServerError("the server has no port yet: start it first")
        return {
            "conn_type": "sftp",
            "host": HOST,
            "port": self.port,
            "login": account.agency_username,
            "extra": {
                "key_file": str(account.agency_key),
                "host_key": self.host_key_line,
                "look_for_keys": "false",
                "conn_timeout": 10,
            },
        }

    def connection_json(self, nis: str) -> str:
        """:meth:`airflow_connection` serialised, the value of ``AIRFLOW_CONN_SFTP_<NIS>``."""
        return json.dumps(self.airflow_connection(nis))

    def connection_uri(self, nis: str) -> str:
        """The same connection in Airflow's URI form (``sftp://user@host:port/?extras``)."""
        conn = self.airflow_connection(nis)
        query = urllib.parse.urlencode({k: str(v) for k, v in conn["extra"].items()})
        return f"sftp://{conn['login']}@{conn['host']}:{conn['port']}/?{query}"

    def env_var(self, nis: str) -> tuple[str, str]:
        """``(name, value)`` of the environment variable that defines the connection."""
        return f"AIRFLOW_CONN_{conn_id_for(nis).upper()}", self.connection_json(nis)

    def export_connection(self, nis: str, environ: dict | None = None) -> str:
        """Set ``AIRFLOW_CONN_SFTP_<NIS>`` in ``environ`` (default ``os.environ``); returns the conn id.

        Tests should prefer ``monkeypatch.setenv(*server.env_var(nis))``.
        """
        name, value = self.env_var(nis)
        (os.environ if environ is None else environ)[name] = value
        return conn_id_for(nis)

    # ------------------------------------------------------ municipality side
    @contextlib.contextmanager
    def municipality_sftp(self, nis: str, *, key: Path | None = None) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session as the municipality itself (its own key, host key pinned).

        :param nis: the municipality's NIS code.
        :param key: log in with this private key instead (e.g. another municipality's key,
            to test confinement).
        """
        account = self.account(nis)
        with self._sftp_session(account.username, key or account.municipality_key) as session:
            yield session

    @contextlib.contextmanager
    def agency_sftp(self, nis: str) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session as the agency's account for a municipality (its key, host key pinned)."""
        account = self.account(nis)
        with self._sftp_session(account.agency_username, account.agency_key) as session:
            yield session

    @contextlib.contextmanager
    def _sftp_session(self, username: str, key: Path) -> Iterator[paramiko.SFTPClient]:
        client = self.ssh_client(username, key)
        try:
            yield client.open_sftp()
        finally:
            client.close()

    def ssh_client(self, username: str, key: Path, *, port: int | None = None) -> paramiko.SSHClient:
        """A connected paramiko client that verifies the pinned host key and uses only ``key``.

        :param port: default the listener of the account's kind: the municipalities' one for
            ``wx_<nis>``, the agency's for ``wxa_<nis>``.
        """
        if port is None:
            port = self.port if username.startswith(AGENCY_ACCOUNT_PREFIX) else self.municipality_port
        client = paramiko.SSHClient()
        host_type, host_b64 = self.host_key_line.split()
        client.get_host_keys().add(f"[{HOST}]:{port}", host_type, paramiko.Ed25519Key(data=base64.b64decode(host_b64)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(HOST, port=port, username=username, key_filename=str(key),
                       look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)
        return client

    def drop_request(self, nis: str, data: bytes | Path, name: str, *, directory: str = "inbox") -> str:
        """Upload a file as the municipality would: as ``name.part``, then rename to ``name``.

        :param nis: the municipality's NIS code.
        :param data: the file's bytes, or a local path.
        :param name: final file name in the directory.
        :param directory: remote directory (default the inbox).
        :return: the remote path of the final file.
        """
        final = posixpath.join(directory, name)
        part = final + ".part"
        with self.municipality_sftp(nis) as sftp:
            if isinstance(data, (bytes, bytearray)):
                with sftp.open(part, "wb") as fh:
                    fh.set_pipelined(True)
                    fh.write(bytes(data))
            else:
                sftp.put(str(data), part)
            sftp.posix_rename(part, final)
        return final

    def read_outbox(self, nis: str, *, directory: str = "outbox") -> dict[str, bytes]:
        """Download every final file in a directory as the municipality (``.part`` files skipped).

        :param nis: the municipality's NIS code.
        :param directory: remote directory (default the outbox).
        """
        files: dict[str, bytes] = {}
        with self.municipality_sftp(nis) as sftp:
            for entry in sorted(sftp.listdir_attr(directory), key=lambda e: e.filename):
                if entry.filename.endswith(".part") or entry.filename.startswith(".") or not stat.S_ISREG(entry.st_mode):
                    continue
                with sftp.open(posixpath.join(directory, entry.filename), "rb") as fh:
                    # Without prefetch paramiko reads 32 KiB per round trip: slow for results.
                    fh.prefetch(entry.st_size)
                    files[entry.filename] = fh.read()
        return files

    # ----------------------------------------------------------------- internals
    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for name in ("municipalities", "authorized_keys", "run"):
            (self.root / name).mkdir(exist_ok=True, mode=0o755)
            os.chmod(self.root / name, 0o755)
        (self.root / "keys").mkdir(exist_ok=True, mode=0o700)
        # sshd checks every component of a ChrootDirectory path, and reads authorized_keys as
        # the account: say which folder is wrong instead of a bare "Connection closed".
        for folder in [self.root, *self.root.parents]:
            st = folder.stat()
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise SftpServerError(
                    f"cannot chroot below {folder}: sshd requires every folder of the path to be "
                    "root-owned and not group/world-writable (so not under /tmp); "
                    "choose a root under the checkout's var/ folder"
                )
            if not st.st_mode & stat.S_IXOTH:
                raise SftpServerError(f"{folder} must be traversable by others (o+x): sshd reads "
                                      "authorized_keys as the municipality's account")

    def _common_config(self) -> list[str]:
        return [
            "# Generated by welfare_exchange.devtools.sftp_server: edits are overwritten.",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key_path}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}/%u",
            "UsePAM no",
            # The root lives in the checkout, not in a home directory sshd knows.
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            "PermitEmptyPasswords no",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PermitTTY no",
            "PermitUserRC no",
            "PrintMotd no",
            "LoginGraceTime 30",
            f"MaxStartups {self.max_startups}",
            f"MaxSessions {self.max_sessions}",
            "ClientAliveInterval 15",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "ForceCommand internal-sftp",
        ]

    def _write_config(self) -> None:
        accounts = sorted(self._accounts.values(), key=lambda a: a.nis)
        for listener, kind in ((self._agency, "agency"), (self._municipal, "municipality")):
            users = [a.agency_username if kind == "agency" else a.username for a in accounts]
            command = AGENCY_SFTP if kind == "agency" else MUNICIPALITY_SFTP
            lines = [*self._common_config(), f"Port {listener.port}", f"PidFile {listener.pid_path}",
                     # Only the registered accounts of this listener's kind may log in, and only to SFTP.
                     f"AllowUsers {' '.join(users)}" if users else "DenyUsers *"]
            for account, user in zip(accounts, users):
                lines += [f"Match User {user}", f"    ChrootDirectory {account.chroot}", f"    ForceCommand {command}"]
            listener.write_config(lines)

    def _reload(self) -> None:
        self._write_config()
        self._agency.reload()
        # The municipalities' Landlock rules name every inbox: a new one needs a new listener.
        # Its sessions live on (only the listener goes), so nobody's transfer breaks.
        self._municipal.signal_all(signal.SIGTERM, grace=5.0, sessions=False)
        self._spawn_municipal()


# ------------------------------------------------------------------ helpers
def landlock_available() -> bool:
    """Whether this kernel lets the launcher restrict a process (Landlock, Linux 5.13+)."""
    probe = subprocess.run([sys.executable, str(LANDLOCK_EXEC), "--", "true"], capture_output=True)
    return probe.returncode == 0


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SftpServerError(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


#: The comment that marks an account as this dev server's, with the processes that hold it.
_ACCOUNT_MARK = "welfare-exchange dev sftp pid="
_swept = False
_held_here: list[str] = []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holders(entry: pwd.struct_passwd) -> list[int] | None:
    """The processes named in a dev account's mark (None: not an account of this server)."""
    if not entry.pw_name.startswith((ACCOUNT_PREFIX, AGENCY_ACCOUNT_PREFIX)):
        return None
    if not entry.pw_gecos.startswith(_ACCOUNT_MARK):
        return None
    try:
        return [int(p) for p in entry.pw_gecos[len(_ACCOUNT_MARK):].split(",") if p]
    except ValueError:
        return None


def _mark(username: str, holders: list[int]) -> None:
    subprocess.run([_tool("usermod"), "--comment", _ACCOUNT_MARK + ",".join(map(str, holders)), username],
                   capture_output=True, text=True)


def _release(keep: Callable[[int], bool]) -> list[str]:
    """Drop every holder ``keep`` refuses from the marks; delete the accounts nobody holds any more."""
    removed = []
    for entry in pwd.getpwall():
        holders = _holders(entry)
        if holders is None:
            continue
        kept = [pid for pid in holders if keep(pid)]
        if not kept:
            removed.append(entry.pw_name)
        elif kept != holders:
            _mark(entry.pw_name, kept)
    # Agency logins first: they are members of the municipality's group. userdel removes the
    # account's own group with it; an account still in use stays (the next sweep retries).
    for name in sorted(removed, key=lambda n: not n.startswith(AGENCY_ACCOUNT_PREFIX)):
        subprocess.run([_tool("userdel"), name], capture_output=True, text=True)
    return removed


def sweep_stale_accounts() -> list[str]:
    """Delete the dev server's accounts that no live process holds any more.

    Every test session makes accounts for the municipalities it invents; without this sweep they
    piled up run after run until ``useradd`` found no free group id. An account held by a live
    process (another test session, the demo) stays.
    """
    me = os.getpid()
    return _release(lambda pid: pid == me or _pid_alive(pid))


def _release_own_accounts(owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the hook
        _release(lambda pid: pid != owner and _pid_alive(pid))


def _hold(username: str) -> None:
    """Name this process among the account's holders (an account of someone else's is left as is)."""
    try:
        holders = _holders(pwd.getpwnam(username))
    except KeyError:
        return
    if holders is not None and os.getpid() not in holders:
        _mark(username, [*holders, os.getpid()])
    _held_here.append(username)


def _ensure_system_account(username: str, *, member_of: str | None = None) -> pwd.struct_passwd:
    """Create the no-shell account if missing; make sure sshd does not see it as locked.

    The account is marked with the processes that hold it and removed when the last of them exits
    (or by the next sweep, should it be killed), so repeated test runs do not exhaust the group ids.

    :param member_of: a group the account must also be in (the agency's account joins the
        municipality's group, to read what the municipality uploads).
    """
    global _swept
    if not _swept:
        _swept = True
        sweep_stale_accounts()
        atexit.register(_release_own_accounts, os.getpid())
    extra = ["--groups", member_of] if member_of else []
    for attempt in range(10):
        try:
            user = pwd.getpwnam(username)
            _hold(username)
            break
        except KeyError:
            pass
        # Password "*": no password login, but not "!"-locked (sshd without PAM refuses
        # locked accounts even for public-key logins). Not --system: that range holds only
        # 900 group ids.
        result = subprocess.run([_tool("useradd"), "--no-create-home", "--home-dir", "/",
                                 "--comment", f"{_ACCOUNT_MARK}{os.getpid()}",
                                 "--shell", "/usr/sbin/nologin", "--password", "*", *extra, username],
                                capture_output=True, text=True)
        if result.returncode == 0:
            user = pwd.getpwnam(username)
            _held_here.append(username)
            break
        # Another test session may be creating the same account or holding the passwd lock.
        time.sleep(0.2 * (attempt + 1))
    else:
        raise SftpServerError(f"useradd could not create the account {username}: {result.stderr.strip()}")
    shadow = subprocess.run(["getent", "shadow", username], capture_output=True, text=True).stdout
    fields = shadow.split(":")
    if len(fields) > 1 and fields[1].startswith("!"):
        _run([_tool("usermod"), "--password", "*", username])
    if member_of and username not in grp.getgrnam(member_of).gr_mem:
        _run([_tool("usermod"), "--append", "--groups", member_of, username])
    return user


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _banner(port: int | None, timeout: float = 1.0) -> bool:
    """True when something on the port answers with an SSH banner."""
    if not port:
        return False
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # The command name may hold spaces and parentheses: the ppid follows the last ")".
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children_map(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until Ctrl-C / SIGTERM (for the demo)."""
    parser = argparse.ArgumentParser(prog="python -m welfare_exchange.devtools.sftp_server",
                                     description="OpenSSH SFTP server on 127.0.0.1, one chroot per municipality")
    parser.add_argument("--root", type=Path, default=None, help="default: the home folder's sftp/")
    parser.add_argument("--nis", action="append", default=[], help="municipality NIS code (repeatable)")
    parser.add_argument("--port", type=int, default=None, help="the agency's listener")
    parser.add_argument("--municipality-port", type=int, default=None, help="the municipalities' listener")
    parser.add_argument("--env-file", type=Path, default=None,
                        help="also write the AIRFLOW_CONN_SFTP_<NIS> lines to this file (mode 600)")
    args = parser.parse_args(argv)
    server = SftpServer(args.root or get_settings().home / "sftp", port=args.port, municipality_port=args.municipality_port)
    try:
        for nis in args.nis:
            server.add_municipality(nis)
        server.start()
    except (SftpServerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = [f"{name}='{value}'" for name, value in (server.env_var(n) for n in args.nis)]
    if args.env_file:
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    print(f"SFTP server on {HOST}: agency port {server.port}, municipalities' port {server.municipality_port} "
          f"(pid {server.pid}), root {server.root}", flush=True)
    print(f"host key: {server.host_key_line}", flush=True)
    for line in lines:
        print(f"export {line}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server.running:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
