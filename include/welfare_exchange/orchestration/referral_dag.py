"""Build the referral DAGs of every signed referral agreement, from the registry snapshot.

Two DAGs per ``referral`` protocol (the *samenwerkingsovereenkomst* with one Sociaal Huis), each
its own row in the Airflow UI named after the municipality, NIS code and protocol:

* ``referral_<nis>_<name>_p<id>`` — the referral list out, weekly unless the agreement says
  otherwise: gate → select and build → gate again → deliver once → withdrawal notices → retention;
* ``referral_feedback_<nis>_<name>_p<id>`` — the Sociaal Huis's feedback in, daily: gate → wait
  for a feedback file → receive (decrypt, validate, record or refuse) → evaluation report →
  feedback deadline check.

Parsing reads the snapshot file only (no database, network or connection), and a task process
builds only its own DAG. The steps are :mod:`welfare_exchange.referral.steps`.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, BaseSensorOperator, PokeReturnValue, TriggerRule, chain, task
from airflow.sdk.exceptions import AirflowSkipException

from welfare_exchange import ledger
from welfare_exchange.db import session_scope
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.orchestration.dag_factory import is_wanted, protocol_dag_id, read_snapshot
from welfare_exchange.orchestration.tasks import run_step
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.protocols import get
from welfare_exchange.referral import delivery, steps
from welfare_exchange.orchestration.sensors.protocol_gate import ProtocolGateSensor
from welfare_exchange.orchestration.sensors.reschedule import RescheduleFloor
from welfare_exchange.settings import get_settings, get_timing, text

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
#: The agreement's default rhythm (``--schedule`` on the protocol overrides it).
DEFAULT_SCHEDULE = "@weekly"

LIST_DOC = """\
### Referral to the Sociaal Huis — {municipality} (NIS {nis_code}), protocol {id}

*Structurele toeleiding*: families with a child born in *kansarmoede* that **agreed** to it are
referred to their Sociaal Huis, under the cooperation agreement (protocol {id}).

| step | task | what it guarantees |
|---|---|---|
| 1 | `protocol_gate` | waits until the agreement is signed and valid; fails at once when revoked, suspended or expired |
| 2 | `build_referral_list` | consent recorded and not withdrawn, domiciled in {municipality}, in kansarmoede, never referred under this agreement; one ledger row per family; only the agreement's fields; encrypted with the agreed key; built once |
| 3 | `protocol_gate_before_delivery` | the gate once more |
| 4 | `deliver_referral_list` | families who withdrew meanwhile left out; delivered over `{channel}` exactly once; every referral marked sent |
| 5 | `notify_withdrawals` | a family that withdrew after its referral was sent: one encrypted withdrawal notice, once |
| 6 | `record_retention` | deletion deadlines of the staged and the sent files |

Feedback comes back through `referral_feedback_…` of the same agreement. XCom and logs hold
counts only. Runbook: `docs/referral.md`.
"""

FEEDBACK_DOC = """\
### Referral feedback from the Sociaal Huis — {municipality} (NIS {nis_code}), protocol {id}

