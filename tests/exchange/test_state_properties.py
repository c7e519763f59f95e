"""Property: whatever an operator clears, re-runs, crashes or revokes, an exchange is delivered at
most once, its state never moves back, and the audit never contradicts itself.

Hypothesis draws sequences of actions — a single task cleared, a task cleared with its
downstream, the whole run cleared, a task crashing between its act and the ledger recording it,
the protocol suspended, resumed or revoked, the daily retention run stopping exchanges of ended
protocols — and runs them against the real steps (:mod:`tests.exchange.stepper`), the real
OpenSSH server and the SQLite project database. Every example is a fresh protocol and exchange
on one SFTP account; the invariants are checked after every action, and at the end the run is
finished as an operator would (resume, clear) to show a recovered exchange does get delivered.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import shutil

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.exchange.builders import build_world, encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE, sign_protocol
from tests.exchange.stepper import TASKS, StepRun, downstream
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Protocol
from welfare_exchange.exchange_state import FORWARD, ExchangeStateError
from welfare_exchange.protocols import transition
from welfare_exchange.retention import rules
from welfare_exchange.transport import sftp as transport

pytestmark = [pytest.mark.sftp]

#: Facts that say the result did not, or must not, leave: none may follow ``result.delivered``.
CONTRADICT_DELIVERY = {"result.delivery_blocked", "exchange.stopped", "request.quarantined"}
#: Where a crash is injected: right after the act on the server, or at the ledger's recording of it.
CRASH_POINTS = ("after_transport", "complete_side_effect", "update_exchange", "audit_record")
CRASH_TASKS = ("fetch_request", "decrypt_and_validate", "match_entitlements", "build_result", "deliver_result",
               "record_retention")


class Crash(Exception):
    """The process dying at the injected point (its open transaction rolls back)."""


@contextlib.contextmanager
def crash_at(point: str):
    """Make the first call at ``point`` fail — after the act itself, for the transport calls."""
    patch = pytest.MonkeyPatch()
    fired = []

    def once(original, after: bool):
        def wrapper(*args, **kwargs):
            if fired:
                return original(*args, **kwargs)
            fired.append(point)
            if after:
                original(*args, **kwargs)
            raise Crash(point)
        return wrapper

    if point == "after_transport":
        for name in ("deliver", "upload_bytes", "move", "fetch"):
            patch.setattr(transport, name, once(getattr(transport, name), after=True))
    elif point == "audit_record":
        patch.setattr(audit, "record", once(audit.record, after=False))
    else:
        patch.setattr(ledger, point, once(getattr(ledger, point), after=False))
    try:
        yield
    finally:
        patch.undo()


SCOPES = ("task", "downstream", "whole run")
#: One step of what happens to a run: tasks cleared (one, with downstream, the whole run), possibly
#: with a crash in one task or a protocol change just before one; the protocol changed between
#: runs; the daily retention run.
ACTIONS = st.one_of(
    st.tuples(st.just("clear"), st.sampled_from(TASKS), st.sampled_from(SCOPES)),
    st.tuples(st.just("crash"), st.sampled_from(CRASH_TASKS), st.sampled_from(SCOPES), st.sampled_from(CRASH_POINTS)),
    st.tuples(st.just("protocol during"), st.sampled_from(TASKS[2:]), st.sampled_from(SCOPES),
              st.sampled_from(("suspend", "revoke"))),
    st.tuples(st.just("protocol"), st.sampled_from(("suspend", "resume", "revoke"))),
    st.tuples(st.just("end_protocols")),
)
#: The first thing that happens is the run itself, often with something going wrong in it.
FIRST = st.one_of(
    st.just(("clear", "protocol_gate", "whole run")),
    st.tuples(st.just("crash"), st.sampled_from(CRASH_TASKS), st.just("whole run"), st.sampled_from(CRASH_POINTS)),
    st.tuples(st.just("protocol during"), st.sampled_from(TASKS[2:]), st.just("whole run"),
              st.sampled_from(("suspend", "revoke"))),
)


def _tasks(task: str, scope: str) -> tuple[str, ...]:
    return (task,) if scope == "task" else downstream(task) if scope == "downstream" else TASKS


class Scenario:
    """One SFTP account and one entitlement store for every example; a new protocol per example."""

    def __init__(self, municipality, key_connection: str, requests: dict[str, bytes]):
        self.municipality = municipality
        self.key_connection = key_connection
        self.requests = requests
        self.counter = itertools.count(1)

    def start(self, request: str, delete_after_match: bool) -> StepRun:
        for folder in ("inbox", "received", "quarantine", "outbox"):
            for path in self.municipality.local_dir(folder).iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        protocol_id = sign_protocol(self.municipality.nis, self.key_connection, municipality="Testgemeente",
                                    channel="sftp", delete_request_after_match=delete_after_match)
        self.municipality.upload_request(self.requests[request], "aanvraag.xlsx")
        return StepRun(protocol_id, f"manual__{next(self.counter)}", EXCHANGE_DATE, {"name": "aanvraag.xlsx"})

    def outbox(self, exchange_id: int | None) -> list[str]:
        names = [p.name for p in self.municipality.local_dir("outbox").iterdir()]
        assert not [n for n in names if n.endswith(".part")], names
        return [n for n in names if exchange_id is not None and f"exchange-{exchange_id}" in n]


@pytest.fixture
def scenario(sqlite_db, sftp_municipality, monkeypatch) -> Scenario:
    m = sftp_municipality
    password, key_connection = secrets.token_urlsafe(12), f"key_{m.nis}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{key_connection.upper()}", json.dumps({"conn_type": "generic", "password": password}))
    world = build_world(m.nis, children=40, seed=int(m.nis))
    numbers = [n for n, _ in world.children[:20]]
    requests = {"valid": encrypted_request(numbers, password), "wrong_password": encrypted_request(numbers, password + "x")}
    return Scenario(m, key_connection, requests)


def _protocol(run: StepRun, action: str) -> None:
    with contextlib.suppress(Exception), session_scope() as session:  # an action its status does not allow: nothing
        transition(session, run.protocol_id, action, actor=audit.Actor.current_user(), reason="property test")


@contextlib.contextmanager
def _changed(run: StepRun, action: str):
    _protocol(run, action)
    yield


def _status(run: StepRun) -> str:
    with session_scope() as session:
        return session.get(Protocol, run.protocol_id).status


class Watch:
    """The invariants, checked after every action of one example."""

    def __init__(self, scenario: Scenario, run: StepRun):
        self.scenario, self.run = scenario, run
        self.furthest = -1
        self.final: str | None = None

    def check(self) -> None:
        run = self.run
        illegal = [(t, e) for t, e in run.errors if isinstance(e, ExchangeStateError)]
        assert not illegal, f"a step tried a move the state table forbids: {illegal}"
        exchange = run.exchange()
        results = [n for n in self.scenario.outbox(exchange.id if exchange else None) if n.endswith(".xlsx")]
        assert len(results) <= 1, results
        assert len(run.side_effects("delivered")) <= 1
        facts = run.facts()
        actions = [a for _, a, _ in facts]
        assert actions.count("result.delivered") <= 1
        if exchange is None:
            return
        # No regression: a final state is never left, a forward state never drops below the furthest seen.
        if self.final is not None:
            assert exchange.state == self.final, (self.final, exchange.state)
        if exchange.state in ("delivered", "quarantined", "duplicate"):
            self.final = exchange.state
        if exchange.state in FORWARD:
            assert FORWARD.index(exchange.state) >= self.furthest, (exchange.state, FORWARD[self.furthest])
            self.furthest = FORWARD.index(exchange.state)
            assert exchange.failure_code is None, "a recovered exchange keeps a stale failure code"
        # The delivery, its ledger record and its fact agree; nothing said after it contradicts it.
        if "result.delivered" in actions:
            [effect] = run.side_effects("delivered")
            assert exchange.state == "delivered" and effect.state == "done"
            assert effect.sha256 == exchange.result_sha256 and results
            after = actions[actions.index("result.delivered") + 1:]
            assert not CONTRADICT_DELIVERY & set(after), after
        assert (exchange.state == "delivered") == ("result.delivered" in actions)
        assert not {"request.quarantined", "result.delivered"} <= set(actions)

    def check_audit(self) -> None:
        with session_scope() as session:
            repeated = session.execute(
                sa.select(AuditRecord.fact_key, sa.func.count()).where(AuditRecord.fact_key.is_not(None))
                .group_by(AuditRecord.fact_key).having(sa.func.count() > 1)
            ).all()
            assert not repeated, repeated
            check = audit.verify(session)
            assert check.ok, check


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    request=st.sampled_from(("valid", "valid", "valid", "wrong_password")),
    delete_after_match=st.booleans(),
    actions=st.builds(lambda first, rest: [first, *rest], FIRST, st.lists(ACTIONS, max_size=5)),
)
def test_clears_reruns_crashes_and_revocations_deliver_at_most_once_and_never_move_an_exchange_back(
    scenario, request, delete_after_match, actions
):
    run = scenario.start(request, delete_after_match)
    watch = Watch(scenario, run)
    for action in actions:
        kind = action[0]
        if kind == "clear":
            run.clear(*_tasks(action[1], action[2]))
        elif kind == "crash":
            run.clear(*_tasks(action[1], action[2]), around={action[1]: lambda point=action[3]: crash_at(point)})
        elif kind == "protocol during":
            run.clear(*_tasks(action[1], action[2]), around={action[1]: lambda change=action[3]: _changed(run, change)})
        elif kind == "protocol":
            _protocol(run, action[1])
        else:
            with session_scope() as session:
                rules.end_protocols(session, EXCHANGE_DATE, actor=audit.Actor.current_user())
        watch.check()

    # Finished as an operator would: a suspension lifted, then the whole run cleared — or, under a
    # revoked protocol (whose first gate fails a whole run), the delivery's own gate and what follows.
    _protocol(run, "resume")
    revoked = _status(run) == "revoked"
    run.clear(*downstream("protocol_gate_before_delivery")) if revoked else run.whole_run()
    watch.check()
    watch.check_audit()
    exchange = run.exchange()
    event(f"ended {exchange.state if exchange else 'without exchange'}, protocol {_status(run)}")
    if not revoked:
        # The gate is open: the request ends delivered (once) or, refused, quarantined.
        assert exchange is not None and exchange.state == ("delivered" if request == "valid" else "quarantined"), (
            exchange and exchange.state, run.errors[-3:])
    delivered_files = [n for n in scenario.outbox(exchange.id) if n.endswith(".xlsx")] if exchange is not None else []
    if delivered_files and run.states.get("protocol_gate_before_delivery") != "upstream_failed":
        # A result in the outbox is a delivery the ledger knows of, even one whose try crashed before recording it
        # (the receipt, sent after validation, is no delivery).
        assert exchange.state == "delivered" or request != "valid", (exchange.state, scenario.outbox(exchange.id))
