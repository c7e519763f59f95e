"""The staging interface on both back ends: ``local`` (a folder) and ``postgres`` (sealed blobs in
the project database, here on SQLite and on the real PostgreSQL server).

Proves: a round trip through every operation; nothing in the database is plaintext; a worker
with another local folder does not see the files (and says so: ``staging_missing``) while the
database back end is shared; retention deletes database-staged files verified and certified.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from tests.retention.helpers import ACTOR, EXCHANGE_DATE, exchange, schedule, signed_protocol
from welfare_exchange import failures
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import RetentionItem, StagedBlob
from welfare_exchange.retention import runner
from welfare_exchange.staging import DATABASE, Staging, StagedFileMissing

SECRET = b"89010112345 a line that must never be stored in the clear"


@pytest.mark.parametrize("backend", ["local", "postgres"])
def test_round_trip_through_every_operation(project_db, backend):
    staging = Staging(3, 17, backend=backend)
    assert staging.names() == [] and not staging.exists() and staging.request_name() is None
    staging.write_request(SECRET)
    staging.write_encrypted("valid", SECRET)
    staging.write_file("result.xlsx", b"already encrypted result")
    staging.write_encrypted("valid", SECRET + b"!")  # a rewrite replaces (a retry, an erasure)
    assert staging.read_request() == SECRET and staging.read_encrypted("valid") == SECRET + b"!"
    assert staging.read_file("result.xlsx") == b"already encrypted result"
    assert staging.sha256("result.xlsx") == hashlib.sha256(b"already encrypted result").hexdigest()
    assert staging.names() == ["request.fernet", "result.xlsx", "valid.fernet"] and staging.request_name() == "request.fernet"
    assert staging.has("valid") and staging.has("result.xlsx") and not staging.has("matched")
    assert Staging(3, 18, backend=backend).names() == []  # another exchange sees nothing of it
    assert staging.remove("valid") and not staging.remove("valid")
    assert staging.purge() and not staging.purge() and staging.names() == []


def test_the_database_back_end_never_holds_plaintext(project_db):
    staging = Staging(3, 17, backend="postgres")
    staging.write_encrypted("valid", SECRET)
    staging.write_file("result.xlsx", SECRET)  # even a file the caller passes as is is sealed
    with session_scope() as session:
        contents = [bytes(c) for c in session.scalars(sa.select(StagedBlob.content))]
    assert len(contents) == 2 and all(b"89010112345" not in c and c.startswith(b"gAAAAA") for c in contents)


def test_a_worker_with_another_folder_misses_local_files_loudly_the_database_is_shared(project_db, monkeypatch, tmp_path):
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_DIR", str(tmp_path / "host-a"))
    Staging(3, 17, backend="local").write_encrypted("matched", SECRET)
    Staging(3, 17, backend="postgres").write_encrypted("matched", SECRET)
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_DIR", str(tmp_path / "host-b"))  # the next task, another host
    assert Staging(3, 17, backend="postgres").read_encrypted("matched") == SECRET
    with pytest.raises(StagedFileMissing, match="WELFARE_EXCHANGE_STAGING_BACKEND=postgres") as caught:
        Staging(3, 17, backend="local").read_encrypted("matched")
    cause = failures.classify(caught.value, "match_entitlements")
    assert cause.code == "staging_missing" and cause.section == "A staged file is missing or unreadable"
    assert "89010112345" not in str(caught.value)


def test_the_backend_setting_chooses_and_refuses_unknown_values(project_db, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_BACKEND", "postgres")
    staging = Staging(3, 17)
    assert staging.where == DATABASE and staging.location() == "protocol-3/exchange-17"
    monkeypatch.setenv("WELFARE_EXCHANGE_STAGING_BACKEND", "s3")
    with pytest.raises(ValueError, match="local, postgres"):
        Staging(3, 17)


def test_retention_deletes_database_staged_files_verified_and_certified(project_db):
    pid = signed_protocol()
    eid = exchange(pid)
    staging = Staging(pid, eid, backend="postgres")
    staging.write_request(SECRET)
    staging.write_encrypted("matched", SECRET)
    request = schedule(pid, eid, "request_file", DATABASE, staging.location("request.fernet"), EXCHANGE_DATE,
                       sha256=hashlib.sha256(SECRET).hexdigest())
    wrong = schedule(pid, eid, "request_file", DATABASE, staging.location("matched.fernet"), EXCHANGE_DATE,
                     sha256="ab" * 32)  # content differs from the recorded digest: not deleted
    folder = schedule(pid, eid, "staging", DATABASE, staging.location(), EXCHANGE_DATE + dt.timedelta(days=1))

    report = runner.delete_due(EXCHANGE_DATE, actor=ACTOR)
    assert [c.item_id for c in report.certificates] == [request] and report.missing == [wrong]
    assert "SHA-256" in report.certificates[0].verified and staging.names() == ["matched.fernet"]

    report = runner.delete_due(EXCHANGE_DATE + dt.timedelta(days=1), actor=ACTOR)
    assert [c.item_id for c in report.certificates] == [folder] and staging.names() == []
    with session_scope() as session:
        assert session.get(RetentionItem, folder).deletion_outcome == "deleted"
