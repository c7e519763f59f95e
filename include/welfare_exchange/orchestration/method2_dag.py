"""Build one Method 2 DAG per protocol, from the registry snapshot — never from a database query.

As for Method 1 (:mod:`welfare_exchange.orchestration.dag_factory`), each municipality's campaigns
are their own row in the Airflow UI: DAG id, display name and tags name the municipality, NIS
code and protocol. A run is a campaign; the campaign's identity is decided by the ledger (the
protocol, reference date, offer text and wave), not by the run — so a second run, a cleared
task or a back-fill continues the same campaign and contacts no family twice.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Param, chain, get_current_context, task

from welfare_exchange.orchestration.dag_factory import is_wanted, protocol_dag_id, read_snapshot
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.outreach import steps
from welfare_exchange.orchestration.sensors.protocol_gate import ProtocolGateSensor
from welfare_exchange.orchestration.tasks import run_step
from welfare_exchange.settings import get_timing

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

DOC = """\
### Method 2 campaign — {municipality} (NIS {nis_code}), protocol {id}

The agency contacts the families for the municipality; the municipality receives **no personal
data**, only counts. Families whose child, domiciled in {municipality}, had a *sociale toeslag*
on the offer's reference date get the municipality's offer — by e-mail when an address is
known, otherwise by letter (PDF batches for the mail room). Each family decides itself whether
to apply.

| step | task | what it guarantees |
|---|---|---|
| 1 | `protocol_gate` | waits until the protocol is signed and valid; fails at once when revoked, suspended or expired |
| 2 | `open_campaign` | one ledger entry per campaign (protocol, reference date, offer text, wave): any re-run continues it |
| 3 | `select_families` | one set query; the list is frozen and staged encrypted |
| 4 | `render_letters` | PDF letters in batches for the mail room, encrypted at rest, rendered once |
| 5 | `protocol_gate_before_delivery` | the gate and the offer's validity once more |
| 6 | `send_messages` | the idempotent outbox: at most one message per family, throttled, resumable; a message interrupted mid-send is *uncertain* and not sent again |
| 7 | `report_to_municipality` | counts only (e-mail, e-mail after a check, letter, bounced, uncertain, unreachable), under 10 suppressed; over `{channel}`; later versions with `welfare-exchange outreach report` |
| 8 | `record_retention` | deletion deadline of the family list, letters and report |

Param `wave`: 1 for the campaign; 2, 3, … only for a deliberate reminder to the same families.
Mail room: `welfare-exchange outreach letters <campaign>` writes the letter PDFs for printing.
No personal data appears in logs, XCom or the run configuration.
"""


def method2_dag_id(entry: dict[str, Any]) -> str:
    """E.g. ``method2_24062_leuven_p3``."""
    return protocol_dag_id("method2", entry)


def build_method2_dag(entry: dict[str, Any]) -> DAG:
    """The Method 2 DAG of one protocol (``entry`` is one protocol of the registry snapshot)."""
    protocol_id = int(entry["id"])
    timing = get_timing()
    poke = timing.poke_interval
    with DAG(
        dag_id=method2_dag_id(entry),
        dag_display_name=f"Method 2 · {entry['municipality']} ({entry['nis_code']}) · protocol {protocol_id}",
        description=f"Method 2 campaign for {entry['municipality']}: the agency contacts the families",
        doc_md=DOC.format(**entry),
        schedule=entry.get("schedule") or None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params={"protocol_id": protocol_id, "wave": Param(1, type="integer", minimum=1)},
        tags=["method2", f"nis:{entry['nis_code']}", entry["municipality"], entry["channel"], f"protocol:{protocol_id}"],
    ) as dag:
        gate = ProtocolGateSensor(
            task_id="protocol_gate",
            protocol_id=protocol_id,
            requirements={"kind": "method2"},
            poke_interval=poke,
            timeout=timing.gate_timeout,
            retries=0,
        )

        @task(task_id="open_campaign")
        def open_campaign() -> int:
            wave = int(get_current_context()["params"].get("wave") or 1)
            return run_step(steps.open_campaign)(protocol_id, wave=wave)

        @task(task_id="select_families")
        def select_families(exchange_id: int) -> dict[str, int]:
            return run_step(steps.select_families)(exchange_id)

        @task(task_id="render_letters")
        def render_letters(exchange_id: int) -> dict[str, int]:
            return run_step(steps.render_letters)(exchange_id)

        @task(task_id="protocol_gate_before_delivery", retries=0)
        def protocol_gate_before_delivery(exchange_id: int) -> str:
            return run_step(steps.recheck_gate)(exchange_id)

        # Sending is throttled: give it hours, and let retries (with backoff) resume it.
        @task(task_id="send_messages", execution_timeout=dt.timedelta(hours=12))
        def send_messages(exchange_id: int) -> dict[str, int]:
            return run_step(steps.send_messages)(exchange_id)

        @task(task_id="report_to_municipality")
        def report_to_municipality(exchange_id: int) -> dict[str, Any]:
            return run_step(steps.report_to_municipality)(exchange_id)

        @task(task_id="record_retention")
        def record_retention(exchange_id: int) -> dict[str, str]:
            return run_step(steps.record_retention)(exchange_id)

        exchange_id = open_campaign()
        chain(
            gate,
            exchange_id,
            select_families(exchange_id),
            render_letters(exchange_id),
            protocol_gate_before_delivery(exchange_id),
            send_messages(exchange_id),
            report_to_municipality(exchange_id),
            record_retention(exchange_id),
        )
    return dag


def method2_dags(path: os.PathLike | str | None = None) -> dict[str, DAG]:
    """Every Method 2 DAG, keyed by DAG id (for a DAG file's ``globals()``)."""
    dags = {}
    for entry in read_snapshot(path):
        if entry["kind"] == "method2" and is_wanted(method2_dag_id(entry)):
            dag = build_method2_dag(entry)
            dags[dag.dag_id] = dag
    return dags
