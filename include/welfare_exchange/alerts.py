"""Failure alerts: tell the on-call operator that an exchange task failed, and what to read.

Called by the exchange DAGs' failure callback
(:func:`welfare_exchange.orchestration.defaults.on_task_failure`, through :func:`task_failed`) once a
task's last try failed. An alert says which DAG run and task, which protocol and exchange, the
failure's cause and the runbook section it points to (:mod:`welfare_exchange.failures`), the
reason (our own error text, already free of personal data) — never personal data: every text
field is scrubbed of anything INSZ-shaped before it leaves.

Channels, each enabled by creating its Airflow connection (``AIRFLOW_CONN_*`` or a secrets
backend; nothing is configured in code):

* **webhook** — connection ``alert_webhook`` (type ``http``): a JSON ``POST`` to
  ``<schema>://<host>:<port><extra.endpoint>``. ``host`` may also be a full URL. The
  password, when set, is sent as ``Authorization: Bearer <password>``; ``extra.headers`` adds
  headers. Works with chat webhooks that accept JSON, or any small receiver.
* **e-mail** — connection ``alert_smtp`` (type ``smtp``, the smtp provider's fields and extras:
  ``from_email``, ``disable_ssl``, ``disable_tls``, ``timeout``, ``retry_limit``) with the
  recipients in ``extra.to`` (a list or a comma-separated string).

Exactly once per failed try: the alert is a side effect in the exchange ledger
(``alert:<dag>:<run>:<task>:<try>``), so a callback that runs twice for the same try — the
task process and, after a crash, the scheduler — alerts once. If the project database itself
is down (a failure worth alerting on), the alert is sent anyway: a rare duplicate beats a
silent failure. Sending never raises: the task's own failure must stay what Airflow reports.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from dataclasses import asdict, dataclass
from email.message import EmailMessage

from welfare_exchange import audit, connections, failures, insz, ledger
from welfare_exchange.db import session_scope

log = logging.getLogger(__name__)

WEBHOOK_CONN_ID = "alert_webhook"
SMTP_CONN_ID = "alert_smtp"
#: Seconds a channel may take; the callback runs in the task's slot, so it must not hang.
TIMEOUT_SECONDS = 10.0
EVENT = "welfare_exchange.task_failed"


@dataclass(frozen=True)
class FailureAlert:
    """What an alert carries. Ids, our error text and the runbook step: no personal data."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int | None
    protocol_id: int | None
    exchange_id: int | None
    reason: str
    runbook: str
    run_path: str
    at: str
    cause: str = "unknown"
    event: str = EVENT

    def subject(self) -> str:
        exchange = f"exchange {self.exchange_id}" if self.exchange_id is not None else "no exchange yet"
        return f"[welfare-exchange] {self.task_id} failed: {self.dag_id} ({exchange})"

    def text(self, airflow_url: str = "") -> str:
        """The e-mail body: one fact a line, then what to do."""
        lines = [
            f"DAG:        {self.dag_id}",
            f"Run:        {self.run_id}",
            f"Task:       {self.task_id} (try {self.try_number})",
            f"Protocol:   {self.protocol_id if self.protocol_id is not None else '-'}",
            f"Exchange:   {self.exchange_id if self.exchange_id is not None else '-'}",
            f"Cause:      {self.cause}",
            f"Reason:     {self.reason}",
            f"Runbook:    {self.runbook}",
            f"In Airflow: {airflow_url}{self.run_path}",
            "",
            "Re-running is safe: the exchange ledger makes every delivery, message and deletion happen once.",
        ]
        return "\n".join(lines) + "\n"


def scrub(text: str | None) -> str:
    """``text`` with every checksum-valid INSZ replaced by ``[withheld]`` (:func:`insz.redact`)."""
    return insz.redact(text, "[withheld]") if text else ""


def _run_path(dag_id: str, run_id: str) -> str:
    quote = lambda value: urllib.parse.quote(value, safe="")  # noqa: E731
    return f"/dags/{quote(dag_id)}/runs/{quote(run_id)}"


def _airflow_url() -> str:
    # [api] base_url when the deployment sets it (links in e-mails need a host); else paths.
    try:
        return connections.hooks().base_url()
    except Exception:
        return ""


def _connection(conn_id: str):
    """The connection, or ``None`` when it does not exist (the channel is off)."""
    return connections.find(conn_id)


def _exchange_of_run(dag_id: str, run_id: str, protocol_id: int | None = None) -> int | None:
    with session_scope() as session:
        exchange = ledger.exchange_of_run(session, dag_id, run_id, protocol_id)
        return exchange.id if exchange is not None else None


# --------------------------------------------------------------------------- channels


