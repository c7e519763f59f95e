"""Receiving requests over SFTP: readiness, ordering, streaming fetch, quarantine, deletion."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import pytest

from welfare_exchange.transport import sftp as transport

pytestmark = pytest.mark.sftp


def _put(m, name: str, data: bytes, directory: str = "inbox") -> None:
    """Write straight under the final name, as a careless client would (no .part)."""
    with m.sftp() as sftp, sftp.open(f"{directory}/{name}", "wb") as fh:
        fh.write(data)


def test_list_ready_skips_part_files_dotfiles_other_patterns_and_directories(sftp_municipality):
    m = sftp_municipality
    for name in ("a.xlsx", "B.XLS", "c.xlsx.part", ".hidden.xlsx", "notes.txt"):
        _put(m, name, b"x" * 10)
    # The municipality may not make directories (-P mkdir): one made on the server's side.
    (m.local_dir("inbox") / "folder.xlsx").mkdir()

    ready = transport.list_ready_requests(m.hook(), settle_seconds=0.2)

    assert sorted(f.name for f in ready) == ["B.XLS", "a.xlsx"]
    assert all(f.directory == "inbox" and f.path == f"inbox/{f.name}" and f.size == 10 for f in ready)


def test_list_ready_returns_oldest_first_then_by_name(sftp_municipality):
    m = sftp_municipality
    base = int(time.time()) - 3600
    with m.sftp() as sftp:
        for name, age in (("z.xlsx", 300), ("a.xlsx", 100), ("m.xlsx", 300), ("b.xlsx", 200)):
            with sftp.open(f"inbox/{name}", "wb") as fh:
                fh.write(name.encode())
            sftp.utime(f"inbox/{name}", (base - age, base - age))

    ready = transport.list_ready_requests(m.hook(), settle_seconds=0.1)

    assert [f.name for f in ready] == ["m.xlsx", "z.xlsx", "b.xlsx", "a.xlsx"]


def test_empty_inbox_returns_at_once_without_waiting(sftp_municipality):
    slept = []
    assert transport.list_ready_requests(sftp_municipality.hook(), settle_seconds=30, sleep=slept.append) == []
    assert slept == []


def test_a_file_still_growing_is_listed_only_after_it_stopped_growing(sftp_municipality):
    m = sftp_municipality
    _put(m, "stable.xlsx", b"s" * 100)
    chunk = os.urandom(256 * 1024)
    with m.sftp() as sftp:
        fh = sftp.open("inbox/growing.xlsx", "wb")
        fh.write(chunk)
        fh.flush()

        def upload_goes_on(seconds):
            # The settle pause, in which the upload goes on: the second chunk lands between the
            # two looks — for certain, not by racing a sleep against the pause.
            fh.write(chunk)
            fh.flush()

        ready = transport.list_ready_requests(m.hook(), settle_seconds=1.5, sleep=upload_goes_on)
        assert [f.name for f in ready] == ["stable.xlsx"]
        fh.close()

    ready = {f.name: f for f in transport.list_ready_requests(m.hook(), settle_seconds=0.3)}
    assert set(ready) == {"stable.xlsx", "growing.xlsx"}
    assert ready["growing.xlsx"].size == 2 * len(chunk)


def test_fetch_streams_to_an_atomic_private_file_with_its_sha256(sftp_municipality, tmp_path):
    m = sftp_municipality
    data = os.urandom(3 * 1024 * 1024 + 17)
    m.upload_request(data, "request.xlsx")
    target = tmp_path / "staging" / "request.xlsx"

    sha, size = transport.fetch(m.hook(), "inbox/request.xlsx", target)

    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["request.xlsx"]
    assert transport.remote_sha256(m.hook(), "inbox/request.xlsx") == sha


def test_fetch_of_a_missing_file_fails_clearly_and_leaves_nothing(sftp_municipality, tmp_path):
    m = sftp_municipality
    with pytest.raises(transport.RemoteFileMissing) as err:
        transport.fetch(m.hook(), "inbox/gone.xlsx", tmp_path / "gone.xlsx")
    assert m.conn_id in str(err.value) and "'inbox'" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    assert transport.remote_sha256(m.hook(), "inbox/gone.xlsx") is None


def test_move_to_quarantine_never_replaces_and_adds_a_suffix(sftp_municipality):
    m = sftp_municipality
    hook = m.hook()
    m.upload_request(b"first", "bad.xlsx")
    assert transport.move(hook, "inbox/bad.xlsx", "quarantine") == "quarantine/bad.xlsx"
    m.upload_request(b"second", "bad.xlsx")
    assert transport.move(hook, "inbox/bad.xlsx", "quarantine") == "quarantine/bad-1.xlsx"

    assert (m.local_dir("quarantine") / "bad.xlsx").read_bytes() == b"first"
    assert (m.local_dir("quarantine") / "bad-1.xlsx").read_bytes() == b"second"
    assert list(m.local_dir("inbox").iterdir()) == []
    with pytest.raises(transport.RemoteFileMissing):
        transport.move(hook, "inbox/bad.xlsx", "quarantine")


def test_delete_is_true_once_then_false(sftp_municipality):
    m = sftp_municipality
    m.upload_request(b"data", "old.xlsx")
    assert transport.delete(m.hook(), "inbox/old.xlsx") is True
    assert transport.delete(m.hook(), "inbox/old.xlsx") is False
