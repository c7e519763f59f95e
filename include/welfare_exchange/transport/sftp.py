"""SFTP transport: what the exchange tasks call to receive requests and deliver results.

Every function takes an :class:`SFTPHook` — anything whose ``get_managed_conn()`` yields a paramiko
``SFTPClient``, in practice the SFTP provider's hook — that the task builds when it runs
(:func:`sftp_hook` asks :mod:`welfare_exchange.connections` for it), never at import or DAG-parse
time. Each call opens the hook's managed connection and closes it again, unless the caller
already holds one (``with hook.get_managed_conn():`` around several calls reuses it).

Guarantees the exchange relies on:

* **Never half a file.** :func:`survey_inbox` (and :func:`list_ready_requests`) take a file
  only when its size and mtime did not change between two looks ``settle_seconds`` apart, and
  never one under a temporary upload name (``.part``, WinSCP's ``.filepart``, …).
  Municipalities are asked to upload under such a name and rename; the settle window covers
  those that do not (a writer that stalls longer than the window defeats it, and the refusal
  report then tells the municipality to upload under a temporary name).
* **Every file in the inbox is answered.** :func:`survey_inbox` also names what is not a
  request (a dotfile, another extension), a file over the size limit (by its listed size:
  never downloaded) and a temporary upload left unchanged for a long time, so the caller can
  quarantine and report them instead of ignoring them forever.
* **A refused handshake is retried.** An SFTP server at its ``MaxStartups`` limit (or
  restarting) drops new connections; opening a session retries that with exponential backoff
  and jitter, a bounded number of times (:data:`CONNECT_ATTEMPTS`). A refused login or a
  wrong host key is never retried.
* **Atomic on both sides.** :func:`fetch` streams into ``<local>.tmp``, hashes while writing,
  fsyncs and renames. :func:`deliver` uploads as ``<name>.part`` and renames: the SFTP v3
  rename (``SSH_FXP_RENAME``) refuses to replace an existing file, so a final name appears
  once, complete, and is never overwritten.
* **Idempotent delivery.** If the final file already exists with the same SHA-256 (a retry
  after a crash between rename and verify, or a cleared task), :func:`deliver` does nothing
  and returns its hash; with different content it raises :class:`DeliveryConflict` rather
  than overwrite. The result is read back and its size and SHA-256 verified.
* **Errors a person can act on**, naming the connection and the remote directory, never a
  file's content (:class:`SftpTransportError` and subclasses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import hashlib
import io
import logging
import os
import posixpath
import random
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from welfare_exchange import connections, untrusted
from welfare_exchange.errors import WelfareExchangeError

if TYPE_CHECKING:  # imported when a session opens: every DAG parse imports this module, few tasks use SFTP
    import paramiko

log = logging.getLogger(__name__)

#: Read/write block size for streaming and hashing.
CHUNK_SIZE = 1024 * 1024
PART_SUFFIX = ".part"
DEFAULT_REQUEST_PATTERNS = ("*.xlsx", "*.xls")
#: Names SFTP clients and office programs give a file while it is being written: never a
#: request, left alone while they change, reported when left unchanged for long. ``.part``
#: (ours, many clients), ``.filepart`` (WinSCP), ``.partial``, ``.tmp``, ``.cyberducktmp``,
#: ``~$…`` (an open Office document's owner file), ``.~lock.…#`` (LibreOffice's lock file).
TEMPORARY_UPLOAD_PATTERNS = ("*.part", "*.filepart", "*.partial", "*.tmp", "*.cyberducktmp", "~$*", ".~lock.*#")
#: Opening a session: attempts when the server refuses the handshake, first pause, longest pause.
CONNECT_ATTEMPTS = 6
CONNECT_FIRST_DELAY = 0.5
CONNECT_MAX_DELAY = 8.0
_NIS = re.compile(r"^[0-9]{5}$")


# ---------------------------------------------------------------------------- errors
class SftpTransportError(WelfareExchangeError):
    """An SFTP operation failed (network, server, permissions, missing directory)."""

    code = "sftp"


class SftpHostKeyError(SftpTransportError):
    """The server's host key does not match the one pinned in the connection."""

    code = "sftp_host_key"


