"""The worlds the channel contract runs in: each channel with its real far side.

* ``sftp`` — a fresh account on the real OpenSSH server (``sftp_municipality``);
* ``smime`` — the real dovecot IMAP + SMTP servers, Gent's mailbox and the test PKI (``mail_env``);
* ``folder`` — the test-only :class:`~tests.channels.folder_channel.FolderChannel`, registered by
  the ``folder_channel`` fixture (its one line of registration).

A :class:`ChannelWorld` is what the contract needs of each: a signed Method 1 protocol on that
channel, a way to send a request as the municipality does, what the municipality received,
and a way to swap a stored copy for another file (the identity check of retention).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
import hashlib
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.channels.folder_channel import FolderChannel
from tests.exchange.builders import World, build_world, encrypted_request
from tests.exchange.conftest import _signed_protocol, mail_logical_date
from tests.feeds.conftest import feed_env  # noqa: F401 (a fixture the folder channel's feed test uses)
from tests.fixtures.mail import AGENCY_ADDRESS, GENT_ADDRESS
from welfare_exchange.channels import registry
from welfare_exchange.channels.base import Channel
from welfare_exchange.runinfo import RunInfo

#: Channels the contract knows how to set up; every registered channel must be here.
CONTRACT_CHANNELS = ("sftp", "smime", "folder")


@pytest.fixture
def folder_channel(tmp_path):
    """The folder channel, registered for the test (and forgotten afterwards)."""
    channel = registry.register(FolderChannel(tmp_path / "folders"))
    yield channel
    registry.unregister(channel.name)


@dataclass
class ChannelWorld:
    name: str
    channel: Channel
    protocol_id: int
    password: str
    world: World
    day: object
    send_request: Callable[[bytes, int], None]
    received: Callable[[], list[tuple[str, bytes]]]
    stored_path: Callable[[str], object]
    #: ``send_named(data, name)``: the municipality sends a file under its own name (not a request).
    send_named: Callable[[bytes, str], None] | None = None
    runs: list[str] = field(default_factory=list)

    def run(self, n: int, task: str = "fetch_request") -> RunInfo:
        return RunInfo(exchange_date=self.day, dag_id=f"method1_{self.name}", run_id=f"run-{n}", task_id=task, try_number=1)

    def request(self, n: int = 20, *, password: str | None = None, seed: int = 0) -> bytes:
        numbers = [number for number, _ in self.world.children[seed:seed + n]]
        return encrypted_request(numbers, password or self.password)


def _sftp_world(request, monkeypatch) -> ChannelWorld:
    m = request.getfixturevalue("sftp_municipality")
    protocol_id, password = _signed_protocol(monkeypatch, m.nis, municipality=f"Testgemeente {m.nis}", channel="sftp")
    world = build_world(m.nis, children=40, seed=int(m.nis))

    def stored(location: str) -> pathlib.Path:
        return m.local_dir("/") / location.partition(":")[2]

    return ChannelWorld(
        "sftp", registry.channel_for("sftp"), protocol_id, password, world, mail_logical_date().date(),
        send_request=lambda data, n: m.upload_request(data, f"aanvraag-{n}.xlsx"),
        received=lambda: sorted(m.read_outbox().items()),
        stored_path=stored, send_named=lambda data, name: m.upload_request(data, name),
    )


def _smime_world(request, monkeypatch, tmp_path) -> ChannelWorld:
    servers = request.getfixturevalue("mail_env")
    pki = request.getfixturevalue("smime_pki")
    openssl = request.getfixturevalue("openssl")
    nis = "44021"
    protocol_id, password = _signed_protocol(
        monkeypatch, nis, municipality="Gent", channel="smime", channel_connection="smtp_agency",
        sender_address=GENT_ADDRESS, sender_certificates=[pki.gent.certificate_pem],
    )
    world = build_world(nis, children=40, seed=4402)

    def send(data: bytes, n: int) -> None:
        source = tmp_path / f"aanvraag-{n}.xlsx"
        source.write_bytes(data)
        body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(source), str(pki.agency.certificate_path))
        head = f"From: {GENT_ADDRESS}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: Aanvraag\r\nMessage-ID: <req-{n}@gent.test>\r\n"
        servers.inject("agency", head.encode() + body)

    def send_named(data: bytes, name: str) -> None:
        """A mail program's message: the file as a named attachment, S/MIME-encrypted with OpenSSL."""
        inner = EmailMessage()
        inner.set_content("Zie bijlage.\n")
        inner.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        source = tmp_path / f"mime-{name}.eml"
        source.write_bytes(inner.as_bytes(policy=email.policy.SMTP))
        body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(source), str(pki.agency.certificate_path))
        servers.inject("agency", f"From: {GENT_ADDRESS}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: Bestand\r\n".encode() + body)

    def received() -> list[tuple[str, bytes]]:
        out = []
        for n, message in enumerate(servers.messages("gent")):
            if b"pkcs7-mime" in message.lower():
                path = tmp_path / f"got-{n}.eml"
                path.write_bytes(message)
                message = openssl("smime", "-decrypt", "-in", str(path), "-recip", str(pki.gent.certificate_path),
                                  "-inkey", str(pki.gent.key_path))
            entity = email.message_from_bytes(message, policy=email.policy.default)
            parts = [p for p in entity.walk() if p.get_filename()]
            for part in parts or [entity]:
                out.append((part.get_filename() or "(body)", part.get_payload(decode=True)))
        return sorted(out)

    class _Mailbox:
        """A stored message as a file-like thing: read, replace (swap), put back."""

        def __init__(self, location: str) -> None:
            self.folder = location.split(":")[1]

        def read_bytes(self) -> bytes:
            [only] = servers.messages("agency", self.folder)
            return only

        def is_file(self) -> bool:
            return len(servers.messages("agency", self.folder)) == 1

        def exists(self) -> bool:
            return self.is_file()

        def write_bytes(self, data: bytes) -> None:
            with servers.imap("agency") as client:
                client.select(f'"{self.folder}"')
                client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                client.expunge()
            servers.inject("agency", data, mailbox=self.folder)

    return ChannelWorld(
        "smime", registry.channel_for("smime"), protocol_id, password, world, mail_logical_date().date(),
        send_request=send, received=received, stored_path=_Mailbox, send_named=send_named,
    )


