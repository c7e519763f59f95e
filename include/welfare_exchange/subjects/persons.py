"""Read the INSZ numbers of a data-subject request from a file — never from the command line.

A number on the command line would end up in the shell history and the process list; a file
can be created with restrictive permissions and deleted after use. Errors name the line, never
its content.
"""

from __future__ import annotations

import pathlib

from welfare_exchange import insz
from welfare_exchange.errors import InputError


def read_insz_file(path: pathlib.Path) -> list[str]:
    """The distinct valid INSZ numbers in ``path``, one per line, in file order.

    Separators people type (``YY.MM.DD-SSS.CC``) are accepted; empty lines and lines starting
    with ``#`` are ignored. Any other line that is not a valid INSZ makes the whole request fail
    (a typo must not silently answer for nobody).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the INSZ file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"the INSZ file {path} is not UTF-8 text: one INSZ number per line") from None
    numbers: list[str] = []
    bad: list[int] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        number = insz.normalise(raw)
        if len(number) != 11 or not number.isdigit() or not insz.is_valid(number):
            bad.append(line_no)
        elif number not in numbers:
            numbers.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" …" if len(bad) > 20 else "")
        raise InputError(f"the INSZ file {path} has lines that are not valid INSZ numbers: line(s) {shown}")
    if not numbers:
        raise InputError(f"the INSZ file {path} holds no INSZ number (one per line)")
    return numbers
