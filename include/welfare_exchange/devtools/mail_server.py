"""Real mail servers on loopback for tests, ``.ci/run`` and the demo: SMTP and IMAP.

* **SMTP**: an ``aiosmtpd`` server in a thread. Every message it accepts is kept in memory
  (:attr:`MailServers.delivered`), and a message for a local mailbox (the agency's) is also
  delivered into that mailbox's Maildir, so a request "sent by a municipality" over SMTP can
  be fetched over IMAP like in production.
* **IMAP**: Debian's dovecot (``/usr/sbin/dovecot``) with its own configuration file — the
  system configuration is never read — listening on ``127.0.0.1`` on a free port, plaintext
  login allowed (loopback only, no TLS), users in a passwd-file with generated passwords,
  Maildir storage, run in the foreground (``-F``) as a child process.

Everything lives under one root folder the caller gives (a pytest temporary folder, or
``var/``); nothing listens beyond loopback and nothing secret is written outside it.

Usage::

    with MailServers.start(tmp_path / "mail", local_addresses={"groeipakket@agency.test": "agency"}) as servers:
        os.environ.update(servers.airflow_env())   # AIRFLOW_CONN_IMAP_AGENCY, AIRFLOW_CONN_SMTP_AGENCY
        servers.inject("agency", message_bytes)     # as if it had arrived
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import pwd
import secrets
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller

DOVECOT = "/usr/sbin/dovecot"
#: Unprivileged owner of the mailboxes (dovecot refuses mail access as root).
MAIL_USER = "nobody"
LOOPBACK = "127.0.0.1"

#: Connection ids the DAGs use for the agency's mailbox.
IMAP_CONN_ID = "imap_agency"
SMTP_CONN_ID = "smtp_agency"


def free_port() -> int:
    """A TCP port free on loopback right now (the server binding it next may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def conn_env_name(conn_id: str) -> str:
    """``imap_agency`` → ``AIRFLOW_CONN_IMAP_AGENCY``."""
    return "AIRFLOW_CONN_" + conn_id.upper()


@dataclass(frozen=True)
class DeliveredMessage:
    """One message the SMTP server accepted.

    :param mail_from: the SMTP envelope sender.
    :param rcpt_tos: the SMTP envelope recipients.
    :param data: the message bytes as received.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes = field(repr=False)


def _deliver_to_maildir(maildir: Path, data: bytes, uid: int, gid: int) -> Path:
    """Maildir delivery: write in ``tmp/``, rename into ``new/`` so readers never see half a file.

    Files and folders are handed to the mail user: dovecot's mail processes are not root.
    """
    for path in (maildir, maildir / "tmp", maildir / "new", maildir / "cur"):
        if not path.exists():
            path.mkdir(mode=0o700)
            os.chown(path, uid, gid)
    name = f"{time.time_ns()}.{uuid.uuid4().hex}.{socket.gethostname()}"
    tmp = maildir / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    target = maildir / "new" / name
    os.replace(tmp, target)
    return target


class _Handler:
    """aiosmtpd handler: keep every message; deliver local recipients into their Maildir."""

    def __init__(self, servers: MailServers) -> None:
        self.servers = servers

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        message = DeliveredMessage(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(data))
        with self.servers._lock:
            self.servers.delivered.append(message)
        for rcpt in envelope.rcpt_tos:
            user = self.servers.local_addresses.get(rcpt.lower())
            if user:
                self.servers.deliver_local(user, message.data)
        return "250 Message accepted for delivery"


@dataclass
class MailServers:
    """A running SMTP + IMAP pair on loopback; use :meth:`start` and :meth:`stop` (or ``with``).

    :param root: folder with the dovecot configuration, users file, logs and Maildirs.
    :param smtp_port: port of the aiosmtpd server.
    :param imap_port: port of dovecot.
    :param users: IMAP user → generated password.
    :param local_addresses: e-mail address → IMAP user whose Maildir receives its mail.
    :param delivered: every message the SMTP server accepted, in order.
    """

    root: Path
    smtp_port: int
    imap_port: int
    users: dict[str, str]
    local_addresses: dict[str, str]
    delivered: list[DeliveredMessage] = field(default_factory=list)
    _controller: Controller | None = None
    _dovecot: subprocess.Popen | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ----------------------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        root: str | os.PathLike[str],
        *,
        local_addresses: dict[str, str] | None = None,
        extra_users: tuple[str, ...] = (),
        startup_timeout: float = 15.0,
    ) -> MailServers:
        """Start dovecot and the SMTP server under ``root`` and wait until both answer.

        :param root: created if missing; holds config, passwd-file, logs and mail.
        :param local_addresses: address → IMAP user; default the agency's test mailbox
            ``groeipakket@agency.test`` → user ``agency``.
        :param extra_users: further IMAP users (e.g. a municipality's mailbox).
        :param startup_timeout: seconds to wait for dovecot's greeting.
        :raises RuntimeError: dovecot is not installed or does not start (with its log).
        """
        if not os.path.exists(DOVECOT):
            raise RuntimeError(
                f"{DOVECOT} is missing: install the Debian package dovecot-imapd "
                "(make system-deps) to run the IMAP server"
            )
        root = Path(root).resolve()
        local_addresses = {
            k.lower(): v for k, v in (local_addresses or {"groeipakket@agency.test": "agency"}).items()
        }
        names = sorted(set(local_addresses.values()) | set(extra_users))
        users = {name: secrets.token_urlsafe(18) for name in names}
        servers = cls(
            root=root,
            smtp_port=0,
            imap_port=0,
            users=users,
            local_addresses=local_addresses,
        )
        servers._check_traversable()
        try:
            servers._start_dovecot(startup_timeout)
            servers._start_smtp()
        except BaseException:
            servers.stop()
            raise
        return servers

    @property
    def mail_uid(self) -> int:
        return pwd.getpwnam(MAIL_USER).pw_uid

    @property
    def mail_gid(self) -> int:
        return pwd.getpwnam(MAIL_USER).pw_gid

    def _check_traversable(self) -> None:
        # The mail processes run as MAIL_USER and must walk down to the Maildirs; pytest's
        # own temporary folders are mode 700, so callers use a folder directly under /tmp.
        for parent in self.root.parents:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise RuntimeError(
                    f"the mail server root must be reachable by the unprivileged user {MAIL_USER!r}, "
                    f"but {parent} is not traversable by others: use e.g. "
                    "tempfile.mkdtemp(prefix='welfare-exchange-mail-') under /tmp"
                )

    def _write_config(self) -> Path:
        for sub in ("run", "state", "log", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # traversable, not listable
        os.chmod(self.root / "mail", 0o711)
        for name in self.users:
            home = self.root / "mail" / name
            home.mkdir(exist_ok=True)
            os.chown(home, self.mail_uid, self.mail_gid)
            os.chmod(home, 0o700)
        users_file = self.root / "users"
        lines = [
            f"{name}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{self.root / 'mail' / name}::\n"
            for name, password in self.users.items()
        ]
        fd = os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(lines)
        config = self.root / "dovecot.conf"
        # Only this file is read (-c): nothing of /etc/dovecot applies. Plaintext auth without
        # TLS is acceptable because the listener is loopback-only and the data synthetic.
        config.write_text(
            f"""\
instance_name = welfare-exchange-{self.imap_port}
base_dir = {self.root / 'run'}
state_dir = {self.root / 'state'}
log_path = {self.root / 'log' / 'dovecot.log'}
info_log_path = {self.root / 'log' / 'dovecot.log'}
protocols = imap
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with wrong passwords on purpose; no need to slow the next logins down.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.1/32
default_login_user = dovenull
default_internal_user = root
# dovecot never accesses mail as root: mailboxes belong to an unprivileged system user.
first_valid_uid = {self.mail_uid}
first_valid_gid = {self.mail_gid}
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
mail_location = maildir:~/Maildir
mail_privileged_group =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"""
        )
        return config

    def _start_dovecot(self, timeout: float) -> None:
        last_error = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.imap_port = free_port()
            config = self._write_config()
            log = open(self.root / "log" / "dovecot.stdout", "ab")
            self._dovecot = subprocess.Popen(
                [DOVECOT, "-c", str(config), "-F"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._dovecot.poll() is not None:
                    break
                try:
                    with socket.create_connection((LOOPBACK, self.imap_port), timeout=1) as sock:
                        if sock.recv(64).startswith(b"* OK"):
                            return
                except OSError:
                    time.sleep(0.1)
            last_error = self._log_tail()
            self._stop_dovecot()
            if "Address already in use" not in last_error:
                break
        raise RuntimeError(f"dovecot did not start on {LOOPBACK}: {last_error}")

    def _log_tail(self) -> str:
        parts = []
        for name in ("dovecot.stdout", "dovecot.log"):
            path = self.root / "log" / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts) or "(no log)"

    def _start_smtp(self) -> None:
        for attempt in range(3):
            port = free_port()
            controller = Controller(_Handler(self), hostname=LOOPBACK, port=port, data_size_limit=0)
            try:
                controller.start()
            except (OSError, RuntimeError):
                if attempt == 2:
                    raise
                continue
            self._controller, self.smtp_port = controller, port
            return

    def _stop_dovecot(self) -> None:
        if self._dovecot is not None and self._dovecot.poll() is None:
            self._dovecot.terminate()  # the master stops its children on SIGTERM
            try:
                self._dovecot.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._dovecot.kill()
                self._dovecot.wait(timeout=5)
        self._dovecot = None

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None
        self._stop_dovecot()

    def __enter__(self) -> MailServers:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ mailboxes

    def maildir(self, user: str) -> Path:
        """The Maildir of an IMAP user (INBOX is its top level; folders are ``.Name``)."""
        return self.root / "mail" / user / "Maildir"

    def deliver_local(self, user: str, data: bytes) -> Path:
        """Drop a message into ``user``'s INBOX as a mail server's local delivery would."""
        return _deliver_to_maildir(self.maildir(user), data, self.mail_uid, self.mail_gid)

    def inject(self, user: str, data: bytes, mailbox: str = "INBOX") -> None:
        """Put a message into a mailbox over IMAP APPEND (as a client would).

        :param user: IMAP user, e.g. ``"agency"``.
        :param data: the whole RFC 5322 message.
        :param mailbox: target folder, created when missing.
        """
        with self.imap(user) as client:
            if mailbox != "INBOX":
                client.create(mailbox)  # "already exists" is fine
            status, _ = client.append(mailbox, None, None, data)
            if status != "OK":
                raise RuntimeError(f"IMAP APPEND to {mailbox} failed")

    @contextlib.contextmanager
    def imap(self, user: str):
        """A logged-in :class:`imaplib.IMAP4` client for ``user`` (closed afterwards)."""
        client = imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=30)
        try:
            client.login(user, self.users[user])
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def clear(self, user: str) -> None:
        """Delete every message in every folder of ``user`` (between tests)."""
        with self.imap(user) as client:
            _, folders = client.list()
            for line in folders or []:
                name = line.decode().rsplit(' "." ', 1)[-1].strip().strip('"')
                status, count = client.select(f'"{name}"')
                if status != "OK":
                    continue
                if int(count[0] or 0):  # "1:*" is invalid in an empty folder
                    client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                    client.expunge()
                client.close()
        with self._lock:
            self.delivered.clear()

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every message in a folder, oldest first, read without marking them seen."""
        with self.imap(user) as client:
            if client.select(f'"{mailbox}"', readonly=True)[0] != "OK":
                return []
            _, data = client.uid("SEARCH", None, "ALL")
            found = []
            for uid in (data[0] or b"").split():
                _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
                found.append(next(p[1] for p in parts if isinstance(p, tuple)))
            return found

    # ---------------------------------------------------------------------------- connections

    def imap_connection(self, user: str = "agency") -> dict:
        """Airflow connection (JSON form) for the imap provider, plain IMAP on loopback."""
        return {
            "conn_type": "imap",
            "host": LOOPBACK,
            "port": self.imap_port,
            "login": user,
            "password": self.users[user],
            "extra": {"use_ssl": False},
        }

    def smtp_connection(self, from_email: str = "groeipakket@agency.test") -> dict:
        """Airflow connection (JSON form) for the smtp provider, no TLS, no auth, on loopback."""
        return {
            "conn_type": "smtp",
            "host": LOOPBACK,
            "port": self.smtp_port,
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "from_email": from_email,
                "timeout": 30,
                "retry_limit": 1,
            },
        }

    def airflow_env(
        self, *, imap_conn_id: str = IMAP_CONN_ID, smtp_conn_id: str = SMTP_CONN_ID, user: str = "agency"
    ) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for both connections, ready for ``os.environ.update``."""
        return {
            conn_env_name(imap_conn_id): json.dumps(self.imap_connection(user)),
            conn_env_name(smtp_conn_id): json.dumps(self.smtp_connection()),
        }


def smime_connection(certificate_pem: str, private_key_pem: str, passphrase: str | None = None) -> dict:
    """Airflow connection (JSON form) holding the agency's S/MIME certificate and key.

    Read by :func:`welfare_exchange.transport.mail.load_agency_identity`.

    :param certificate_pem: the agency's certificate.
    :param private_key_pem: its private key (encrypted when ``passphrase`` is given).
    :param passphrase: stored as the connection's password.
    """
    connection = {
        "conn_type": "generic",
        "extra": {"certificate": certificate_pem, "private_key": private_key_pem},
    }
    if passphrase:
        connection["password"] = passphrase
    return connection