class RemoteFileMissing(SftpTransportError):
    """The remote file an operation needs is not there (any more)."""

    code = "sftp_missing"


class DeliveryConflict(SftpTransportError):
    """A different file with the delivery's name is already on the server: never overwritten."""

    code = "delivery_conflict"


class LocalFileError(WelfareExchangeError):
    """Reading or writing the local side of a transfer failed (disk full, permissions).

    Kept apart from :class:`SftpTransportError` so an operator looks at the worker's disk,
    not at the SFTP server.
    """

    code = "local_io"


class RemoteFileTooLarge(SftpTransportError):
    """The remote file is larger than accepted; it was not downloaded."""

    code = "too_large"


class DeliveryVerificationError(SftpTransportError):
    """The file read back after upload does not have the size or SHA-256 that was sent."""

    code = "delivery_verification"


# ---------------------------------------------------------------------------- helpers
@dataclasses.dataclass(frozen=True, order=False)
class RemoteFile:
    """A file in a remote directory, as listed.

    :param name: file name (no directory).
    :param size: size in bytes.
    :param mtime: modification time, seconds since the epoch (server clock, 1 s resolution).
    :param directory: the remote directory it was listed in.
    """

    name: str
    size: int
    mtime: int
    directory: str = ""

    @property
    def path(self) -> str:
        """Remote path: ``directory/name``."""
        return posixpath.join(self.directory, self.name)


def shown(name: str) -> str:
    """How a remote file name (or path) appears in a log line, an exception or an audit message:
    the municipality's part as a handle (:func:`welfare_exchange.untrusted.shown_path`)."""
    return untrusted.shown_path(name)


def name_handle(name: str) -> str:
    """An opaque stand-in for a remote file name, safe for XCom (:func:`welfare_exchange.untrusted.handle`).

    Between tasks a file travels as this handle and is looked up again with :func:`find_by_handle`.
    """
    return untrusted.handle(name)


def find_by_handle(hook: SFTPHook, directory: str, handle: str) -> str | None:
    """The name of the file in ``directory`` whose :func:`name_handle` is ``handle``, if any."""
    with _session(hook, "listing", directory) as sftp:
        names = sftp.listdir(directory)
    return next((name for name in names if name_handle(name) == handle), None)


def conn_id_for(nis: str) -> str:
    """Airflow connection id of the agency's SFTP account for a municipality: ``sftp_<nis>``.

    :param nis: the municipality's 5-digit NIS code.
    """
    if not isinstance(nis, str) or not _NIS.match(nis):
        raise ValueError(f"a NIS code is 5 digits (e.g. '44021'), got {nis!r}")
    return f"sftp_{nis}"


class SFTPHook(Protocol):
    """What this module needs of an SFTP connection: sessions (the provider's ``SFTPHook`` fits)."""

    def get_managed_conn(self) -> contextlib.AbstractContextManager[paramiko.SFTPClient]: ...


def sftp_hook(conn_id: str, **kwargs) -> SFTPHook:
    """The SFTP sessions of a connection; call it inside a task, not at parse time.

    :param conn_id: connection id (e.g. ``sftp_44021``); its extras should pin the server's
        ``host_key``.
    :param kwargs: passed to the hook (see
        :meth:`welfare_exchange.orchestration.hooks.AirflowHooks.sftp`; :func:`_session` retries
        only a refused handshake, with backoff).
    """
    return connections.hooks().sftp(conn_id, **kwargs)


class _HashingWriter:
    """File-like sink that hashes and counts what passes through to ``target`` (or nowhere)."""

    def __init__(self, target: IO[bytes] | None = None) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        if self.target is not None:
            try:
                self.target.write(data)
            except OSError as exc:
                raise LocalFileError(f"writing the local copy failed: {exc.strerror or exc}") from exc
        return len(data)


