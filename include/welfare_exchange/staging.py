"""The staging area: where an exchange's files wait between tasks — never as plaintext.

Each exchange has a folder ``<staging>/protocol-<id>/exchange-<id>/``. What it holds:

* ``request.fernet`` — the request file as fetched, sealed with the staging key;
* ``*.fernet`` — intermediates (the validated INSZ set, the matched rows, the validation report)
  encrypted at rest with the staging key (Fernet: AES-128-CBC + HMAC-SHA256);
* ``result.xlsx`` — the result, already encrypted with the protocol's key.

The request is sealed too, although a municipality encrypts it with the agreed password: what
arrives is not always encrypted (a file saved without the password, an xls LibreOffice wrote
plain), and such a file is refused only after it was staged. Sealing it on the way in means
staging never holds a byte in the clear, whatever happens between fetch and refusal (a crash, a
closed gate, a paused DAG). It costs ~0.1 s for a 6 MB request (``make bench``).

Every write is a write to a temporary name followed by an atomic rename, so a crashed task
never leaves a half-written file that a retry would take for complete.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from cryptography.fernet import Fernet, InvalidToken

from welfare_exchange.settings import get_settings


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


class Staging:
    """The staging folder of one exchange.

    :param protocol_id: the protocol the exchange runs under.
    :param exchange_id: the exchange's ledger id.
    """

    def __init__(self, protocol_id: int, exchange_id: int) -> None:
        self.folder = get_settings().staging_dir / f"protocol-{protocol_id}" / f"exchange-{exchange_id}"

    def path(self, name: str) -> pathlib.Path:
        return self.folder / name

    def write_encrypted(self, name: str, plaintext: bytes) -> pathlib.Path:
        """Encrypt ``plaintext`` with the staging key and store it as ``<name>.fernet``."""
        return atomic_write(self.path(f"{name}.fernet"), _fernet().encrypt(plaintext))

    def read_encrypted(self, name: str) -> bytes:
        path = self.path(f"{name}.fernet")
        try:
            return _fernet().decrypt(path.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"staging file {path.name} of this exchange is gone (deleted by retention, or an earlier "
                "task did not finish): clear the run from its first task to process the request again"
            ) from None
        except InvalidToken:
            raise RuntimeError(
                f"staging file {path.name} cannot be decrypted with the current staging key "
                "(was WELFARE_EXCHANGE_STAGING_KEY rotated?)"
            ) from None

    #: The staged request: sealed with the staging key (``request.fernet``). Exchanges staged
    #: before requests were sealed kept the bytes as fetched in ``request.enc``.
    REQUEST = "request"
    LEGACY_REQUEST = "request.enc"

    def write_request(self, data: bytes) -> pathlib.Path:
        """Stage the request exactly as received, sealed with the staging key."""
        return self.write_encrypted(self.REQUEST, data)

    def read_request(self) -> bytes:
        """The request exactly as received (unsealed in memory)."""
        legacy = self.path(self.LEGACY_REQUEST)
        if legacy.exists() and not self.path(f"{self.REQUEST}.fernet").exists():
            return legacy.read_bytes()
        return self.read_encrypted(self.REQUEST)

    def request_path(self) -> pathlib.Path:
        """Where the staged request is (or would be)."""
        legacy = self.path(self.LEGACY_REQUEST)
        return legacy if legacy.exists() else self.path(f"{self.REQUEST}.fernet")

    def has(self, name: str) -> bool:
        return self.path(name).exists() or self.path(f"{name}.fernet").exists()

    def remove(self, name: str) -> bool:
        """Delete one staged file (plain name or its ``.fernet``); False when already gone."""
        removed = False
        for path in (self.path(name), self.path(f"{name}.fernet")):
            if path.exists():
                path.unlink()
                removed = True
        return removed

    def purge(self) -> bool:
        """Delete the whole folder; False when it was already gone."""
        if not self.folder.exists():
            return False
        shutil.rmtree(self.folder)
        return True
