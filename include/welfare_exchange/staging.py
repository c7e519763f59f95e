"""The staging area: where an exchange's files wait between tasks — never as plaintext.

Each exchange has its own staged files, named by the agency (never by a municipality):

* ``request.fernet`` — the request file as fetched, sealed with the staging key;
* ``*.fernet`` — intermediates (the validated INSZ set, the matched rows, the validation report)
  encrypted at rest with the staging key (Fernet: AES-128-CBC + HMAC-SHA256);
* ``result.xlsx`` — the result, already encrypted with the protocol's key.

The request is sealed too, although a municipality encrypts it with the agreed password: what
arrives is not always encrypted (a file saved without the password, an xls LibreOffice wrote
plain), and such a file is refused only after it was staged. Sealing it on the way in means
staging never holds a byte in the clear, whatever happens between fetch and refusal (a crash, a
closed gate, a paused DAG). It costs ~0.1 s for a 6 MB request (``make bench``).

Where they live is the setting ``WELFARE_EXCHANGE_STAGING_BACKEND``; every step goes through
:class:`Staging` whichever it is:

* ``local`` (default) — the folder ``<staging>/protocol-<id>/exchange-<id>/`` on the worker's disk.
  Every write goes to a temporary name and is renamed, so a crashed task never leaves a
  half-written file a retry would take for complete. Enough when every worker shares one disk.
* ``postgres`` — table ``staged_blob`` of the project database, which every worker host reaches
  (one row per file, always sealed with the staging key; a write is one transaction). Tasks of
  one exchange may then run on different hosts.

A staged file a step needs and does not find raises :class:`StagedFileMissing` (cause
``staging_missing``): never a step that succeeds having done nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pathlib
import shutil
import socket
import tempfile
from collections.abc import Callable

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from welfare_exchange.db import session_scope
from welfare_exchange.db.models import StagedBlob
from welfare_exchange.errors import AgencySideError
from welfare_exchange.settings import get_settings

#: Runbook section of every staging failure (:data:`welfare_exchange.failures.CAUSES`).
RUNBOOK_SECTION = "A staged file is missing or unreadable"
#: Retention places (``RetentionItem.where``) of the two back ends.
LOCAL, DATABASE = "local", "staging_db"
SEALED_SUFFIX = ".fernet"
#: The built result of a Method 1 exchange (encrypted with the protocol's key).
RESULT_FILE = "result.xlsx"


class StagedFileMissing(AgencySideError):
    """A step's staged input is not in the staging area this worker reaches."""

    code = "staging_missing"


class StagedFileUnreadable(AgencySideError):
    """A staged file cannot be opened with the current staging key."""

    code = "staging_missing"


def _fernet() -> Fernet:
    key = get_settings().staging_key
    if not key:
        raise RuntimeError(
            "WELFARE_EXCHANGE_STAGING_KEY is not set: intermediates cannot be encrypted at rest. "
            "`make install` generates one in var/secrets.env; in production it comes from the secrets backend."
        )
    return Fernet(key.encode())


def unseal(token: bytes) -> bytes:
    """Decrypt bytes sealed with the staging key; raises :class:`cryptography.fernet.InvalidToken`."""
    return _fernet().decrypt(token)


def atomic_write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _folder_name(protocol_id: int, exchange_id: int) -> str:
    return f"protocol-{protocol_id}/exchange-{exchange_id}"


# ----------------------------------------------------------------------------- back ends


class LocalStore:
    """Staged files of one exchange in a folder of this worker's disk (``local``)."""

    where = LOCAL

    def __init__(self, protocol_id: int, exchange_id: int) -> None:
        self.folder = get_settings().staging_dir / f"protocol-{protocol_id}" / f"exchange-{exchange_id}"

    def put(self, name: str, data: bytes) -> None:
        atomic_write(self.folder / name, data)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def delete(self, name: str) -> bool:
        path = self.folder / name
        if not path.exists():
            return False
        path.unlink()
        return True

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def purge(self) -> bool:
        if not self.folder.exists():
            return False
        shutil.rmtree(self.folder)
        return True

    def location(self, name: str | None = None) -> str:
        return str(self.folder / name) if name else str(self.folder)

    def describe(self) -> str:
        return f"the local staging folder of host {socket.gethostname()} (WELFARE_EXCHANGE_STAGING_DIR)"