class _HashingReader:
    """File-like source that hashes and counts what is read from ``source``."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.source.read(n)
        except OSError as exc:
            raise LocalFileError(f"reading the local file to send failed: {exc.strerror or exc}") from exc
        self.digest.update(data)
        self.size += len(data)
        return data


def _conn_name(hook: SFTPHook) -> str:
    return getattr(hook, "ssh_conn_id", None) or "(no connection id)"


def handshake_refused(exc: BaseException) -> bool:
    """True when opening a connection failed before login in a way a later attempt can cure.

    sshd at its ``MaxStartups`` limit closes a new connection before sending its banner
    (paramiko: "Error reading SSH protocol banner", a reset or EOF); a restarting server
    refuses the TCP connection; an overloaded one times out. A refused login, a host key that
    does not match the pinned one, or an unknown host are never transient.
    """
    import paramiko

    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError)):  # the local key file: configuration
        return False
    if isinstance(exc, (OSError, EOFError)):  # refused, reset, timed out, no route right now
        return True
    if isinstance(exc, paramiko.SSHException):
        cause = exc.__cause__ or exc.__context__
        return "banner" in str(exc).lower() or isinstance(cause, (OSError, EOFError))
    return False


def connect_delay(attempt: int) -> float:
    """Pause before attempt ``attempt + 1``: doubling from :data:`CONNECT_FIRST_DELAY`, capped, with jitter.

    The jitter (up to half the pause) spreads out clients that were refused together, so they
    do not all come back at the same instant and hit the limit again.
    """
    base = min(CONNECT_MAX_DELAY, CONNECT_FIRST_DELAY * 2 ** (attempt - 1))
    return base / 2 + random.uniform(0, base / 2)


@contextlib.contextmanager
def _connected(hook: SFTPHook, action: str) -> Iterator[paramiko.SFTPClient]:
    """The hook's managed SFTP client, opened with retries of a refused handshake (logged, no names)."""
    with contextlib.ExitStack() as stack:
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                sftp = stack.enter_context(hook.get_managed_conn())
                break
            except Exception as exc:
                if attempt == CONNECT_ATTEMPTS or not handshake_refused(exc):
                    raise
                delay = connect_delay(attempt)
                log.warning("SFTP %s on connection %r: the server refused the connection (%s), attempt %d of %d; "
                            "trying again in %.1f s", action, _conn_name(hook), type(exc).__name__, attempt,
                            CONNECT_ATTEMPTS, delay)
                time.sleep(delay)
        yield sftp


@contextlib.contextmanager
def _session(hook: SFTPHook, action: str, remote_dir: str) -> Iterator[paramiko.SFTPClient]:
    """The hook's managed SFTP client; low-level failures become actionable errors."""
    import paramiko

    conn = _conn_name(hook)
    where = f"on connection {conn!r}, remote directory {remote_dir!r}"
    try:
        with _connected(hook, action) as sftp:
            yield sftp
    except SftpTransportError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise SftpHostKeyError(
            f"SFTP {action} refused {where}: the server's host key does not match the key pinned "
            "in the connection's `host_key` extra. Possible man-in-the-middle or a re-keyed server: "
            "verify the new key with the server's operator out of band before updating the connection."
        ) from exc
    except paramiko.AuthenticationException as exc:
        raise SftpTransportError(
            f"SFTP {action} failed {where}: authentication refused. Check the connection's login and "
            "key_file/private_key, and that its public key is in the account's authorized_keys."
        ) from exc
    except FileNotFoundError as exc:
        raise RemoteFileMissing(
            f"SFTP {action} failed {where}: no such file or directory. Check the account's "
            "directory layout (inbox/, outbox/, quarantine/)."
        ) from exc
    except PermissionError as exc:
        raise SftpTransportError(
            f"SFTP {action} failed {where}: permission denied. The account may only use its own "
            "directories; check the server's chroot and folder ownership."
        ) from exc
    except (paramiko.SSHException, OSError, EOFError) as exc:
        # Connection dropped, server down, timeout: transient as far as we can tell; the task's
        # retry (with backoff) is the right answer, and every operation here is safe to repeat.
        raise SftpTransportError(
            f"SFTP {action} failed {where}: {type(exc).__name__}: {exc}. "
            "The operation is safe to retry once the server is reachable."
        ) from exc


def _remote_digest(sftp: paramiko.SFTPClient, path: str) -> tuple[str, int] | None:
    """(sha256, size) of a remote file, streamed; ``None`` when it does not exist."""
    sink = _HashingWriter()
    try:
        sftp.getfo(path, sink)
    except FileNotFoundError:
        return None
    return sink.digest.hexdigest(), sink.size


