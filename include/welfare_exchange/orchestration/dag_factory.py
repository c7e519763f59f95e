"""Build one Method 1 DAG per protocol, from the registry snapshot — never from a database query.

Why one DAG per protocol: a data engineer sees each municipality as its own row in the Airflow
UI — its DAG id, display name and tags name the municipality, NIS code and protocol — with its
own run history, pause switch and schedule. Each run is one exchange: one request file. The
DAG file reads the snapshot that every protocol change rewrites
(:func:`welfare_exchange.protocols.write_snapshot`), so parsing touches no database, network or
connection.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG, TriggerRule, chain, get_current_context, get_parsing_context, task
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowSkipException

from welfare_exchange.channels.registry import channel_for, names
from welfare_exchange.exchange import steps
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.orchestration.sensors.channel_arrival import ChannelArrivalSensor
from welfare_exchange.orchestration.sensors.protocol_gate import ProtocolGateSensor
from welfare_exchange.orchestration.sensors.mail_arrival import MailRequestArrivalSensor
from welfare_exchange.orchestration.sensors.request_arrival import RequestArrivalSensor
from welfare_exchange.orchestration.tasks import run_step
from welfare_exchange.settings import get_settings, get_timing

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

DOC = """\
### Method 1 exchange — {municipality} (NIS {nis_code}), protocol {id}

The municipality receives the data. It sends a password-encrypted Excel file with the INSZ
numbers of the children aged 0–25 domiciled in it {how_sent}; this DAG returns,
encrypted with the key agreed between the two DPOs, which of them gave right to a *sociale
toeslag* from the protocol's reference date on, and who their *begunstigde* is.

| step | task | what it guarantees |
|---|---|---|
| 1 | `protocol_gate` | waits until the protocol is signed and valid; fails at once when revoked, suspended or expired |
| 2 | `wait_for_request` | {wait} |
| 3 | `fetch_request` | {fetch} |
| 4 | `decrypt_and_validate` | decrypts in memory; {refuse} |
| beside 5 | `send_receipt` | acknowledges the request to the municipality on its channel, once: exchange id, received at, SHA-256 of its file, rows to be processed (no personal data) |
| 5 | `match_entitlements` | one set join in the project database |
| 6 | `build_result` | result + validation report, encrypted (AES-256); built once, so re-runs send identical bytes |
| 7 | `protocol_gate_before_delivery` | the gate once more: a protocol revoked meanwhile blocks delivery |
| 8 | `deliver_result` | {deliver} |
| 9 | `record_retention` | deletion deadlines of request and result; intermediates gone |
| beside 7–8 | `record_data_subjects` | who the exchange concerned (requested children, the people in the result) as keyed references in the audit, for access requests; runs beside the delivery, and after a failure too |

{connections}
Re-running: clear any task or the whole run — see the runbook, *Re-run a failed exchange safely*.
No personal data appears in logs, XCom or the run configuration.
"""

def dag_doc(entry: dict[str, Any]) -> str:
    """The DAG's ``doc_md``: the steps as the protocol's channel says they read."""
    return DOC.format(**entry, **channel_for(entry).doc(entry))


def protocol_dag_id(prefix: str, entry: dict[str, Any]) -> str:
    """E.g. ``method1_44021_gent_p3``: the municipality at a glance, the protocol to be unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", entry["municipality"].lower()).strip("_")
    return f"{prefix}_{entry['nis_code']}_{slug}_p{entry['id']}"


def method1_dag_id(entry: dict[str, Any]) -> str:
    return protocol_dag_id("method1", entry)


def _arrival_sensor(entry: dict[str, Any], poke: float):
    """``wait_for_request``: the sensor the protocol's channel asks for (:attr:`Channel.sensor`)."""
    timeout = get_timing().arrival_timeout
    channel = channel_for(entry)
    build = ARRIVAL_SENSORS.get(channel.sensor)
    if build is None:
        raise ValueError(f"channel {channel.name!r} asks for arrival sensor {channel.sensor!r}, which does not exist")
    # The arrival window: no request within it ends the run skipped (audited as
    # request.none_arrived), whatever the mode; waiting is not a try, so no retry is used up.
    return build(entry, poke=poke, timeout=timeout)