class DatabaseStore:
    """Staged files of one exchange in the project database (``postgres``), sealed with the staging key.

    A name ending in ``.fernet`` is sealed by the caller already; any other is sealed here, so
    no row ever holds plaintext or a file only another key opens.
    """

    where = DATABASE

    def __init__(self, protocol_id: int, exchange_id: int) -> None:
        self.protocol_id, self.exchange_id = protocol_id, exchange_id

    def put(self, name: str, data: bytes) -> None:
        blob = StagedBlob
        content = data if name.endswith(SEALED_SUFFIX) else _fernet().encrypt(data)
        now = dt.datetime.now(dt.timezone.utc)
        with session_scope() as session:
            row = session.scalar(sa.select(blob).where(blob.exchange_id == self.exchange_id, blob.name == name))
            if row is None:
                session.add(blob(protocol_id=self.protocol_id, exchange_id=self.exchange_id, name=name,
                                 content=content, size=len(content), created_at=now))
            else:
                row.content, row.size, row.created_at = content, len(content), now

    def get(self, name: str) -> bytes | None:
        blob = StagedBlob
        with session_scope() as session:
            content = session.scalar(
                sa.select(blob.content).where(blob.exchange_id == self.exchange_id, blob.name == name)
            )
        if content is None or name.endswith(SEALED_SUFFIX):
            return content
        return _fernet().decrypt(bytes(content))

    def exists(self, name: str) -> bool:
        return name in self.names()

    def delete(self, name: str) -> bool:
        blob = StagedBlob
        with session_scope() as session:
            gone = session.execute(sa.delete(blob).where(blob.exchange_id == self.exchange_id, blob.name == name))
            return gone.rowcount > 0

    def names(self) -> list[str]:
        blob = StagedBlob
        with session_scope() as session:
            return sorted(session.scalars(sa.select(blob.name).where(blob.exchange_id == self.exchange_id)))

    def purge(self) -> bool:
        blob = StagedBlob
        with session_scope() as session:
            return session.execute(sa.delete(blob).where(blob.exchange_id == self.exchange_id)).rowcount > 0

    def location(self, name: str | None = None) -> str:
        folder = _folder_name(self.protocol_id, self.exchange_id)
        return f"{folder}/{name}" if name else folder

    def describe(self) -> str:
        return "the project database (staging back end postgres)"


# ----------------------------------------------------------------------------- the interface


