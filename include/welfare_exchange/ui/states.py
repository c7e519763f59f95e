"""The true state of an exchange, from Airflow's run and the exchange ledger together.

Neither says it alone. The ledger knows what an exchange achieved — received, validated, …,
delivered, or refused — but not that its run is waiting, running or failed: a task that fails
on a missing key connection leaves the ledger at ``received``. Airflow knows the run and its
tasks, but not what was delivered, to whom, with which hash. :func:`derive` combines the two,
given as plain values, so it is tested without either.

The states an operator sees:

* ``waiting`` — for the request (since when, until when: the arrival window) or for the
  protocol gate (a signature, a start date);
* ``running`` — which step (a step retrying after an error says so);
* ``failed`` — which task, the cause and its runbook section, when; the failure shown is the
  one Airflow holds *now*: once a retry runs, no stale reason is left;
* ``quarantined`` — the request was refused (its code); the municipality was told;
* ``delivered`` — when, which file (the agency's own name), its size and SHA-256;
* ``duplicate`` — the same file as an earlier exchange; ``no_request`` — the arrival window
  closed empty;
* ``overdue`` — not delivered by its deadline where one exists (structural feeds);
* ``unknown`` — Airflow's side could not be read: the ledger's step is shown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from welfare_exchange.failures import CAUSES, RUNBOOK
from welfare_exchange.orchestration.airflow_api import ACTIVE_TASK_STATES, Run, Task

STATES = ("waiting", "running", "failed", "quarantined", "delivered", "duplicate", "no_request", "overdue", "unknown")
#: States after which nothing more happens (a retry cannot change them).
SETTLED = frozenset({"quarantined", "delivered", "duplicate", "no_request"})

#: What each task of an exchange DAG does, in the operator's words.
TASK_LABELS = {
    "protocol_gate": "checking the protocol gate",
    "wait_for_request": "waiting for the request",
    "fetch_request": "taking the request into staging",
    "decrypt_and_validate": "decrypting and validating the request",
    "send_receipt": "acknowledging the request to the municipality",
    "match_entitlements": "matching against the entitlement store",
    "build_result": "building and encrypting the result",
    "protocol_gate_before_delivery": "checking the protocol gate before delivery",
    "deliver_result": "delivering the result",
    "record_data_subjects": "recording whose data the exchange handled",
    "record_retention": "recording deletion deadlines",
    "open_campaign": "opening the campaign",
    "select_families": "selecting the families",
    "render_letters": "rendering the letters",
    "send_messages": "sending the messages",
    "report_to_municipality": "reporting the counts to the municipality",
    "detect_changes": "detecting the changes",
    "deliver_feed": "delivering the feed",
}

#: The ledger's states in words, for an exchange whose run Airflow could not tell about.
LEDGER_STEPS = {
    "received": "request fetched, not yet validated",
    "validated": "request decrypted and validated",
    "matched": "entitlements matched",
    "built": "result built and encrypted, not yet delivered",
    "failed": "stopped before delivery",
}


@dataclass(frozen=True)
class Delivery:
    """What the ledger recorded of a delivery (the file is named as the agency named it)."""

    at: dt.datetime | None
    file: str | None
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Ledger:
    """What the ledger knows of an exchange."""

    state: str
    failure_code: str | None
    updated_at: dt.datetime | None
    delivery: Delivery | None = None


@dataclass(frozen=True)
class FailureFact:
    """A ``task.failed`` fact read back (:func:`welfare_exchange.failures.parse_fact_message`)."""

    cause: str
    section: str
    at: dt.datetime | None


@dataclass
class State:
    """An exchange's (or a run's) state as the view shows it; see the module docstring."""

    state: str
    label: str
    since: str | None = None
    until: str | None = None
    step: str | None = None
    failure: dict[str, Any] | None = None
    refusal: str | None = None
    delivery: dict[str, Any] | None = None
    due: str | None = None
    retryable: bool = False
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment is not None else None


def _first(tasks: list[Task]) -> Task:
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return min(tasks, key=lambda t: (t.end_date or t.start_date or epoch, t.task_id))


def _failure(task: Task | None, fact: FailureFact | None, fallback_code: str | None) -> dict[str, Any]:
    code = fact.cause if fact is not None else (fallback_code if fallback_code in CAUSES else "unknown")
    cause = CAUSES.get(code, CAUSES["unknown"])
    section = fact.section if fact is not None else cause.section
    return {
        "task_id": task.task_id if task is not None else None,
        "cause": code,
        "summary": cause.summary,
        "section": section,
        "runbook": f"{RUNBOOK} § '{section}'",
        "at": _iso(task.end_date if task is not None and task.end_date else (fact.at if fact else None)),
        "try_number": task.try_number if task is not None else None,
    }


def _delivered(ledger: Ledger) -> State:
    d = ledger.delivery or Delivery(None, None, None, None)
    at = d.at or ledger.updated_at
    return State("delivered", "result delivered", since=_iso(at),
                 delivery={"at": _iso(at), "file": d.file, "size": d.size, "sha256": d.sha256})


def _from_run(run: Run, ledger: Ledger | None, facts: dict[str, FailureFact], outcome: str | None,
              window: dt.timedelta) -> State:
    tasks = {t.task_id: t for t in run.tasks if t.map_index < 0}
    failed = [t for t in run.tasks if t.state == "failed"]
    active = [t for t in run.tasks if t.state in ACTIVE_TASK_STATES]
    if failed:  # a task still finishing beside it (record_data_subjects runs after a failure) ends soon
        task = _first(failed)
        failure = _failure(task, facts.get(task.task_id), ledger.failure_code if ledger else None)
        return State("failed", f"failed at {task.task_id}: {failure['summary']}", since=failure["at"],
                     failure=failure, retryable=not active)
    if run.state in ("queued", "running") or active:
        gate = tasks.get("protocol_gate")
        if gate is not None and gate.state in ACTIVE_TASK_STATES - {"up_for_retry"}:
            return State("waiting", "waiting for the protocol gate: a signature, or the protocol's start date",
                         since=_iso(gate.start_date or run.start_date), step="protocol_gate")
        wait = tasks.get("wait_for_request")
        if ledger is None and wait is not None and wait.state in ACTIVE_TASK_STATES - {"up_for_retry"}:
            since = wait.start_date or run.start_date or run.run_after
            return State("waiting", "waiting for the request", since=_iso(since),
                         until=_iso(since + window) if since else None, step="wait_for_request")
        retrying = [t for t in active if t.state == "up_for_retry"]
        if retrying:
            task = _first(retrying)
            return State("running", f"retrying {task.task_id} after a failed try (try {task.try_number})",
                         since=_iso(task.end_date), step=task.task_id)
        if active:
            running = [t for t in active if t.state in ("running", "deferred", "up_for_reschedule")] or active
            task = _first(running)
            return State("running", TASK_LABELS.get(task.task_id, task.task_id), since=_iso(task.start_date or run.start_date),
                         step=task.task_id)
        return State("running", "queued: the scheduler will start it", since=_iso(run.run_after), step=None)
    if ledger is None:
        if outcome == "duplicate" or (tasks.get("fetch_request") and tasks["fetch_request"].state == "skipped"
                                      and tasks.get("wait_for_request") and tasks["wait_for_request"].state == "success"):
            return State("duplicate", "the same file as an earlier exchange: not processed again", since=_iso(run.end_date))
        return State("no_request", "no request arrived within the arrival window", since=_iso(run.end_date))
    return State("unknown", f"run {run.state}; ledger: {LEDGER_STEPS.get(ledger.state, ledger.state)}",
                 since=_iso(ledger.updated_at))


def derive(
    *,
    run: Run | None,
    ledger: Ledger | None,
    facts: dict[str, FailureFact] | None = None,
    outcome: str | None = None,
    window: dt.timedelta = dt.timedelta(hours=24),
    due: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> State:
    """The state of one exchange or run.

    :param run: the Airflow run with its tasks (``None``: not known to Airflow, or Airflow unreadable).
    :param ledger: the exchange in the ledger (``None``: the run opened none, yet or at all).
    :param facts: the latest ``task.failed`` fact per task of the run.
    :param outcome: for a run without an exchange, what the audit says ended it (``no_request``, ``duplicate``).
    :param window: the arrival window.
    :param due: when the exchange had to be delivered (structural feeds).
    """
    facts = facts or {}
    now = now or dt.datetime.now(dt.timezone.utc)
    sources = [s for s, known in (("airflow", run is not None), ("ledger", ledger is not None)) if known]
    if ledger is not None and ledger.state == "delivered":
        state = _delivered(ledger)
        if run is not None:  # a task after the delivery failed (e.g. recording retention): still to retry
            after = _from_run(run, ledger, facts, outcome, window)
            if after.state == "failed":
                state.failure, state.retryable = after.failure, True
                state.label = f"result delivered; then {after.label}"
    elif ledger is not None and ledger.state == "quarantined":
        state = State("quarantined", f"request refused ({ledger.failure_code}): in quarantine, the municipality was told why",
                      since=_iso(ledger.updated_at), refusal=ledger.failure_code)
    elif ledger is not None and ledger.state == "duplicate":
        state = State("duplicate", "the same file as an earlier exchange: not processed again", since=_iso(ledger.updated_at))
    elif run is not None:
        state = _from_run(run, ledger, facts, outcome, window)
    elif ledger is not None and ledger.state == "failed":
        failure = _failure(None, None, ledger.failure_code)
        failure["at"] = _iso(ledger.updated_at)
        state = State("failed", f"failed: {failure['summary']}", since=failure["at"], failure=failure)
    elif ledger is not None:
        state = State("unknown", f"Airflow's state unavailable; ledger: {LEDGER_STEPS.get(ledger.state, ledger.state)}",
                      since=_iso(ledger.updated_at))
    else:
        state = State("unknown", "nothing known")
    if due is not None:
        state.due = _iso(due)
        if now > due and state.state in ("waiting", "running", "unknown"):
            state.label = f"overdue since {state.due}: {state.label}"
            state.state = "overdue"
    state.sources = sources
    return state