def _sftp_inbox_sensor(entry: dict[str, Any], *, poke: float, timeout: float):
    return RequestArrivalSensor(
        task_id="wait_for_request",
        protocol_id=int(entry["id"]),
        sftp_conn_id=entry["channel_connection"],
        settle_seconds=get_timing().settle_seconds,
        poke_interval=poke,
        timeout=timeout,
        soft_fail=True,
        # Read when the DAG is built, as the SFTP provider's sensor does (no project variable).
        deferrable=conf.getboolean("operators", "default_deferrable", fallback=False),
    )


def _mailbox_sensor(entry: dict[str, Any], *, poke: float, timeout: float):
    from welfare_exchange.channels import smime as mail_channel

    return MailRequestArrivalSensor(
        task_id="wait_for_request",
        protocol_id=int(entry["id"]),
        sender_address=(entry.get("sender_address") or "").strip().lower(),
        imap_conn_id=mail_channel.imap_conn_id(),
        deferrable=get_timing().mail_deferrable,
        poke_interval=poke,
        timeout=timeout,
        soft_fail=True,  # no message today: the run ends skipped, not failed
    )


def _channel_sensor(entry: dict[str, Any], *, poke: float, timeout: float):
    return ChannelArrivalSensor(
        task_id="wait_for_request",
        protocol_id=int(entry["id"]),
        channel=entry["channel"],
        poke_interval=poke,
        timeout=timeout,
        soft_fail=True,
    )


#: :attr:`Channel.sensor` → the ``wait_for_request`` sensor it names.
ARRIVAL_SENSORS: dict[str, Callable[..., Any]] = {
    "sftp_inbox": _sftp_inbox_sensor, "mailbox": _mailbox_sensor, "generic": _channel_sensor,
}


def build_method1_dag(entry: dict[str, Any]) -> DAG:
    """The Method 1 DAG of one protocol (``entry`` is one protocol of the registry snapshot)."""
    protocol_id = int(entry["id"])
    timing = get_timing()
    poke = timing.poke_interval
    with DAG(
        dag_id=method1_dag_id(entry),
        dag_display_name=f"Method 1 · {entry['municipality']} ({entry['nis_code']}) · protocol {protocol_id}",
        description=f"Method 1 exchange with {entry['municipality']} over {entry['channel']}",
        doc_md=dag_doc(entry),
        schedule=entry.get("schedule") or None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params={"protocol_id": protocol_id},
        tags=["method1", f"nis:{entry['nis_code']}", entry["municipality"], entry["channel"], f"protocol:{protocol_id}"],
    ) as dag:
        gate = ProtocolGateSensor(
            task_id="protocol_gate",
            protocol_id=protocol_id,
            requirements={"kind": "method1", "channel": entry["channel"]},
            poke_interval=poke,
            timeout=timing.gate_timeout,
            retries=0,
        )
        arrival = _arrival_sensor(entry, poke)

        @task(task_id="fetch_request")
        def fetch_request(item: dict[str, Any]) -> int:
            exchange_id = run_step(steps.fetch_request)(protocol_id, item)
            if exchange_id is None:
                raise AirflowSkipException("duplicate request: this file was already processed; see the audit trail")
            return exchange_id

        @task(task_id="decrypt_and_validate")
        def decrypt_and_validate(exchange_id: int) -> dict[str, Any]:
            return run_step(steps.decrypt_and_validate)(exchange_id)

        @task(task_id="send_receipt")
        def send_receipt(exchange_id: int) -> dict[str, Any]:
            return run_step(steps.send_receipt)(exchange_id)

        @task(task_id="match_entitlements")
        def match_entitlements(exchange_id: int) -> dict[str, int]:
            return run_step(steps.match_entitlements)(exchange_id)

        @task(task_id="build_result")
        def build_result(exchange_id: int) -> dict[str, Any]:
            return run_step(steps.build_result)(exchange_id)

        @task(task_id="protocol_gate_before_delivery", retries=0)
        def protocol_gate_before_delivery(exchange_id: int) -> str:
            return run_step(steps.recheck_gate)(exchange_id)

        @task(task_id="deliver_result")
        def deliver_result(exchange_id: int) -> dict[str, Any]:
            return run_step(steps.deliver_result)(exchange_id)

        # Beside the delivery, and also after a failure upstream (all_done): the exchange id is
        # pulled here rather than passed in, because a skipped fetch (no file, or a duplicate)
        # has none and then there is nothing to record.
        @task(task_id="record_data_subjects", trigger_rule=TriggerRule.ALL_DONE)
        def record_data_subjects() -> dict[str, int]:
            exchange_id = get_current_context()["ti"].xcom_pull(task_ids="fetch_request")
            if exchange_id is None:
                raise AirflowSkipException("no exchange in this run: nobody's data to record")
            return run_step(steps.record_data_subjects)(exchange_id)

        @task(task_id="record_retention")
        def record_retention(exchange_id: int) -> dict[str, str]:
            return run_step(steps.record_retention)(exchange_id)

        exchange_id = fetch_request(arrival.output)
        built = build_result(exchange_id)
        retention = record_retention(exchange_id)
        validated = decrypt_and_validate(exchange_id)
        chain(
            gate,
            arrival,
            exchange_id,
            validated,
            match_entitlements(exchange_id),
            built,
            protocol_gate_before_delivery(exchange_id),
            deliver_result(exchange_id),
            retention,
        )
        # The staged lists it reads are deleted by record_retention, so that waits for it.
        chain(built, record_data_subjects(), retention)
        # The municipality's acknowledgement, beside the matching: it never holds up the result.
        chain(validated, send_receipt(exchange_id))
    return dag