def webhook_url(conn) -> str:
    """``<schema>://<host>:<port><endpoint>`` of an http connection (``host`` may be a full URL)."""
    host = (conn.host or "").strip()
    if "://" in host:
        base = host.rstrip("/")
    else:
        base = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = str((conn.extra or {}).get("endpoint") or "")
    if endpoint and not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    return base + endpoint


def send_webhook(alert: FailureAlert, conn, conn_id: str = WEBHOOK_CONN_ID) -> None:
    """POST the alert as JSON; raises on a transport error or a non-2xx answer."""
    import httpx

    headers = {"Content-Type": "application/json", **{str(k): str(v) for k, v in ((conn.extra or {}).get("headers") or {}).items()}}
    if conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    body = {**asdict(alert), "airflow_url": _airflow_url() + alert.run_path}
    resp = httpx.post(webhook_url(conn), content=json.dumps(body).encode(), headers=headers, timeout=TIMEOUT_SECONDS)
    resp.raise_for_status()


def _recipients(conn) -> list[str]:
    to = (conn.extra or {}).get("to") or []
    if isinstance(to, str):
        to = to.split(",")
    return [address.strip() for address in to if address and address.strip()]


def send_email(alert: FailureAlert, conn, conn_id: str = SMTP_CONN_ID) -> None:
    """Send the alert as a plain-text e-mail through the smtp provider's hook."""
    recipients = _recipients(conn)
    if not recipients:
        raise ValueError(f"connection {conn_id!r} has no recipients: set extra.to")
    sender = (conn.extra or {}).get("from_email") or conn.login or "welfare-exchange@localhost"
    message = EmailMessage()
    message["Subject"] = alert.subject()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["X-Welfare-Exchange-Event"] = alert.event
    message.set_content(alert.text(_airflow_url()))
    with connections.hooks().smtp(conn_id) as client:
        # The hook opens the connection (TLS, login) from the connection's settings; the message
        # is ours, so it goes through the client the hook opened.
        client.send_message(message, from_addr=sender, to_addrs=recipients)


# --------------------------------------------------------------------------- entry point


def _claim(key: str) -> bool | None:
    """Record the alert in the ledger: True = ours to send, False = already sent, None = unknown."""
    try:
        with session_scope() as session:
            if ledger.is_done(session, key):
                return False
            ledger.begin_side_effect(session, key, kind="alert", exchange_id=None)
        return True
    except Exception as err:
        log.warning("alert: the ledger is unreachable (%s); sending without the once-only check", type(err).__name__)
        return None


def _complete(key: str, detail: dict[str, str]) -> None:
    try:
        with session_scope() as session:
            ledger.complete_side_effect(session, key, detail=detail)
    except Exception as err:
        log.warning("alert: could not record the alert as sent (%s)", type(err).__name__)


def send_failure_alert(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    reason: str,
    runbook: str,
    try_number: int | None = None,
    map_index: int | None = None,
    protocol_id: int | None = None,
    exchange_id: int | None = None,
    cause: str = "unknown",
) -> dict[str, str]:
    """Send one failure alert on every configured channel; never raises.

    :param reason: why the task failed (our error text; scrubbed again here all the same).
    :param runbook: the runbook step, e.g. ``docs/RUNBOOK.md § 'A request was refused'``.
    :param map_index: of a mapped task (one feed per municipality): each map index is alerted.
    :param exchange_id: the exchange, when known; otherwise looked up in the ledger by run.
    :param cause: the failure's cause code (:data:`welfare_exchange.failures.CAUSES`).
    :returns: ``{channel: outcome}`` with outcome ``sent``, ``failed: <error type>``,
        ``not configured`` or ``already sent``.
    """
    outcomes: dict[str, str] = {}
    try:
        if exchange_id is None:
            try:
                exchange_id = _exchange_of_run(dag_id, run_id, protocol_id)
            except Exception as err:  # the database may be what failed
                log.warning("alert: exchange id unknown, the ledger is unreachable (%s)", type(err).__name__)
        alert = FailureAlert(
            dag_id=scrub(dag_id),
            run_id=scrub(run_id),
            task_id=scrub(task_id),
            try_number=try_number,
            protocol_id=protocol_id,
            exchange_id=exchange_id,
            reason=scrub(reason)[:2000],
            runbook=scrub(runbook),
            run_path=_run_path(scrub(dag_id), scrub(run_id)),
            at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            cause=scrub(cause),
        )
        channels = {"webhook": (WEBHOOK_CONN_ID, send_webhook), "email": (SMTP_CONN_ID, send_email)}
        connections = {name: _connection(conn_id) for name, (conn_id, _) in channels.items()}
        if not any(connections.values()):
            log.warning("no alert channel configured (connections %s, %s): failure not alerted", WEBHOOK_CONN_ID, SMTP_CONN_ID)
            return {name: "not configured" for name in channels}
        mapped = f":{map_index}" if map_index is not None and map_index >= 0 else ""
        key = f"alert:{alert.dag_id}:{alert.run_id}:{alert.task_id}{mapped}:{try_number}"[:250]
        if _claim(key) is False:
            log.info("alert for %s/%s try %s already sent", alert.dag_id, alert.task_id, try_number)
            return {name: "already sent" for name in channels}
        for name, (conn_id, sender) in channels.items():
            conn = connections[name]
            if conn is None:
                outcomes[name] = "not configured"
                continue
            try:
                sender(alert, conn, conn_id)
                outcomes[name] = "sent"
            except Exception as err:
                # The error text may quote the endpoint (tokens in URLs): the type is enough.
                outcomes[name] = f"failed: {type(err).__name__}"
                log.error("alert by %s (connection %s) failed: %s", name, conn_id, type(err).__name__)
        if any(outcome == "sent" for outcome in outcomes.values()):
            _complete(key, outcomes)
        log.info("failure alert for %s/%s: %s", alert.dag_id, alert.task_id, outcomes)
    except Exception as err:  # an alert must never replace the task's own failure
        log.error("failure alert could not be prepared (%s)", type(err).__name__)
        outcomes.setdefault("error", type(err).__name__)
    return outcomes


