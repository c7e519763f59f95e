"""An exchange's state moves forward only, and the ledger speaks before the gate.

Each test drives the real Method 1 steps task by task (:mod:`tests.exchange.stepper`) against
the real OpenSSH server and the project database (SQLite and PostgreSQL), the way an operator's
clears and re-runs reach them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.exchange.builders import build_world, encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE, _signed_protocol
from tests.exchange.stepper import StepRun, downstream
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.errors import ProtocolError
from welfare_exchange.exchange import steps
from welfare_exchange.intake import IntakeError
from welfare_exchange.protocols import transition
from welfare_exchange.transport import sftp as transport

pytestmark = [pytest.mark.sftp]


@dataclass
class Stepped:
    run: StepRun
    municipality: object  # tests.fixtures.sftp.SftpMunicipality

    def protocol(self, action: str) -> None:
        with session_scope() as session:
            transition(session, self.run.protocol_id, action, actor=audit.Actor.current_user(), reason="test")

    def results(self) -> list[str]:
        return sorted(p.name for p in self.municipality.local_dir("outbox").iterdir() if p.name.endswith(".xlsx"))

    def actions(self) -> list[str]:
        return [action for _, action, _ in self.run.facts()]


@pytest.fixture
def stepped(project_db, sftp_municipality, monkeypatch) -> Stepped:
    """A signed SFTP protocol, a small valid request in the inbox, and its run (nothing run yet)."""
    m = sftp_municipality
    protocol_id, password = _signed_protocol(monkeypatch, m.nis, municipality=f"Testgemeente {m.nis}", channel="sftp")
    world = build_world(m.nis, children=40, seed=int(m.nis))
    m.upload_request(encrypted_request([n for n, _ in world.children[:20]], password), "aanvraag.xlsx")
    return Stepped(StepRun(protocol_id, "manual__state", EXCHANGE_DATE, {"name": "aanvraag.xlsx"}), m)


def _delivered(stepped: Stepped) -> None:
    states = stepped.run.whole_run()
    assert set(states.values()) == {"success"}, stepped.run.errors
    assert stepped.run.exchange().state == "delivered"


def test_a_gate_closed_before_delivery_tells_the_operator_why_and_a_resumed_protocol_recovers(stepped):
    """The operator's message arrives (it was lost to a NameError); recovery clears the failure code."""
    run = stepped.run
    run.clear("protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
              "build_result", "record_data_subjects")
    assert run.exchange().state == "built"
    stepped.protocol("suspend")

    with pytest.raises(ProtocolError) as blocked:
        steps.recheck_gate(run.exchange_id, run.info("protocol_gate_before_delivery"))

    assert f"delivery of exchange {run.exchange_id} blocked" in str(blocked.value)
    assert "suspended" in str(blocked.value) and "Nothing was sent" in str(blocked.value)
    exchange = run.exchange()
    assert (exchange.state, exchange.failure_code) == ("failed", "protocol_closed")
    assert stepped.actions().count("result.delivery_blocked") == 1 and stepped.results() == []

    stepped.protocol("resume")
    assert run.clear(*downstream("protocol_gate_before_delivery")) == dict.fromkeys(
        ("protocol_gate_before_delivery", "deliver_result", "record_retention"), "success")
    exchange = run.exchange()
    assert (exchange.state, exchange.failure_code) == ("delivered", None)
    assert len(stepped.results()) == 1


def test_a_revocation_after_the_delivery_neither_blocks_nor_rewrites_it(stepped):
    """Re-running the gate and the delivery after a later revocation: "already delivered", nothing else."""
    _delivered(stepped)
    run = stepped.run
    facts_before = run.facts()
    stepped.protocol("revoke")

    assert run.clear("protocol_gate_before_delivery", "deliver_result") == {
        "protocol_gate_before_delivery": "success", "deliver_result": "success"}, run.errors
    assert steps.deliver_result(run.exchange_id, run.info("deliver_result"))["already_delivered"] is True

    exchange = run.exchange()
    assert (exchange.state, exchange.failure_code) == ("delivered", None)
    assert run.facts() == facts_before  # no result.delivery_blocked, nothing else either
    assert len(stepped.results()) == 1


@pytest.mark.parametrize("clear", ["fetch_request with downstream", "whole run"])
def test_clearing_fetch_with_downstream_or_the_whole_run_keeps_a_delivered_exchange_delivered(stepped, clear):
    _delivered(stepped)
    run = stepped.run
    facts_before, results_before = run.facts(), stepped.results()

    states = run.clear(*downstream("fetch_request")) if clear != "whole run" else run.whole_run()

    assert set(states.values()) == {"success"}, run.errors
    assert run.exchange().state == "delivered"
    assert run.facts() == facts_before and stepped.results() == results_before
    assert len(run.side_effects("delivered")) == 1


def test_a_delivered_exchange_is_never_quarantined_afterwards(stepped):
    """A refusal found by a later re-run (a stricter limit, say) moves nothing and reports nothing."""
    _delivered(stepped)
    run = stepped.run
    outbox_before = sorted(p.name for p in stepped.municipality.local_dir("outbox").iterdir())

    with pytest.raises(ledger.ExchangeStateError, match="cannot move from 'delivered' to 'quarantined'"):
        steps.quarantine(run.exchange_id, IntakeError("too_large"), run.info("decrypt_and_validate"))

    assert sorted(p.name for p in stepped.municipality.local_dir("outbox").iterdir()) == outbox_before
    assert sorted(p.name for p in stepped.municipality.local_dir("quarantine").iterdir()) == []
    assert run.exchange().state == "delivered" and "request.quarantined" not in stepped.actions()


def test_a_delivery_uploaded_but_not_recorded_is_confirmed_from_the_server_not_blocked_by_a_later_revocation(
    stepped, monkeypatch
):
    """The try died between the upload and the ledger; the protocol is revoked before the retry."""
    run = stepped.run
    run.clear(*downstream("protocol_gate")[:-2])  # everything before deliver_result and record_retention
    original = transport.upload_bytes  # the result is read from staging and uploaded from memory

    def upload_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise ConnectionResetError("worker killed after the upload")

    with monkeypatch.context() as patch:
        patch.setattr(transport, "upload_bytes", upload_then_die)
        assert run.clear("deliver_result") == {"deliver_result": "failed"}
    assert run.exchange().state == "built" and len(stepped.results()) == 1
    stepped.protocol("revoke")

    assert run.clear(*downstream("protocol_gate_before_delivery")) == dict.fromkeys(
        ("protocol_gate_before_delivery", "deliver_result", "record_retention"), "success"), run.errors[-1:]

    exchange = run.exchange()
    assert (exchange.state, exchange.failure_code) == ("delivered", None)
    assert stepped.actions().count("result.delivered") == 1 and "result.delivery_blocked" not in stepped.actions()
    [effect] = run.side_effects("delivered")
    assert effect.state == "done" and effect.sha256 == exchange.result_sha256 and len(stepped.results()) == 1
