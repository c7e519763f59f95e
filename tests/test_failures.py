"""Failure causes: real errors of each kind — a closed port for SFTP, SMTP and PostgreSQL, a
missing staged file, wrapped as the DAG wrapper wraps them — give their cause and runbook
section; only the municipality's refusals count as refusals."""

from __future__ import annotations

import smtplib
import socket

import paramiko
import pytest
import sqlalchemy as sa

from welfare_exchange import failures
from welfare_exchange.errors import AgencySideError, ProtocolError
from welfare_exchange.intake.failures import CODES as INTAKE_CODES
from welfare_exchange.intake.failures import IntakeError
from welfare_exchange.staging import Staging
from welfare_exchange.transport.smime import SMIME_ERROR_CODES, SmimeError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raised(call) -> BaseException:
    try:
        call()
    except BaseException as err:  # noqa: BLE001 (the point is to keep any error)
        return err
    raise AssertionError("expected an error")


def _as_the_dag_fails_it(error: BaseException) -> BaseException:
    """What the failure callback sees: the DAG wrapper's AirflowFailException, raised ``from None``."""
    from airflow.sdk.exceptions import AirflowFailException

    def wrapped():
        try:
            raise error
        except Exception as err:
            raise AirflowFailException(str(err)) from None

    return _raised(wrapped)


def test_a_missing_key_connection_is_the_agencys_not_a_refused_request():
    error = _as_the_dag_fails_it(ProtocolError("the key connection 'key_1' cannot be read", code="key_connection_missing"))
    cause = failures.classify(error, "decrypt_and_validate")
    assert (cause.code, cause.section, cause.party) == (
        "key_connection_missing", "The key connection is missing or wrong", "agency")
    assert cause.runbook == "docs/RUNBOOK.md § 'The key connection is missing or wrong'"
    assert not failures.refused_by_sender(error)


@pytest.mark.parametrize(("code", "cause"), [("wrong_password", "wrong_password"), ("corrupt", "request_refused"),
                                             ("not_encrypted", "request_refused"), ("timeout", "request_refused")])
def test_intake_refusals(code, cause):
    error = _as_the_dag_fails_it(IntakeError(code))
    assert failures.classify(error).code == cause and failures.refused_by_sender(error)


def test_a_damaged_file_that_was_really_an_out_of_memory_worker_is_not_a_refusal():
    def parse():
        try:
            raise MemoryError()
        except MemoryError as exc:
            raise IntakeError("corrupt") from exc

    error = _raised(parse)
    assert failures.classify(error).code == "out_of_memory" and not failures.refused_by_sender(error)


def test_sftp_down():
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    error = _raised(lambda: client.connect("127.0.0.1", port=_closed_port(), username="x", timeout=5,
                                           allow_agent=False, look_for_keys=False))
    assert failures.classify(_as_the_dag_fails_it(error), "fetch_request").code == "sftp_unreachable"


def test_mail_server_down():
    error = _raised(lambda: smtplib.SMTP("127.0.0.1", _closed_port(), timeout=5))
    assert isinstance(error, ConnectionRefusedError)  # a bare OSError: told apart by where it was raised
    assert failures.classify(error, "deliver_result").code == "mail_unreachable"


def test_database_down():
    engine = sa.create_engine(f"postgresql+psycopg2://nobody@127.0.0.1:{_closed_port()}/none")
    error = _raised(lambda: engine.connect())
    assert failures.classify(error, "match_entitlements").code == "database_unreachable"


def test_a_staged_file_gone(sqlite_db):
    error = _raised(lambda: Staging(1, 1).read_encrypted("matched"))
    assert failures.classify(_as_the_dag_fails_it(error), "build_result").code == "staging_missing"


def test_no_exception_at_all_means_airflow_stopped_the_try():
    assert failures.classify(None, "deliver_result").code == "task_stopped"


def test_a_sensor_failing_as_designed_and_the_task_fallback():
    from airflow.sdk.exceptions import AirflowFailException

    assert failures.classify(AirflowFailException("protocol gate closed: revoked"), "protocol_gate").code == "protocol_closed"
    feed = failures.classify(RuntimeError("?"), "deliver_feed")
    assert (feed.code, feed.section) == ("unknown", "A structural feed cannot be delivered")
    assert failures.classify(RuntimeError("?"), "some_task").section == "Re-run a failed exchange safely"


def test_agency_side_errors_carry_their_cause():
    assert failures.classify(AgencySideError("x", code="out_of_memory")).code == "out_of_memory"


def test_every_refusal_code_is_the_senders_or_named_the_agencys():
    assert INTAKE_CODES | SMIME_ERROR_CODES == failures.SENDER_REFUSAL_CODES
    assert all(failures.refused_by_sender(SmimeError("x", code=code)) for code in SMIME_ERROR_CODES)


def test_the_fact_message_reads_back():
    cause = failures.CAUSES["sftp_unreachable"]
    message = failures.fact_message(cause, "NoValidConnectionsError: [Errno 111] Unable to connect | odd text")
    recorded = failures.parse_fact_message(message)
    assert (recorded.cause, recorded.section) == ("sftp_unreachable", "The SFTP server is unreachable")
    assert recorded.text.startswith("NoValidConnectionsError") and recorded.runbook == cause.runbook
    assert failures.parse_fact_message("ValueError: x | runbook: docs/RUNBOOK.md § 'A'") is None
    apostrophe = failures.parse_fact_message(failures.fact_message(failures.CAUSES["out_of_memory"], "MemoryError: "))
    assert apostrophe.section == "The agency's machine ran out of memory"
