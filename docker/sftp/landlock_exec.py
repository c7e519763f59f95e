#!/usr/bin/env python3
"""Run a command in a Landlock domain where nothing may be created except in the given directories.

    landlock_exec.py [--best-effort] --create-in DIR [--create-in DIR ...] -- COMMAND [ARG ...]

Why: the municipalities' sshd runs under it so that a municipality can *delete* results in its
``outbox/`` but never *create* a file there. POSIX gives one right for both (write on the
folder); Linux Landlock (5.13+) separates them: making a file, directory, link, socket or
device is refused everywhere except beneath ``--create-in`` directories (their ``inbox/``,
sshd's pid folder), while deleting, reading and writing existing files stay as POSIX allows.
The domain is inherited by every sshd session process and survives ``exec``.

Exit codes: the command's own once it runs; 3 when the kernel has no Landlock (unless
``--best-effort``: then the command runs without the restriction, after a warning on stderr).
Standard library only: it runs in the SFTP image and on the developer's machine alike.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # same numbers on every architecture
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1
_PR_SET_NO_NEW_PRIVS = 38
# Making something in a directory: character device, directory, regular file, socket, FIFO,
# block device, symbolic link (Landlock ABI 1).
_MAKE = {"char": 1 << 6, "dir": 1 << 7, "reg": 1 << 8, "sock": 1 << 9, "fifo": 1 << 10, "block": 1 << 11, "sym": 1 << 12}
HANDLED = sum(_MAKE.values())
ALLOWED_BENEATH = _MAKE["reg"]


class LandlockUnavailable(OSError):
    """The kernel does not offer Landlock (too old, disabled, or filtered by seccomp)."""


def _syscall(libc, number: int, *args) -> int:
    result = libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def restrict(create_in: list[str]) -> int:
    """Restrict this process (and what it executes) to creating regular files beneath ``create_in``.

    :return: the kernel's Landlock ABI version.
    :raises LandlockUnavailable: no Landlock here.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        abi = _syscall(libc, _CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError as exc:
        raise LandlockUnavailable(exc.errno, f"Landlock is not available: {exc.strerror}") from exc
    attr = ctypes.create_string_buffer(struct.pack("=Q", HANDLED))
    ruleset = _syscall(libc, _CREATE_RULESET, attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
    try:
        for folder in create_in:
            fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                beneath = ctypes.create_string_buffer(struct.pack("=Qi", ALLOWED_BENEATH, fd))
                _syscall(libc, _ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), beneath,
                         ctypes.c_uint32(0))
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(NO_NEW_PRIVS): {os.strerror(err)}")
        _syscall(libc, _RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi


def main(argv: list[str]) -> int:
    best_effort, create_in = False, []
    args = list(argv)
    while args and args[0] != "--":
        option = args.pop(0)
        if option == "--best-effort":
            best_effort = True
        elif option == "--create-in" and args:
            create_in.append(args.pop(0))
        else:
            print(f"landlock_exec: unknown option {option!r}\n{__doc__}", file=sys.stderr)
            return 2
    command = args[1:]
    if not command:
        print(f"landlock_exec: no command\n{__doc__}", file=sys.stderr)
        return 2
    try:
        restrict(create_in)
    except LandlockUnavailable as exc:
        if not best_effort:
            print(f"landlock_exec: {exc.strerror}; refusing to run {command[0]} unrestricted", file=sys.stderr)
            return 3
        print(f"landlock_exec: warning: {exc.strerror}; {command[0]} runs without the restriction", file=sys.stderr)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