def _local_digest(open_source: Callable[[], IO[bytes]]) -> tuple[str, int]:
    sink = _HashingWriter()
    with open_source() as src:
        while chunk := src.read(CHUNK_SIZE):
            sink.write(chunk)
    return sink.digest.hexdigest(), sink.size


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _remove_if_present(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        return False
    return True


def _check_name(name: str, remote_dir: str) -> None:
    if not name or "/" in name or name.startswith(".") or name.endswith(PART_SUFFIX):
        raise ValueError(
            f"invalid remote file name for directory {remote_dir!r}: a plain name, not hidden, "
            f"not ending in {PART_SUFFIX!r}, without '/'"
        )


# ---------------------------------------------------------------------------- receiving
def is_temporary_upload(name: str) -> bool:
    """True for a name a client gives a file while writing it (:data:`TEMPORARY_UPLOAD_PATTERNS`)."""
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p) for p in TEMPORARY_UPLOAD_PATTERNS)


def is_request_name(name: str, patterns: Sequence[str] = DEFAULT_REQUEST_PATTERNS) -> bool:
    """True for a name a request may have: a pattern matches (case-insensitively), not hidden, not temporary.

    Case-insensitive: "REQUEST.XLSX" from a Windows desktop is still a request.
    """
    lowered = name.lower()
    return (not name.startswith(".") and not is_temporary_upload(name)
            and any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns))


def remote_file(name: str, size: int | None, mtime: float | None, mode: int | None, directory: str) -> RemoteFile | None:
    """A listed entry as a :class:`RemoteFile`, or ``None`` when it is not a regular file."""
    if mode is None or not stat.S_ISREG(mode):
        return None
    return RemoteFile(name=name, size=int(size or 0), mtime=int(mtime or 0), directory=directory)


def _listing(sftp: paramiko.SFTPClient, directory: str) -> list[RemoteFile]:
    files = (remote_file(e.filename, e.st_size, e.st_mtime, e.st_mode, directory) for e in sftp.listdir_attr(directory))
    return [f for f in files if f is not None]


#: What one look at a file tells: its size and mtime, keyed by the name's handle (never the name).
Look = dict[str, tuple[int, int]]


def look_of(files: Sequence[RemoteFile]) -> Look:
    """A listing as a :data:`Look` (safe for a trigger event: handles, sizes and times only)."""
    return {name_handle(f.name): (f.size, f.mtime) for f in files}


@dataclasses.dataclass(frozen=True)
class InboxSurvey:
    """What is in an inbox, by what is to be done with it; each list oldest first.

    :param ready: complete request files (settled, a request's name, within the size limit).
    :param oversized: complete request files over the size limit: refuse without downloading.
    :param strays: settled files that are no request — a dotfile, another extension.
    :param stale_uploads: temporary upload names (``.part``, ``.filepart``, …) unchanged for
        ``stale_after`` seconds: an upload that was abandoned.
    :param waiting: files still changing, or temporary uploads still fresh: looked at again later.
    """

    ready: list[RemoteFile]
    oversized: list[RemoteFile]
    strays: list[RemoteFile]
    stale_uploads: list[RemoteFile]
    waiting: int = 0

    @property
    def unanswered(self) -> list[RemoteFile]:
        """Everything that is no request to take but gets a word to the municipality."""
        return sorted([*self.oversized, *self.strays, *self.stale_uploads], key=_age_order)

    @property
    def actionable(self) -> bool:
        """True when a request can be taken or a file must be answered."""
        return bool(self.ready or self.unanswered)


def _age_order(f: RemoteFile) -> tuple[int, str]:
    return f.mtime, f.name