class Staging:
    """The staged files of one exchange, wherever the staging back end keeps them.

    :param protocol_id: the protocol the exchange runs under.
    :param exchange_id: the exchange's ledger id.
    :param backend: ``local`` or ``postgres``; default the setting ``WELFARE_EXCHANGE_STAGING_BACKEND``.
    """

    #: The staged request: sealed with the staging key (``request.fernet``). Exchanges staged
    #: before requests were sealed kept the bytes as fetched in ``request.enc`` (local only).
    REQUEST = "request"
    LEGACY_REQUEST = "request.enc"

    def __init__(self, protocol_id: int, exchange_id: int, *, backend: str | None = None) -> None:
        self.protocol_id, self.exchange_id = protocol_id, exchange_id
        backend = backend or get_settings().staging_backend
        self.store: LocalStore | DatabaseStore = (
            DatabaseStore(protocol_id, exchange_id) if backend == "postgres" else LocalStore(protocol_id, exchange_id)
        )

    @property
    def where(self) -> str:
        """The retention place of this exchange's staged files (``local`` or ``staging_db``)."""
        return self.store.where

    def location(self, name: str | None = None) -> str:
        """Where the exchange's staged files (or one of them) are, as a retention item records it."""
        return self.store.location(name)

    def _missing(self, name: str) -> StagedFileMissing:
        return StagedFileMissing(
            f"staging file {name} of exchange {self.exchange_id} is gone from {self.store.describe()}: deleted by "
            "retention, an earlier task did not finish, or it ran on another worker host whose staging this one "
            "does not reach (with more than one worker host, set WELFARE_EXCHANGE_STAGING_BACKEND=postgres: "
            "README 'More than one worker host'). Clear the run from its first task to process the request again. "
            f"Runbook: '{RUNBOOK_SECTION}'."
        )

    # -- the local folder, for inspection (steps use the methods below, whatever the back end)

    @property
    def folder(self) -> pathlib.Path:
        """The exchange's folder of the ``local`` back end."""
        if not isinstance(self.store, LocalStore):
            raise TypeError(f"exchange {self.exchange_id} is staged in {self.store.describe()}, not in a folder")
        return self.store.folder

    def path(self, name: str) -> pathlib.Path:
        """A staged file's path with the ``local`` back end."""
        return self.folder / name

    def request_path(self) -> pathlib.Path:
        """Where the staged request is (or would be) with the ``local`` back end."""
        legacy = self.path(self.LEGACY_REQUEST)
        return legacy if legacy.exists() else self.path(f"{self.REQUEST}{SEALED_SUFFIX}")

    # -- sealed intermediates

    def write_encrypted(self, name: str, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` with the staging key and store it as ``<name>.fernet``."""
        self.store.put(f"{name}{SEALED_SUFFIX}", _fernet().encrypt(plaintext))

    def read_encrypted(self, name: str) -> bytes:
        """``<name>.fernet`` unsealed; :class:`StagedFileMissing` when it is not there."""
        token = self.store.get(f"{name}{SEALED_SUFFIX}")
        if token is None:
            raise self._missing(f"{name}{SEALED_SUFFIX}")
        try:
            return _fernet().decrypt(bytes(token))
        except InvalidToken:
            raise StagedFileUnreadable(
                f"staging file {name}{SEALED_SUFFIX} of exchange {self.exchange_id} cannot be decrypted with the current "
                f"staging key (was WELFARE_EXCHANGE_STAGING_KEY rotated, or does a worker have another?). "
                f"Runbook: '{RUNBOOK_SECTION}'."
            ) from None

    # -- files already protected (the result, encrypted with the protocol's key) or without personal data

    def write_file(self, name: str, data: bytes) -> None:
        """Stage ``data`` under ``name`` as is (the postgres back end seals it on top)."""
        self.store.put(name, data)

    def read_file(self, name: str) -> bytes:
        """A staged file's bytes; :class:`StagedFileMissing` when it is not there."""
        try:
            data = self.store.get(name)
        except InvalidToken:
            raise StagedFileUnreadable(
                f"staging file {name} of exchange {self.exchange_id} cannot be unsealed with the current staging key. "
                f"Runbook: '{RUNBOOK_SECTION}'."
            ) from None
        if data is None:
            raise self._missing(name)
        return bytes(data)

    def sha256(self, name: str) -> str | None:
        """SHA-256 of a staged file as written, ``None`` when it is not there."""
        data = self.store.get(name)
        return None if data is None else hashlib.sha256(data).hexdigest()

    # -- the request

    def write_request(self, data: bytes) -> None:
        """Stage the request exactly as received, sealed with the staging key."""
        self.write_encrypted(self.REQUEST, data)

    def read_request(self) -> bytes:
        """The request exactly as received (unsealed in memory)."""
        if isinstance(self.store, LocalStore) and not self.store.exists(f"{self.REQUEST}{SEALED_SUFFIX}"):
            legacy = self.store.get(self.LEGACY_REQUEST)
            if legacy is not None:
                return legacy
        return self.read_encrypted(self.REQUEST)

    def request_name(self) -> str | None:
        """The staged request's file name, ``None`` when no request is staged."""
        for name in (f"{self.REQUEST}{SEALED_SUFFIX}", self.LEGACY_REQUEST):
            if self.store.exists(name):
                return name
        return None

    # -- listing and deleting

    def has(self, name: str) -> bool:
        return self.store.exists(name) or self.store.exists(f"{name}{SEALED_SUFFIX}")

    def names(self) -> list[str]:
        """The staged files' names."""
        return self.store.names()

    def exists(self) -> bool:
        """Whether anything of this exchange is staged."""
        return bool(self.store.names())

    def remove(self, name: str) -> bool:
        """Delete one staged file (plain name or its ``.fernet``); False when already gone."""
        removed = False
        for candidate in (name, f"{name}{SEALED_SUFFIX}"):
            removed = self.store.delete(candidate) or removed
        return removed

    def purge(self) -> bool:
        """Delete every staged file of the exchange; False when there was none."""
        return self.store.purge()


# ----------------------------------------------------------------------------- retention


def parse_location(location: str) -> tuple[int, int, str | None]:
    """``protocol-<p>/exchange-<e>[/<name>]`` (a ``staging_db`` retention location) → ``(p, e, name)``."""
    parts = location.split("/")
    if len(parts) not in (2, 3) or not parts[0].startswith("protocol-") or not parts[1].startswith("exchange-"):
        raise ValueError(f"not a staging location: {location!r} (protocol-<id>/exchange-<id>[/<name>])")
    return int(parts[0].removeprefix("protocol-")), int(parts[1].removeprefix("exchange-")), (parts[2] if len(parts) == 3 else None)


def delete_from_database(location: str, sha256: str | None, before_delete: Callable[[str], None]) -> str | None:
    """Delete a ``staging_db`` retention item once identified; what was verified, or ``None`` (not found).

    A whole exchange's staged files are identified by their exchange; a single file by its
    SHA-256 when one was recorded (the request: compared unsealed).
    """
    protocol_id, exchange_id, name = parse_location(location)
    staging = Staging(protocol_id, exchange_id, backend="postgres")
    if name is None:
        names = staging.names()
        if not names:
            return None
        verified = f"staged files of exchange {exchange_id} in the project database ({len(names)} file(s))"
        before_delete(verified)
        staging.purge()
        return verified
    data = staging.store.get(name)
    if data is None:
        return None
    data = bytes(data)
    if sha256 is None:
        identity = f"{len(data)} bytes, identified by its exchange and name (no digest was recorded)"
    else:
        plain = unseal(data) if name.endswith(SEALED_SUFFIX) else data
        if hashlib.sha256(plain).hexdigest() != sha256:
            return None
        identity = f"unsealed, {len(plain)} bytes, SHA-256 {sha256} matched"
    verified = f"staged file {location} in the project database, {identity}"
    before_delete(verified)
    staging.store.delete(name)
    return verified