# --------------------------------------------------------------------------- the failure callback

#: What the audit says of a try that ended without an exception of its own.
NO_EXCEPTION = (
    "the task ended without an error of its own: Airflow stopped it (the scheduler or executor lost or killed "
    "its process, e.g. a missed heartbeat or an overloaded worker); see the scheduler's log for this try"
)


def task_outcome(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    outcome: str,
    error: BaseException | None,
    fact_key: str,
    try_number: int | None = None,
    protocol_id: int | None = None,
) -> None:
    """Record how a try ended that is not its run's last failure: ``success``, or ``retry`` (it
    failed and will be retried: ``task.retried`` with its cause and runbook section). No alert:
    Airflow tries again. Never raises (a callback must not hide the task's own outcome); what
    could not be recorded is logged.
    """
    actor = audit.Actor(type="system", name="airflow", dag_id=dag_id, run_id=run_id, task_id=task_id,
                        try_number=try_number)
    if outcome == "retry":
        cause = failures.classify(error, task_id)
        text = f"{type(error).__name__}: {error}" if error is not None else NO_EXCEPTION
        if insz.find_insz_shaped(text):
            text = f"{type(error).__name__}: [message withheld: it contained personal data]"
        action, message = "task.retried", failures.fact_message(cause, text)
    else:
        action, message = "task.succeeded", f"task {task_id} succeeded (try {try_number if try_number is not None else '?'})"
    try:
        with session_scope() as session:
            exchange = ledger.exchange_of_run(session, dag_id, run_id, protocol_id)
            audit.record(
                session, action, outcome, actor=actor, protocol_id=protocol_id,
                exchange_id=exchange.id if exchange is not None else None, message=message, fact_key=fact_key,
            )
    except Exception:
        log.exception("could not record the try's outcome (%s) in the audit trail", outcome)


def task_failed(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    error: BaseException | None,
    fact_key: str,
    try_number: int | None = None,
    map_index: int | None = None,
    protocol_id: int | None = None,
) -> failures.Cause:
    """A task's last try failed: classify the cause, record ``task.failed`` with the run's exchange
    and the cause's runbook section, and alert — once per try. Never raises.

    The exception text is ours (no personal data by construction); anything INSZ-shaped that
    slipped in is withheld. The alert goes out even when the audit trail cannot be written
    (the project database may be what failed).

    :param fact_key: one per failed try, so a callback that runs twice records the failure once.
    """
    cause = failures.classify(error, task_id)
    text = f"{type(error).__name__}: {error}" if error is not None else NO_EXCEPTION
    if insz.find_insz_shaped(text):
        text = f"{type(error).__name__}: [message withheld: it contained personal data]"
    actor = audit.Actor(type="system", name="airflow", dag_id=dag_id, run_id=run_id, task_id=task_id,
                        try_number=try_number)
    exchange_id = None
    try:
        with session_scope() as session:
            exchange = ledger.exchange_of_run(session, dag_id, run_id, protocol_id)
            exchange_id = exchange.id if exchange is not None else None
            audit.record(
                session, "task.failed", "failure", actor=actor, protocol_id=protocol_id, exchange_id=exchange_id,
                message=failures.fact_message(cause, text), fact_key=fact_key,
            )
    except Exception:  # the callback must never hide the task's own failure
        log.exception("could not record the failure in the audit trail")
    send_failure_alert(
        dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=try_number, map_index=map_index,
        protocol_id=protocol_id, exchange_id=exchange_id, reason=text, runbook=cause.runbook, cause=cause.code,
    )
    return cause
