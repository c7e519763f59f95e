"""Open the municipality's password-protected Excel file in memory.

Excel and LibreOffice protect a workbook in different ways, and all of them arrive:

* ``agile`` — xlsx from Excel 2010 on (AES-256, SHA-512), and what :func:`encrypt_agile` writes;
* ``standard`` — xlsx from Excel 2007 and from LibreOffice (AES-128, SHA-1);
* ``rc4`` / ``rc4_cryptoapi`` — xls (Excel 97–2003 format) from LibreOffice and old Excel;
* ``xor`` — the obsolete xls obfuscation, still read because msoffcrypto-tool can.

msoffcrypto-tool decrypts all of them. The password is verified before anything is decrypted
(with a wrong password the library would otherwise write garbage first), and the plaintext
only ever exists as bytes in this process: nothing is written to disk.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import msoffcrypto
import olefile
from msoffcrypto import exceptions as mso_exceptions
from msoffcrypto.format.ooxml import OOXMLFile

from welfare_exchange.intake.failures import IntakeError

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
# BIFF record ids (MS-XLS 2.3): FilePass marks an encrypted workbook, EOF ends the globals.
_BIFF_FILEPASS = 0x002F
_BIFF_EOF = 0x000A
_CHUNK = 1 << 20


def encrypt_agile(plain_xlsx: bytes, password: str) -> bytes:
    """Encrypt an unencrypted xlsx with a password (OOXML Agile encryption), in memory.

    Used for result files and for the test corpus; msoffcrypto-tool only writes Agile.
    """
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain_xlsx)).encrypt(password, out)
    return out.getvalue()


def detect_encryption(data: bytes) -> str | None:
    """The encryption of an Excel file: ``agile``, ``standard``, ``rc4``, ``rc4_cryptoapi``,
    ``xor``, or ``None`` when it is an unencrypted workbook.

    Raises :class:`IntakeError` (``not_excel``, ``corrupt``, ``unsupported_encryption``) when it
    is not a workbook this service can open. Needs no password.
    """
    head = data[:8]
    if head == _OLE_MAGIC:
        return _detect_ole(data)
    if head.startswith(_ZIP_MAGIC):
        _require_xlsx_zip(data)
        return None
    raise IntakeError("not_excel")


def _detect_ole(data: bytes) -> str | None:
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception as exc:  # olefile raises assorted errors on damaged containers
        raise IntakeError("corrupt") from exc
    try:
        if ole.exists("EncryptionInfo"):
            return _ooxml_kind(ole)
        if ole.exists("Workbook"):
            return _xls_kind(ole.openstream("Workbook").read())
        if ole.exists("Book"):
            # Excel 5/95 (BIFF5) workbooks predate the encryption the protocol relies on.
            raise IntakeError("unsupported_encryption")
        raise IntakeError("not_excel")  # a Word or PowerPoint file, an msi, …
    except IntakeError:
        raise
    except Exception as exc:
        raise IntakeError("corrupt") from exc
    finally:
        ole.close()


def _ooxml_kind(ole: olefile.OleFileIO) -> str:
    info = ole.openstream("EncryptionInfo").read(4)
    if len(info) < 4:
        raise IntakeError("corrupt")
    major, minor = struct.unpack("<HH", info)
    if (major, minor) == (4, 4):
        return "agile"
    if major in (2, 3, 4) and minor == 2:
        return "standard"
    # Extensible encryption (x.3) and unknown versions: msoffcrypto cannot decrypt them.
    raise IntakeError("unsupported_encryption")


def _xls_kind(stream: bytes) -> str | None:
    pos = 0
    while pos + 4 <= len(stream):
        record, size = struct.unpack_from("<HH", stream, pos)
        if record == _BIFF_FILEPASS:
            body = stream[pos + 4 : pos + 4 + size]
            if len(body) < 2:
                raise IntakeError("corrupt")
            (method,) = struct.unpack_from("<H", body)
            if method == 0:
                return "xor"
            if method == 1 and len(body) >= 6:
                major, minor = struct.unpack_from("<HH", body, 2)
                if (major, minor) == (1, 1):
                    return "rc4"
                if major in (2, 3, 4) and minor == 2:
                    return "rc4_cryptoapi"
            raise IntakeError("unsupported_encryption")
        if record == _BIFF_EOF:
            return None  # FilePass can only appear in the globals substream
        pos += 4 + size
    raise IntakeError("corrupt")


def _require_xlsx_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise IntakeError("corrupt") from exc  # a zip header but no readable directory: cut off
    if "xl/workbook.xml" not in names and "xl/workbook.bin" not in names:
        raise IntakeError("not_excel")  # docx, ods, a plain zip archive


def decrypt(data: bytes, password: str | None, kind: str) -> bytes:
    """Decrypt ``data`` (of encryption ``kind``) with ``password``; the plaintext workbook.

    A wrong password raises ``wrong_password`` and never yields output. For Standard encryption
    the password is verified first (``verify_password``; msoffcrypto always checks it for xls).
    For Agile encryption the file's own HMAC does that job on the way: a wrong password gives a
    wrong key, and the integrity check fails before anything is returned; only then is the
    password verifier consulted, to tell a wrong password from a damaged file. Verifying first
    would derive the key twice (100,000 SHA-512 rounds each, ~0.09 s) on every good file.
    """
    if password is None or password == "":
        raise IntakeError("no_password")
    try:
        office = _load(data, password, verify=kind == "standard")
    except mso_exceptions.InvalidKeyError as exc:
        raise IntakeError("wrong_password") from exc
    except (mso_exceptions.DecryptionError, NotImplementedError) as exc:
        raise IntakeError("unsupported_encryption") from exc
    except Exception as exc:
        raise IntakeError("corrupt") from exc
    out = io.BytesIO()
    try:
        if kind == "agile":
            # The HMAC check catches a wrong key, and a file altered or cut off after encryption.
            office.decrypt(out, verify_integrity=True)
        else:
            office.decrypt(out)
    except Exception as exc:
        if kind == "agile" and not _password_matches(data, password):
            raise IntakeError("wrong_password") from None
        # The password is right (msoffcrypto reports a package that does not unzip as
        # InvalidKeyError too): the file itself is damaged or cut off.
        raise IntakeError("corrupt") from exc
    return out.getvalue()


def _load(data: bytes, password: str, *, verify: bool):
    office = msoffcrypto.OfficeFile(io.BytesIO(data))
    if verify:
        office.load_key(password=password, verify_password=True)
    else:
        office.load_key(password=password)
    return office


def _password_matches(data: bytes, password: str) -> bool:
    try:
        _load(data, password, verify=True)
    except mso_exceptions.InvalidKeyError:
        return False
    except Exception:
        return True  # the verifier itself is unreadable: the file is damaged, not the password wrong
    return True


def check_zip(plain: bytes, *, max_bytes: int, max_ratio: float, max_members: int) -> None:
    """Refuse an xlsx whose zip would unpack to too much data, before any parser sees it.

    Checks the declared sizes and compression ratios first (cheap), then inflates every
    member once while counting, because the declared sizes are written by the sender and a
    hostile file can lie about them.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(plain)) as archive:
            members = archive.infolist()
            if len(members) > max_members:
                raise IntakeError("zip_bomb")
            if sum(member.file_size for member in members) > max_bytes:
                raise IntakeError("zip_bomb")
            for member in members:
                # Small members compress absurdly well (empty styles), so only big ones count.
                if member.file_size > _CHUNK and member.file_size > max_ratio * max(member.compress_size, 1):
                    raise IntakeError("zip_bomb")
            total = 0
            for member in members:
                with archive.open(member) as stream:
                    while chunk := stream.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise IntakeError("zip_bomb")
    except IntakeError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise IntakeError("corrupt") from exc