| step | task | what it guarantees |
|---|---|---|
| 1 | `protocol_gate` | the agreement is signed and valid |
| 2 | `wait_for_feedback` | over `{channel}`: SFTP — a complete file named `terugkoppeling*.xlsx` (or `feedback*.xlsx`, `.xls`) in `inbox/`; e-mail — a message from the agreement's registered sender; none within the window: the run ends skipped |
| 3 | `receive_feedback` | taken off the channel first (SFTP `inbox/` → `received/`; e-mail: S/MIME-decrypted, sender, pinned certificate and signature checked like a Method 1 request, one attachment named like a feedback file, `INBOX` → `Processed`; a refused message → `Rejected` with a report) — never taken twice; decrypted in memory, validated (columns, known referral ids, outcomes, dates — refused by line number, never a value) and recorded; the same file again is a duplicate; a refused file goes to `quarantine/` / `Rejected` with a report on the same channel |
| 4 | `report_evaluation` | the evaluation report (counts per outcome and per criterion, under 10 suppressed) in the agency's own outbox and the Exchanges view |
| 5 | `check_feedback_deadline` | referrals without feedback after the term are flagged (audit `referral.feedback_overdue`, error in the log) |
"""


def referral_dag_id(entry: dict[str, Any]) -> str:
    """E.g. ``referral_44021_gent_p7``."""
    return protocol_dag_id("referral", entry)


def feedback_dag_id(entry: dict[str, Any]) -> str:
    """E.g. ``referral_feedback_44021_gent_p7``."""
    return protocol_dag_id("referral_feedback", entry)


def _gate(entry: dict[str, Any], poke: float) -> ProtocolGateSensor:
    return ProtocolGateSensor(
        task_id="protocol_gate",
        protocol_id=int(entry["id"]),
        requirements={"kind": "referral", "channel": entry["channel"]},
        poke_interval=poke,
        timeout=get_timing().gate_timeout,
        retries=0,
    )


def _tags(entry: dict[str, Any]) -> list[str]:
    return ["referral", f"nis:{entry['nis_code']}", entry["municipality"], entry["channel"], f"protocol:{entry['id']}"]


def build_referral_dag(entry: dict[str, Any]) -> DAG:
    """The referral-list DAG of one agreement (``entry``: one protocol of the registry snapshot)."""
    protocol_id = int(entry["id"])
    with DAG(
        dag_id=referral_dag_id(entry),
        dag_display_name=f"Referral · {entry['municipality']} ({entry['nis_code']}) · protocol {protocol_id}",
        description=f"Referral of families in kansarmoede to the Sociaal Huis of {entry['municipality']}",
        doc_md=LIST_DOC.format(**entry),
        schedule=entry.get("schedule") or DEFAULT_SCHEDULE,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params={"protocol_id": protocol_id},
        tags=_tags(entry),
    ) as dag:
        gate = _gate(entry, get_timing().poke_interval)

        @task(task_id="build_referral_list")
        def build_referral_list() -> dict[str, Any]:
            return run_step(steps.build_referral_list)(protocol_id)

        @task(task_id="protocol_gate_before_delivery", retries=0)
        def protocol_gate_before_delivery() -> str:
            return run_step(steps.recheck_gate)(protocol_id)

        @task(task_id="deliver_referral_list")
        def deliver_referral_list() -> dict[str, Any]:
            return run_step(steps.deliver_referral_list)(protocol_id)

        @task(task_id="notify_withdrawals")
        def notify_withdrawals() -> dict[str, Any]:
            return run_step(steps.notify_withdrawals)(protocol_id)

        @task(task_id="record_retention")
        def record_retention() -> dict[str, Any]:
            return run_step(steps.record_retention)(protocol_id)

        chain(
            gate, build_referral_list(), protocol_gate_before_delivery(), deliver_referral_list(), notify_withdrawals(),
            record_retention(),
        )
    return dag


class FeedbackArrivalSensor(RescheduleFloor, BaseSensorOperator):
    """Wait for a complete feedback file on the agreement's channel; push its handle, never its name.

    Each look is the channel's (:meth:`welfare_exchange.channels.base.Channel.find_inbound`): a
    settled file matching the feedback names in SFTP ``inbox/``, or a message from the agreement's
    registered sender in the agency's mailbox (headers only).

    Reschedule mode (no worker slot between looks). Idempotent: when this run already took a
    file (the task was cleared afterwards), it is done at once and the next step finds that file.
    No file within ``timeout`` (the arrival window) ends the run skipped (``soft_fail``).

    :param protocol_id: the referral protocol.
    :param settle_seconds: pause between the two looks that prove a file complete.
    """

    template_fields = ("protocol_id",)

    def __init__(self, *, protocol_id: int, settle_seconds: float = 2.0, **kwargs) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("soft_fail", True)
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.settle_seconds = settle_seconds

    def poke(self, context) -> PokeReturnValue:
        run = RunInfo.from_context(context)
        with session_scope() as session:
            taken = ledger.is_done(session, steps._take_key(int(self.protocol_id), run))
            protocol = get(session, int(self.protocol_id))
        if taken:
            return PokeReturnValue(is_done=True, xcom_value="taken")
        handle = delivery.waiting_feedback(protocol, settle_seconds=self.settle_seconds)
        self.log.info("feedback waiting on channel %s: %s", protocol.channel, "yes" if handle else "none yet")
        return PokeReturnValue(is_done=handle is not None, xcom_value=handle)


def build_feedback_dag(entry: dict[str, Any]) -> DAG:
    """The feedback DAG of one agreement (any channel: it asks the agreement's channel)."""
    protocol_id = int(entry["id"])
    poke = get_timing().poke_interval
    with DAG(
        dag_id=feedback_dag_id(entry),
        dag_display_name=f"Referral feedback · {entry['municipality']} ({entry['nis_code']}) · protocol {protocol_id}",
        description=f"Feedback of the Sociaal Huis of {entry['municipality']} on the referrals it received",
        doc_md=FEEDBACK_DOC.format(**entry),
        schedule=text("WELFARE_EXCHANGE_REFERRAL_FEEDBACK_SCHEDULE"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params={"protocol_id": protocol_id},
        tags=[*_tags(entry), "feedback"],
    ) as dag:
        gate = _gate(entry, poke)
        arrival = FeedbackArrivalSensor(
            task_id="wait_for_feedback",
            protocol_id=protocol_id,
            settle_seconds=get_timing().settle_seconds,
            poke_interval=poke,
            timeout=get_settings().arrival_window_seconds,
        )

        @task(task_id="receive_feedback")
        def receive_feedback(handle: Any) -> dict[str, Any]:
            return run_step(steps.receive_feedback)(protocol_id, handle)

        @task(task_id="report_evaluation")
        def report_evaluation(received: dict[str, Any]) -> dict[str, Any]:
            if received.get("state") != "recorded":
                raise AirflowSkipException(f"feedback {received.get('state')}: no new evaluation")
            return run_step(steps.report_evaluation)(protocol_id, int(received["exchange_id"]))

        @task(task_id="check_feedback_deadline", trigger_rule=TriggerRule.ALL_DONE)
        def check_feedback_deadline() -> dict[str, Any]:
            return run_step(steps.check_feedback_deadline)(protocol_id)

        received = receive_feedback(arrival.output)
        chain(gate, arrival, received, report_evaluation(received), check_feedback_deadline())
    return dag


def referral_dags(path: os.PathLike | str | None = None) -> dict[str, DAG]:
    """Every referral DAG, keyed by DAG id (for a DAG file's ``globals()``)."""
    dags = {}
    for entry in read_snapshot(path):
        if entry["kind"] != "referral":
            continue
        if is_wanted(referral_dag_id(entry)):
            dag = build_referral_dag(entry)
            dags[dag.dag_id] = dag
        if is_wanted(feedback_dag_id(entry)):
            dag = build_feedback_dag(entry)
            dags[dag.dag_id] = dag
    return dags