def classify_inbox(
    first: Look,
    second: Sequence[RemoteFile],
    *,
    patterns: Sequence[str] = DEFAULT_REQUEST_PATTERNS,
    max_bytes: int | None = None,
    stale_after: float = 86400.0,
    now: float | None = None,
) -> InboxSurvey:
    """Sort the files of a second look by what to do, using the first look to see what settled.

    A file is settled when its size and mtime are those of the first look. Pure: the sync
    sensor and the async trigger list the inbox their own way and decide here alike.

    :param first: the earlier look (:func:`look_of`).
    :param second: the files listed now.
    :param patterns: request file-name patterns.
    :param max_bytes: largest request accepted (``None``: no limit).
    :param stale_after: seconds after which an unchanged temporary upload counts as abandoned.
    :param now: the current time (epoch seconds), for the age of temporary uploads.
    """
    now = time.time() if now is None else now
    ready, oversized, strays, stale, waiting = [], [], [], [], 0
    for f in second:
        settled = first.get(name_handle(f.name)) == (f.size, f.mtime)
        if is_temporary_upload(f.name):
            if settled and now - f.mtime >= stale_after:
                stale.append(f)
            else:
                waiting += 1
        elif not settled:
            waiting += 1
        elif not is_request_name(f.name, patterns):
            strays.append(f)
        elif max_bytes is not None and f.size > max_bytes:
            oversized.append(f)
        else:
            ready.append(f)
    return InboxSurvey(*(sorted(group, key=_age_order) for group in (ready, oversized, strays, stale)), waiting=waiting)


def needs_second_look(files: Sequence[RemoteFile], *, stale_after: float = 86400.0, now: float | None = None) -> bool:
    """Whether a first look holds anything that a second look could settle (else nothing to wait for)."""
    now = time.time() if now is None else now
    return any(not is_temporary_upload(f.name) or now - f.mtime >= stale_after for f in files)