def _folder_world(request, monkeypatch) -> ChannelWorld:
    channel = request.getfixturevalue("folder_channel")
    nis = "99990"
    protocol_id, password = _signed_protocol(monkeypatch, nis, municipality="Mapgemeente", channel="folder",
                                             channel_connection=f"folder_{nis}")
    world = build_world(nis, children=40, seed=9999)
    conn = f"folder_{nis}"

    def send(data: bytes, n: int) -> None:
        inbox = channel.folder(conn, "inbox")
        (inbox / f"aanvraag-{n}.xlsx.part").write_bytes(data)
        (inbox / f"aanvraag-{n}.xlsx.part").rename(inbox / f"aanvraag-{n}.xlsx")

    def received() -> list[tuple[str, bytes]]:
        return sorted((p.name, p.read_bytes()) for p in channel.folder(conn, "outbox").iterdir() if not p.name.startswith("."))

    return ChannelWorld(
        "folder", channel, protocol_id, password, world, mail_logical_date().date(),
        send_request=send, received=received,
        stored_path=lambda location: channel.root / conn / location.partition(":")[2],
        send_named=lambda data, name: (channel.folder(conn, "inbox") / name).write_bytes(data),
    )


@pytest.fixture(params=CONTRACT_CHANNELS)
def channel_world(request, sqlite_db, monkeypatch, tmp_path) -> ChannelWorld:
    """One channel with its real far side and a signed protocol on it."""
    if request.param == "sftp":
        return _sftp_world(request, monkeypatch)
    if request.param == "smime":
        return _smime_world(request, monkeypatch, tmp_path)
    return _folder_world(request, monkeypatch)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
