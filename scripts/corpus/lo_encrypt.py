"""Write password-encrypted spreadsheets with LibreOffice itself, headless, through UNO.

Municipalities send files saved by LibreOffice as well as by Excel, and LibreOffice encrypts
differently: Standard encryption (AES-128/SHA-1) for xlsx, RC4 for xls. msoffcrypto-tool can
only *write* Agile encryption, so the test corpus needs the real program to make the others.

Run with the system Python (the one with ``python3-uno``), not the project's venv::

    /usr/bin/python3 scripts/corpus/lo_encrypt.py JOBS.json

``JOBS.json`` is a list of jobs ``{"csv": path, "out": path, "format": "xlsx"|"xls",
"password": str, "text_columns": [1]}``: each CSV (comma-separated, UTF-8) is opened in Calc
with the listed 1-based columns imported as text (so leading zeros survive, as when a
municipality types them in a text column) and stored encrypted. The job file is written by
the test set-up with generated passwords and deleted afterwards; passwords are never on a
command line. One soffice process serves all jobs because starting it costs seconds.

It starts its own soffice with a throw-away profile (``-env:UserInstallation``) and a named
pipe, so it never touches a user's LibreOffice or opens a network port.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import uno
from com.sun.star.beans import NamedValue, PropertyValue

FILTERS = {"xlsx": "Calc MS Excel 2007 XML", "xls": "MS Excel 97"}
# Excel 97-2003 passwords are at most 15 characters: LibreOffice silently writes an
# UNENCRYPTED .xls with a longer one, so refuse such a job instead of making a wrong fixture.
XLS_MAX_PASSWORD = 15


def _props(**values):
    out = []
    for name, value in values.items():
        prop = PropertyValue()
        prop.Name = name
        prop.Value = value
        out.append(prop)
    return tuple(out)


def _encryption(fmt, password):
    # The xls filter takes the plain "Password" (RC4). The OOXML filter ignores it and writes a
    # plain xlsx unless EncryptionData names an engine: "StrongEncryptionDataSpace" is the
    # Standard (AES-128) engine the Save-As dialog uses. The sequence must be wrapped in a
    # typed uno.Any, or pyuno passes it as an untyped tuple and LibreOffice drops it.
    if fmt == "xls":
        return {"Password": password}
    data = (_named("CryptoType", "StrongEncryptionDataSpace"), _named("OOXPassword", password))
    return {"EncryptionData": uno.Any("[]com.sun.star.beans.NamedValue", data)}


def _named(name, value):
    entry = NamedValue()
    entry.Name = name
    entry.Value = value
    return entry


def _connect(pipe_name, proc, timeout=60.0):
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.monotonic() + timeout
    while True:
        try:
            ctx = resolver.resolve(f"uno:pipe,name={pipe_name};urp;StarOffice.ComponentContext")
            return ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        except Exception:  # NoConnectException until soffice listens
            if proc.poll() is not None:
                raise RuntimeError(f"soffice exited with code {proc.returncode} before accepting connections")
            if time.monotonic() > deadline:
                raise RuntimeError("soffice did not accept a UNO connection in time")
            time.sleep(0.2)


def _column_formats(text_columns, width=26):
    # CSV filter token 5: "column/format" pairs; 2 = text, 1 = standard (numbers become numbers).
    return "/".join(f"{col}/{2 if col in text_columns else 1}" for col in range(1, width + 1))


def run(jobs):
    """Store every job's CSV encrypted; returns the list of written paths."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        raise RuntimeError("LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui python3-uno")
    profile = tempfile.mkdtemp(prefix="we-lo-profile-")
    pipe_name = f"we_corpus_{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [
            soffice,
            "--headless", "--invisible", "--norestore", "--nologo", "--nodefault", "--nolockcheck",
            f"-env:UserInstallation=file://{profile}",
            f"--accept=pipe,name={pipe_name};urp;StarOffice.ComponentContext",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    written = []
    desktop = None
    try:
        desktop = _connect(pipe_name, proc)
        for job in jobs:
            fmt = job["format"]
            if fmt == "xls" and len(job["password"]) > XLS_MAX_PASSWORD:
                raise ValueError("xls passwords are at most 15 characters (LibreOffice would not encrypt)")
            text_columns = set(job.get("text_columns", [1]))
            load_args = _props(
                Hidden=True,
                FilterName="Text - txt - csv (StarCalc)",
                FilterOptions=f"44,34,76,1,{_column_formats(text_columns)}",
            )
            doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(os.path.abspath(job["csv"])), "_blank", 0, load_args)
            try:
                store_args = _props(FilterName=FILTERS[fmt], Overwrite=True, **_encryption(fmt, job["password"]))
                doc.storeToURL(uno.systemPathToFileUrl(os.path.abspath(job["out"])), store_args)
            finally:
                doc.close(True)
            written.append(job["out"])
    finally:
        try:
            if desktop is not None:
                desktop.terminate()
        except Exception:  # the bridge drops while soffice exits: expected
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main(argv):
    if len(argv) != 2:
        print("usage: lo_encrypt.py JOBS.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        jobs = json.load(handle)
    for path in run(jobs):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