def survey_inbox(
    hook: SFTPHook,
    directory: str = "inbox",
    patterns: Sequence[str] = DEFAULT_REQUEST_PATTERNS,
    settle_seconds: float = 2.0,
    *,
    max_bytes: int | None = None,
    stale_after: float = 86400.0,
    previous: Look | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> InboxSurvey:
    """Look at ``directory`` (twice, ``settle_seconds`` apart, when needed) and sort what is there.

    Only listings: nothing is read, moved or changed. Directories and links are ignored.

    :param hook: SFTP hook of the municipality's connection.
    :param directory: remote directory to look in.
    :param patterns: shell patterns of request file names, matched case-insensitively.
    :param settle_seconds: pause between the two looks.
    :param max_bytes: largest request accepted, judged on the listed size.
    :param stale_after: seconds after which an unchanged temporary upload is reported.
    :param previous: an earlier look (e.g. the trigger's, at least ``settle_seconds`` ago):
        then one listing now is enough.
    :param sleep: the pause function (tests may replace it).
    """
    with _session(hook, "listing of the inbox", directory) as sftp:
        current = _listing(sftp, directory)
        if previous is None:
            if not needs_second_look(current, stale_after=stale_after):
                return classify_inbox(look_of(current), current, patterns=patterns, max_bytes=max_bytes,
                                      stale_after=stale_after)
            previous = look_of(current)
            sleep(settle_seconds)
            current = _listing(sftp, directory)
    return classify_inbox(previous, current, patterns=patterns, max_bytes=max_bytes, stale_after=stale_after)


def list_ready_requests(
    hook: SFTPHook,
    directory: str = "inbox",
    patterns: Sequence[str] = DEFAULT_REQUEST_PATTERNS,
    settle_seconds: float = 2.0,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[RemoteFile]:
    """Request files in ``directory`` that are complete and ready to fetch, oldest first.

    Never temporary uploads (``*.part``, …), dotfiles, directories or links. A file is ready
    only when its size and mtime are the same in two listings ``settle_seconds`` apart (a file
    still being uploaded grows in between). With nothing to settle it returns at once.

    :param hook: SFTP hook of the municipality's connection.
    :param directory: remote directory to look in.
    :param patterns: shell patterns of request file names, matched case-insensitively.
    :param settle_seconds: pause between the two listings.
    :param sleep: the pause function (tests may replace it).
    :return: ready files sorted by (mtime, name).
    """
    survey = survey_inbox(hook, directory, patterns, settle_seconds, sleep=sleep)
    return survey.ready


def remote_size(hook: SFTPHook, path: str) -> int:
    """Size in bytes of a remote file, from ``stat`` (nothing is read).

    :raises RemoteFileMissing: the file is not there.
    """
    with _session(hook, "stat", posixpath.dirname(path) or ".") as sftp:
        return int(sftp.stat(path).st_size or 0)


def fetch(hook: SFTPHook, remote_path: str, local_path: str | os.PathLike, *, max_bytes: int | None = None) -> tuple[str, int]:
    """Download a remote file atomically, hashing it on the way.

    Streams into ``<local_path>.tmp`` (mode 600) while computing SHA-256, fsyncs, then renames
    to ``local_path``: a crash leaves no partial file under the final name. Fails if the remote
    file changed size while it was read.

    :param hook: SFTP hook of the municipality's connection.
    :param remote_path: remote file, e.g. ``inbox/request.xlsx``.
    :param local_path: destination; its folder is created if needed.
    :param max_bytes: refuse (:class:`RemoteFileTooLarge`) a file whose ``stat`` size is larger,
        before a byte is read.
    :return: ``(sha256_hex, size)`` of the bytes written.
    """
    local = Path(local_path)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".tmp")
    try:
        # Staging copies are private to the worker's user from the first byte.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            sink = _download(hook, remote_path, fh, max_bytes=max_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, local)
        _fsync_dir(local.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return sink.digest.hexdigest(), sink.size


def fetch_bytes(hook: SFTPHook, remote_path: str, *, max_bytes: int | None = None) -> tuple[bytes, str, int]:
    """Download a remote file into memory, hashing it on the way: ``(content, sha256_hex, size)``.

    For a file that must never touch the disk as it is (a request: the caller seals it with the
    staging key). Fails if the remote file changed size while it was read; a file over
    ``max_bytes`` (judged by stat) is never downloaded (:class:`RemoteFileTooLarge`).
    """
    buffer = io.BytesIO()
    sink = _download(hook, remote_path, buffer, max_bytes=max_bytes)
    return buffer.getvalue(), sink.digest.hexdigest(), sink.size


def _download(hook: SFTPHook, remote_path: str, target: IO[bytes], *, max_bytes: int | None = None) -> _HashingWriter:
    remote_dir = posixpath.dirname(remote_path) or "."
    sink = _HashingWriter(target)
    with _session(hook, "fetch", remote_dir) as sftp:
        expected = sftp.stat(remote_path).st_size
        if max_bytes is not None and (expected or 0) > max_bytes:
            raise RemoteFileTooLarge(
                f"fetch of {shown(posixpath.basename(remote_path))!r} on connection {_conn_name(hook)!r}, remote "
                f"directory {remote_dir!r}: the file has {expected} bytes, more than the {max_bytes} accepted; "
                "it was not downloaded"
            )
        sftp.getfo(remote_path, sink)
    if sink.size != expected:
        raise SftpTransportError(
            f"fetch of {shown(posixpath.basename(remote_path))!r} on connection {_conn_name(hook)!r}, remote "
            f"directory {remote_dir!r}: read {sink.size} bytes but the file had {expected}; it "
            "changed while being read. Retry once the upload has finished."
        )
    log.info("fetched %s from %s (%d bytes, sha256 %s)", shown(posixpath.basename(remote_path)), _conn_name(hook),
             sink.size, sink.digest.hexdigest())
    return sink


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable, not only the file's bytes.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remote_sha256(hook: SFTPHook, path: str) -> str | None:
    """SHA-256 of a remote file, streamed; ``None`` when the file does not exist.

    :param hook: SFTP hook.
    :param path: remote file path.
    """
    with _session(hook, "hash", posixpath.dirname(path) or ".") as sftp:
        digest = _remote_digest(sftp, path)
    return digest[0] if digest else None


# ---------------------------------------------------------------------------- delivering
def _deliver_stream(
    hook: SFTPHook, open_source: Callable[[], IO[bytes]], remote_dir: str, name: str
) -> tuple[str, int]:
    _check_name(name, remote_dir)
    final = posixpath.join(remote_dir, name)
    part = final + PART_SUFFIX
    conn = _conn_name(hook)
    where = f"on connection {conn!r}, remote directory {remote_dir!r}"
    with _session(hook, "delivery", remote_dir) as sftp:
        existing = _remote_digest(sftp, final)
        if existing is not None:
            local = _local_digest(open_source)
            if existing == local:
                # Already delivered (a retry, a cleared task): nothing to do, but tidy a
                # .part an interrupted earlier attempt may have left behind.
                _remove_if_present(sftp, part)
                log.info("%s already delivered %s with sha256 %s: nothing to do", shown(name), where, local[0])
                return local
            raise DeliveryConflict(
                f"cannot deliver {shown(name)!r} {where}: a different file with that name is already there "
                f"(remote sha256 {existing[0]}, ours {local[0]}). It is never overwritten: find out "
                "which delivery it belongs to before removing or renaming it."
            )
        with open_source() as src:
            reader = _HashingReader(src)
            # "wb" truncates whatever an interrupted attempt left in the .part file;
            # confirm=True stats the result and fails on a size mismatch.
            sftp.putfo(reader, part, confirm=True)
        sent = (reader.digest.hexdigest(), reader.size)
        try:
            # SFTP v3 rename fails when the target exists (OpenSSH: link + unlink), so a file
            # that appeared meanwhile is never replaced.
            sftp.rename(part, final)
        except OSError:
            present = _remote_digest(sftp, final)
            if present is None:
                raise
            _remove_if_present(sftp, part)
            if present != sent:
                raise DeliveryConflict(
                    f"cannot deliver {shown(name)!r} {where}: a different file with that name appeared "
                    f"during the upload (remote sha256 {present[0]}, ours {sent[0]}); not overwritten."
                ) from None
            return sent
        back = _remote_digest(sftp, final)
        if back != sent:
            # Remove what we just put there so a retry delivers a good copy instead of
            # finding a corrupt file under the final name.
            _remove_if_present(sftp, final)
            raise DeliveryVerificationError(
                f"delivery of {shown(name)!r} {where} failed verification: sent {sent[1]} bytes with sha256 "
                f"{sent[0]}, read back {back[1] if back else 'nothing'}. The remote copy was removed; "
                "retry the task."
            )
    log.info("delivered %s %s (%d bytes, sha256 %s)", shown(name), where, sent[1], sent[0])
    return sent


def deliver(hook: SFTPHook, local_path: str | os.PathLike, remote_dir: str, name: str) -> tuple[str, int]:
    """Upload a local file as ``name.part``, rename it to ``name``, and verify it.

    Idempotent: if ``name`` already holds the same bytes, nothing is uploaded. Never overwrites
    a different file.

    :param hook: SFTP hook of the municipality's connection.
    :param local_path: file to send.
    :param remote_dir: remote directory, e.g. ``outbox``.
    :param name: final remote file name.
    :return: ``(sha256_hex, size)`` of the delivered file.
    :raises DeliveryConflict: a different file called ``name`` is already there.
    :raises DeliveryVerificationError: the read-back does not match what was sent.
    :raises SftpTransportError: connection or server failure (safe to retry).
    """
    path = Path(local_path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to deliver: local file {path} does not exist")
    return _deliver_stream(hook, lambda: open(path, "rb"), remote_dir, name)


def upload_bytes(hook: SFTPHook, data: bytes, remote_dir: str, name: str) -> tuple[str, int]:
    """Like :func:`deliver`, for small in-memory content such as a validation report.

    :param hook: SFTP hook.
    :param data: the file's bytes.
    :param remote_dir: remote directory, e.g. ``outbox``.
    :param name: final remote file name.
    :return: ``(sha256_hex, size)``.
    """
    return _deliver_stream(hook, lambda: io.BytesIO(data), remote_dir, name)


# ---------------------------------------------------------------------------- housekeeping
def move(hook: SFTPHook, src: str, dst_dir: str) -> str:
    """Move a remote file into ``dst_dir`` (e.g. ``quarantine``), never replacing a file there.

    When the name is taken, ``-1``, ``-2``, … is added before the extension.

    :param hook: SFTP hook.
    :param src: remote file to move, e.g. ``inbox/request.xlsx``.
    :param dst_dir: remote directory to move it into.
    :return: the file's new remote path.
    :raises RemoteFileMissing: ``src`` does not exist (already moved or deleted).
    """
    name = posixpath.basename(src)
    stem, ext = posixpath.splitext(name)
    with _session(hook, "move", dst_dir) as sftp:
        if not _exists(sftp, src):
            raise RemoteFileMissing(
                f"cannot move {shown(name)!r} to {dst_dir!r} on connection {_conn_name(hook)!r}: it is no longer "
                f"in {posixpath.dirname(src) or '.'!r} (already moved or deleted?)."
            )
        for n in range(1000):
            target = posixpath.join(dst_dir, name if n == 0 else f"{stem}-{n}{ext}")
            try:
                sftp.rename(src, target)
            except OSError as exc:
                if _exists(sftp, target):
                    continue
                raise exc
            log.info("moved %s to %s on %s", shown(name), shown(target), _conn_name(hook))
            return target
    raise SftpTransportError(
        f"cannot move {shown(name)!r} into {dst_dir!r} on connection {_conn_name(hook)!r}: 1000 files with "
        "that name are already there; clean up the directory."
    )


def delete(hook: SFTPHook, path: str) -> bool:
    """Delete a remote file.

    :param hook: SFTP hook.
    :param path: remote file path.
    :return: ``True`` if deleted, ``False`` if it was already gone (not an error: retries and
        retention runs may repeat a deletion).
    """
    with _session(hook, "delete", posixpath.dirname(path) or ".") as sftp:
        try:
            sftp.remove(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT or isinstance(exc, FileNotFoundError):
                return False
            raise
    log.info("deleted %s on %s", shown(posixpath.basename(path)), _conn_name(hook))
    return True


def delete_verified(
    hook: SFTPHook, path: str, *, sha256: str, size: int | None = None,
    before_delete: Callable[[str], None] | None = None,
) -> str | None:
    """Delete the remote file whose content has ``sha256``; what was verified, or ``None``.

    The file at ``path`` is hashed first; when it is not there or holds something else, the
    other files of its folder with the same size are (a copy renamed in place keeps its
    content). Only a file whose SHA-256 matches is removed, so a different file that took the
    name is never deleted in its place.

    :param before_delete: called with the verification text just before the removal (the
        retention run records it, so a crash in between is certified truthfully by the retry).
    :returns: e.g. ``"file received/#1a2b3c4d5e6f on connection 'sftp_44021', 2048 bytes,
        SHA-256 … matched"``; ``None`` when no file matches (the caller reports it missing).
    """
    directory = posixpath.dirname(path)
    with _session(hook, "delete", directory or ".") as sftp:
        try:
            listed = sftp.listdir_attr(directory or ".")
        except FileNotFoundError:
            listed = []
        others = [
            posixpath.join(directory, entry.filename) for entry in listed
            if entry.st_mode is not None and stat.S_ISREG(entry.st_mode)
            and (size is None or entry.st_size == size) and posixpath.join(directory, entry.filename) != path
        ]
        for candidate in [path, *others]:
            digest = _remote_digest(sftp, candidate)
            if digest is None or digest[0] != sha256:
                continue
            verified = (f"file {shown(candidate)} on connection {_conn_name(hook)!r}, {digest[1]} bytes, "
                        f"SHA-256 {sha256} matched")
            if before_delete is not None:
                before_delete(verified)
            sftp.remove(candidate)
            log.info("deleted %s on %s after checking its SHA-256", shown(candidate), _conn_name(hook))
            return verified
    return None


__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_REQUEST_PATTERNS",
    "DeliveryConflict",
    "DeliveryVerificationError",
    "InboxSurvey",
    "LocalFileError",
    "PART_SUFFIX",
    "RemoteFile",
    "RemoteFileMissing",
    "RemoteFileTooLarge",
    "TEMPORARY_UPLOAD_PATTERNS",
    "SftpHostKeyError",
    "SftpTransportError",
    "conn_id_for",
    "delete",
    "delete_verified",
    "deliver",
    "fetch",
    "classify_inbox",
    "fetch_bytes",
    "list_ready_requests",
    "move",
    "remote_sha256",
    "sftp_hook",
    "survey_inbox",
    "upload_bytes",
]