def read_snapshot(path: os.PathLike | str | None = None) -> list[dict[str, Any]]:
    """The protocols in the registry snapshot; empty when none was written yet."""
    target = path or get_settings().registry_snapshot
    try:
        with open(target) as handle:
            return json.load(handle)["protocols"]
    except FileNotFoundError:
        return []


def is_wanted(dag_id: str) -> bool:
    """Whether this parse of a DAG file should build ``dag_id``.

    A task's process parses its DAG file only to run one task of one DAG: Airflow names that DAG
    in the parsing context, and building only it keeps every task start short — with 285
    protocols, building them all takes ~0.8 s, per task. The DAG processor sets no context and
    gets every DAG.
    """
    wanted = get_parsing_context().dag_id
    return wanted is None or wanted == dag_id


def method1_dags(path: os.PathLike | str | None = None) -> dict[str, DAG]:
    """Every Method 1 DAG, keyed by DAG id (for a DAG file's ``globals()``).

    With at least one e-mail protocol, also the mailbox triage DAG
    (:func:`build_mail_triage_dag`).
    """
    dags = {}
    entries = read_snapshot(path)
    for entry in entries:
        if entry["kind"] == "method1" and entry["channel"] in names() and is_wanted(method1_dag_id(entry)):
            dag = build_method1_dag(entry)
            dags[dag.dag_id] = dag
    if any(e["channel"] in names() and channel_for(e).sensor == "mailbox" for e in entries) and is_wanted(MAIL_TRIAGE_DAG_ID):
        dag = build_mail_triage_dag()
        dags[dag.dag_id] = dag
    return dags


MAIL_TRIAGE_DAG_ID = "method1_mail_triage"


def build_mail_triage_dag() -> DAG:
    """Move mail from senders no e-mail protocol registers out of the agency's INBOX, audited.

    Each protocol's sensor only takes its own sender's messages; this DAG keeps the shared
    INBOX from filling up with everything else (and records that it was refused).
    """
    with DAG(
        dag_id=MAIL_TRIAGE_DAG_ID,
        dag_display_name="Method 1 · agency mailbox triage (unknown senders)",
        description="Refuse e-mail from senders that no e-mail protocol registers",
        doc_md=build_mail_triage_dag.__doc__,
        schedule=get_timing().mail_triage_schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["method1", "smime", "mailbox"],
    ) as dag:

        @task(task_id="reject_unknown_senders")
        def reject_unknown_senders() -> dict[str, int]:
            from welfare_exchange.channels import smime as mail_channel

            return run_step(mail_channel.reject_unknown_senders)()

        reject_unknown_senders()
    return dag
