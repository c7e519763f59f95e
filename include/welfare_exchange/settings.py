"""One place for configuration: every setting, its environment variable and its default.

Settings are read from the environment each time :func:`get_settings` is called (cheap), so
tests and the CLI can change them without reloading modules. Nothing here touches a database
or the network: DAG files may import it at parse time.

Secrets (the audit HMAC key, the staging encryption key, the anchor signing key) come from the environment, which
``make`` fills from the git-ignored ``var/secrets.env`` it generates on first install; in a
deployment the deployment's secret store fills the same variables (README, "Secrets").
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]


#: Every ``WELFARE_EXCHANGE_*`` variable the project reads, with its one default (as the text the
#: variable would hold; ``None``: unset, or derived from another setting where the reader says so).
#: No other module reads these variables: they ask the functions below (a test keeps it so).
DEFAULTS: dict[str, str | None] = {
    # where things are
    "WELFARE_EXCHANGE_HOME": None,                       # REPO_ROOT/var
    "WELFARE_EXCHANGE_DB_URL": None,                     # a SQLite file in home
    "WELFARE_EXCHANGE_STAGING_DIR": None,                # home/staging
    "WELFARE_EXCHANGE_STAGING_BACKEND": "local",         # or postgres (README "More than one worker host")
    "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": None,          # home/registry_snapshot.json
    "WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE": None,    # home/imports/entitlements.csv
    # secrets
    "WELFARE_EXCHANGE_AUDIT_HMAC_KEY": None,
    "WELFARE_EXCHANGE_STAGING_KEY": None,
    # audit and retention
    "WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS": "3653",
    "WELFARE_EXCHANGE_MAX_RETENTION_DAYS": "365",
    "WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE": None,          # home/audit-anchors.jsonl
    "WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH": "signature",
    "WELFARE_EXCHANGE_AUDIT_TSA_URL": None,
    "WELFARE_EXCHANGE_AUDIT_TSA_CERT": None,
    "WELFARE_EXCHANGE_AUDIT_SIGNING_KEY": None,
    "WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY": None,
    # entitlements, referrals
    "WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT": "5",
    "WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS": "42",
    "WELFARE_EXCHANGE_REFERRAL_FEEDBACK_SCHEDULE": "@daily",
    "WELFARE_EXCHANGE_AGENCY_OUTBOX": None,              # home/agency-outbox
    # the Airflow API (Exchanges view, ``exchange retry``)
    "WELFARE_EXCHANGE_AIRFLOW_API_URL": None,
    "WELFARE_EXCHANGE_AIRFLOW_API_CONN_ID": "airflow_api",
    "WELFARE_EXCHANGE_TASK_WEIGHT_RULE": "upstream",
    "WELFARE_EXCHANGE_TASK_EXIT_WATCH": "true",          # orchestration/task_exit.py
    # timing of the exchange DAGs
    "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "60",
    "WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS": "15",
    "WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS": str(7 * 24 * 3600),
    "WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": str(24 * 3600),
    "WELFARE_EXCHANGE_SETTLE_SECONDS": "10",
    "WELFARE_EXCHANGE_TASK_RETRIES": "4",
    "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "30",
    "WELFARE_EXCHANGE_INBOX_STALE_UPLOAD_SECONDS": str(24 * 3600),
    # the S/MIME channel
    "WELFARE_EXCHANGE_IMAP_CONN_ID": "imap_agency",
    "WELFARE_EXCHANGE_SMIME_CONN_ID": "smime_agency",
    "WELFARE_EXCHANGE_MAIL_MAX_BYTES": str(25 * 1024 * 1024),
    "WELFARE_EXCHANGE_MAIL_DEFERRABLE": "false",
    "WELFARE_EXCHANGE_MAIL_TRIAGE_SCHEDULE": "@hourly",
    # Method 2 (outreach)
    "WELFARE_EXCHANGE_OUTREACH_SMTP_CONN": "smtp_agency",
    "WELFARE_EXCHANGE_OUTREACH_SENDER": None,            # the SMTP connection's from_email
    "WELFARE_EXCHANGE_OUTREACH_RATE": "5",
    "WELFARE_EXCHANGE_OUTREACH_LETTERS_PER_PDF": "500",
    "WELFARE_EXCHANGE_OUTREACH_GATE_RECHECK_SECONDS": "30",
    # structural feeds
    "WELFARE_EXCHANGE_FEED_SCHEDULE": "0 0 1 * *",
    "WELFARE_EXCHANGE_FEED_START_DATE": "2026-01-01",
    "WELFARE_EXCHANGE_FEED_CATCHUP": "true",
    "WELFARE_EXCHANGE_FEED_DEADLINE_HOURS": "120",
    "WELFARE_EXCHANGE_FEED_DEADLINE_ALERT": "true",
    "WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY": "wait",
    "WELFARE_EXCHANGE_FEED_SNAPSHOT_TIMEOUT_SECONDS": str(3 * 24 * 3600),
    "WELFARE_EXCHANGE_FEED_MAX_ACTIVE_TASKS": "4",
}

#: The intake's limits: ``WELFARE_EXCHANGE_INTAKE_`` + a field of
#: :class:`welfare_exchange.intake.reader.IntakeLimits` (whose defaults they override).
INTAKE_PREFIX = "WELFARE_EXCHANGE_INTAKE_"


def _raw(name: str) -> str | None:
    """The variable's value, or its one default when unset or empty."""
    if name not in DEFAULTS:
        raise KeyError(f"{name} is not a setting (add it to welfare_exchange.settings.DEFAULTS)")
    value = os.environ.get(name)
    return DEFAULTS[name] if value in (None, "") else value


def text(name: str) -> str | None:
    """A text setting (``None`` when unset and without default)."""
    return _raw(name)


def _path(name: str, default: Path) -> Path:
    value = _raw(name)
    return Path(value) if value else default


def _int(name: str) -> int:
    value = _raw(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name} must be an integer, got {value!r}") from exc


def _number(name: str) -> float:
    value = _raw(name)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name} must be a number, got {value!r}") from exc


def _bool(name: str) -> bool:
    value = (_raw(name) or "").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {name} must be true or false, got {value!r}")


#: Where staged files can live (:mod:`welfare_exchange.staging`).
STAGING_BACKENDS = ("local", "postgres")


#: The ways an audit anchor can be authenticated outside the project database.
ANCHOR_AUTH_METHODS = ("timestamp", "signature")


def _anchor_auth(name: str) -> frozenset[str]:
    words = frozenset(w.strip() for w in (_raw(name) or "").replace(",", " ").split())
    if not words or words - set(ANCHOR_AUTH_METHODS):
        raise ValueError(
            f"setting {name} must name one or both of {', '.join(ANCHOR_AUTH_METHODS)} "
            f"(comma-separated), got {os.environ.get(name)!r}"
        )
    return words


def _percent(name: str) -> float:
    value = _raw(name)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number <= 100:
        raise ValueError(f"setting {name} must be a percentage between 0 and 100, got {value!r}")
    return number


#: Airflow's task weight rules (``airflow.task.priority_strategy``); ``downstream`` is Airflow's default.
TASK_WEIGHT_RULES = ("upstream", "downstream", "absolute")


def _choice(name: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or "").strip().lower()
    if value not in choices:
        raise ValueError(f"setting {name} must be one of {', '.join(choices)}, got {os.environ.get(name)!r}")
    return value


def intake_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``WELFARE_EXCHANGE_INTAKE_*`` variables that are set, by lower-case field name
    (``environ``: another mapping than the process environment, for tests)."""
    environ = os.environ if environ is None else environ
    return {
        key[len(INTAKE_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(INTAKE_PREFIX) and value not in (None, "")
    }


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment.

    :param home: folder for all runtime state (``WELFARE_EXCHANGE_HOME``, default ``var/``).
    :param db_url: SQLAlchemy URL of the project database (``WELFARE_EXCHANGE_DB_URL``);
        a SQLite file in ``home`` by default, ``postgresql+psycopg2://…`` in production.
    :param staging_dir: where fetched request files (sealed with the staging key) and encrypted
        intermediates live until their retention ends (``WELFARE_EXCHANGE_STAGING_DIR``), with
        the ``local`` staging back end.
    :param staging_backend: where staged files live (``WELFARE_EXCHANGE_STAGING_BACKEND``):
        ``local`` (default: the folder above, enough when every worker shares one disk) or
        ``postgres`` (sealed blobs in the project database, which every worker host reaches;
        README "More than one worker host").
    :param registry_snapshot: JSON snapshot of the protocol registry that DAG files read at
        parse time instead of querying the database (``WELFARE_EXCHANGE_REGISTRY_SNAPSHOT``).
    :param audit_hmac_key: key of the keyed HMAC that pseudonymises INSZ numbers in the audit
        trail (``WELFARE_EXCHANGE_AUDIT_HMAC_KEY``, hex or any string of >= 32 characters).
    :param staging_key: Fernet key that encrypts intermediates at rest
        (``WELFARE_EXCHANGE_STAGING_KEY``).
    :param audit_retention_days: legal term of the audit trail (default 10 years).
    :param audit_anchor_file: the anchor store, where the anchoring task appends the chain's head
        each day (``WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE``); in production on storage the
        database's users cannot write (WORM bucket, log shipper).
    :param audit_anchor_auth: which authentication EVERY anchor must carry and ``audit verify``
        requires (``WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH``: ``timestamp``, ``signature`` or both,
        comma-separated; default ``signature``; production: ``timestamp,signature``). A method
        configured but not required is applied and checked too.
    :param audit_tsa_url: the RFC 3161 time-stamping authority the anchoring task asks
        (``WELFARE_EXCHANGE_AUDIT_TSA_URL``).
    :param audit_tsa_cert: PEM file of the TSA certificate(s) trusted as roots of the
        time-stamp tokens' signing chain (``WELFARE_EXCHANGE_AUDIT_TSA_CERT``).
    :param audit_signing_key: Ed25519 private key (64 hex digits) that signs anchors
        (``WELFARE_EXCHANGE_AUDIT_SIGNING_KEY``; secret; only where the anchoring task runs,
        never in the project database).
    :param audit_signing_public_key: its public key (64 hex digits), all ``audit verify`` needs
        (``WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY``; derived from the private key when unset).
    :param max_retention_days: legal maximum no protocol's retention may exceed.
    :param import_max_withdrawn_percent: the largest share (in %) of the current entitlements a
        full extract may withdraw without ``--allow-shrink``
        (``WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT``, default 5): a truncated extract is
        refused instead of wiping the store.
    :param referral_feedback_days: the term within which a Sociaal Huis reports back on a referral
        it received (``WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS``, default 42 days); a referral
        without feedback after it is flagged.
    :param agency_outbox: the agency's own outbox, where reports meant for the agency itself
        land (``WELFARE_EXCHANGE_AGENCY_OUTBOX``, default ``<home>/agency-outbox``), e.g. the
        referral evaluation reports; counts only, never personal data.
    :param arrival_window_seconds: how long a run waits for a request
        (``WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS``, default 24 h; the Exchanges view shows
        when a waiting run's window closes).
    :param airflow_api_url: Airflow's REST API as the Exchanges view and ``exchange retry``
        call it (``WELFARE_EXCHANGE_AIRFLOW_API_URL``, e.g. ``http://airflow-apiserver:8080``);
        unset: the view calls the API server it runs in, the CLI reads the connection below.
    :param airflow_api_conn_id: the Airflow connection (type ``http``: host = the API's URL,
        login and password of an operator) ``welfare-exchange exchange retry`` logs in with
        (``WELFARE_EXCHANGE_AIRFLOW_API_CONN_ID``, default ``airflow_api``).
    :param task_weight_rule: Airflow weight rule of every task (``WELFARE_EXCHANGE_TASK_WEIGHT_RULE``,
        default ``upstream``: a started exchange finishes before the next one takes the slots;
        ``downstream`` is Airflow's own default). See :mod:`welfare_exchange.exchange.scheduling`.
    """

    home: Path
    db_url: str
    staging_dir: Path
    staging_backend: str
    registry_snapshot: Path
    audit_hmac_key: str | None
    staging_key: str | None
    audit_retention_days: int
    max_retention_days: int
    audit_anchor_file: Path
    audit_anchor_auth: frozenset[str]
    audit_tsa_url: str | None
    audit_tsa_cert: Path | None
    audit_signing_key: str | None
    audit_signing_public_key: str | None
    import_max_withdrawn_percent: float
    referral_feedback_days: int
    agency_outbox: Path
    arrival_window_seconds: int
    airflow_api_url: str | None
    airflow_api_conn_id: str
    task_weight_rule: str


def get_settings() -> Settings:
    home = _path("WELFARE_EXCHANGE_HOME", REPO_ROOT / "var")
    tsa_cert = _raw("WELFARE_EXCHANGE_AUDIT_TSA_CERT")
    return Settings(
        home=home,
        db_url=_raw("WELFARE_EXCHANGE_DB_URL") or f"sqlite:///{home / 'welfare_exchange.db'}",
        staging_dir=_path("WELFARE_EXCHANGE_STAGING_DIR", home / "staging"),
        staging_backend=_choice("WELFARE_EXCHANGE_STAGING_BACKEND", STAGING_BACKENDS),
        registry_snapshot=_path("WELFARE_EXCHANGE_REGISTRY_SNAPSHOT", home / "registry_snapshot.json"),
        audit_hmac_key=_raw("WELFARE_EXCHANGE_AUDIT_HMAC_KEY"),
        staging_key=_raw("WELFARE_EXCHANGE_STAGING_KEY"),
        audit_retention_days=_int("WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS"),
        max_retention_days=_int("WELFARE_EXCHANGE_MAX_RETENTION_DAYS"),
        audit_anchor_file=_path("WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE", home / "audit-anchors.jsonl"),
        audit_anchor_auth=_anchor_auth("WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH"),
        audit_tsa_url=_raw("WELFARE_EXCHANGE_AUDIT_TSA_URL"),
        audit_tsa_cert=Path(tsa_cert) if tsa_cert else None,
        audit_signing_key=_raw("WELFARE_EXCHANGE_AUDIT_SIGNING_KEY"),
        audit_signing_public_key=_raw("WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY"),
        import_max_withdrawn_percent=_percent("WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT"),
        referral_feedback_days=_int("WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS"),
        agency_outbox=_path("WELFARE_EXCHANGE_AGENCY_OUTBOX", home / "agency-outbox"),
        arrival_window_seconds=_int("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS"),
        airflow_api_url=(_raw("WELFARE_EXCHANGE_AIRFLOW_API_URL") or "").rstrip("/") or None,
        airflow_api_conn_id=_raw("WELFARE_EXCHANGE_AIRFLOW_API_CONN_ID") or "",
        task_weight_rule=_choice("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", TASK_WEIGHT_RULES),
    )


def task_exit_watch() -> bool:
    """Whether task supervisors wake at their task's exit (``WELFARE_EXCHANGE_TASK_EXIT_WATCH``;
    :mod:`welfare_exchange.orchestration.task_exit`)."""
    return _bool("WELFARE_EXCHANGE_TASK_EXIT_WATCH")


def entitlement_import_file() -> Path:
    """Where the agency's extract is dropped (``WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE``)."""
    return _path("WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE", get_settings().home / "imports" / "entitlements.csv")


@dataclass(frozen=True)
class Timing:
    """How the exchange DAGs wait and retry.

    :param poke_interval: seconds between two looks of a sensor, the feeds' snapshot wait included
        (``…_POKE_INTERVAL_SECONDS``, 60).
    :param gate_timeout: how long a run waits for its protocol to be active (``…_GATE_TIMEOUT_SECONDS``, 7 days).
    :param arrival_timeout: the arrival window (``…_ARRIVAL_TIMEOUT_SECONDS``, 24 h).
    :param settle_seconds: an SFTP upload must be unchanged this long (``…_SETTLE_SECONDS``, 10).
    :param task_retries: retries of a task (``…_TASK_RETRIES``, 4).
    :param retry_delay: first retry delay in seconds, doubled each try (``…_RETRY_DELAY_SECONDS``, 30).
    :param stale_upload: a temporary upload unchanged this long is reported
        (``…_INBOX_STALE_UPLOAD_SECONDS``, 24 h).
    :param mail_deferrable: the mailbox sensor defers to the triggerer (``…_MAIL_DEFERRABLE``, false).
    :param mail_triage_schedule: schedule of the mailbox triage DAG (``…_MAIL_TRIAGE_SCHEDULE``, hourly).
    :param reschedule_floor: shortest pause between two rescheduled pokes under a scheduler
        (``…_RESCHEDULE_FLOOR_SECONDS``, 15; see
        :mod:`welfare_exchange.orchestration.sensors.reschedule`). ``dag.test()`` has no executor
        and no such race: the test session sets 0.
    """

    poke_interval: float
    gate_timeout: float
    arrival_timeout: float
    settle_seconds: float
    task_retries: int
    retry_delay: float
    stale_upload: float
    mail_deferrable: bool
    mail_triage_schedule: str
    reschedule_floor: float = 15.0


def get_timing() -> Timing:
    return Timing(
        poke_interval=_number("WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS"),
        gate_timeout=_number("WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS"),
        arrival_timeout=_number("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS"),
        settle_seconds=_number("WELFARE_EXCHANGE_SETTLE_SECONDS"),
        task_retries=_int("WELFARE_EXCHANGE_TASK_RETRIES"),
        retry_delay=_number("WELFARE_EXCHANGE_RETRY_DELAY_SECONDS"),
        stale_upload=_number("WELFARE_EXCHANGE_INBOX_STALE_UPLOAD_SECONDS"),
        mail_deferrable=_bool("WELFARE_EXCHANGE_MAIL_DEFERRABLE"),
        mail_triage_schedule=_raw("WELFARE_EXCHANGE_MAIL_TRIAGE_SCHEDULE") or "",
        reschedule_floor=_number("WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS"),
    )


@dataclass(frozen=True)
class MailSettings:
    """The S/MIME channel: the agency mailbox's connection (``…_IMAP_CONN_ID``), the agency's S/MIME
    identity connection (``…_SMIME_CONN_ID``) and the largest request message (``…_MAIL_MAX_BYTES``)."""

    imap_conn_id: str
    smime_conn_id: str
    max_message_bytes: int


def get_mail_settings() -> MailSettings:
    return MailSettings(
        imap_conn_id=_raw("WELFARE_EXCHANGE_IMAP_CONN_ID") or "",
        smime_conn_id=_raw("WELFARE_EXCHANGE_SMIME_CONN_ID") or "",
        max_message_bytes=_int("WELFARE_EXCHANGE_MAIL_MAX_BYTES"),
    )


@dataclass(frozen=True)
class OutreachSettings:
    """How Method 2 sends (see :class:`welfare_exchange.outreach.steps.OutreachSettings`).

    :param smtp_conn_id: the agency's outgoing mail server (``…_OUTREACH_SMTP_CONN``, ``smtp_agency``).
    :param sender: the From address (``…_OUTREACH_SENDER``; default the SMTP connection's ``from_email``).
    :param rate_per_second: e-mails per second at most (``…_OUTREACH_RATE``, 5; 0 = unthrottled).
    :param letters_per_pdf: letters per PDF for the mail room (``…_OUTREACH_LETTERS_PER_PDF``, 500).
    :param gate_recheck_seconds: how often the gate is checked again while sending (``…_OUTREACH_GATE_RECHECK_SECONDS``, 30).
    """

    smtp_conn_id: str
    sender: str | None
    rate_per_second: float
    letters_per_pdf: int
    gate_recheck_seconds: float


def get_outreach_settings() -> OutreachSettings:
    return OutreachSettings(
        smtp_conn_id=_raw("WELFARE_EXCHANGE_OUTREACH_SMTP_CONN") or "",
        sender=_raw("WELFARE_EXCHANGE_OUTREACH_SENDER"),
        rate_per_second=_number("WELFARE_EXCHANGE_OUTREACH_RATE"),
        letters_per_pdf=_int("WELFARE_EXCHANGE_OUTREACH_LETTERS_PER_PDF"),
        gate_recheck_seconds=_number("WELFARE_EXCHANGE_OUTREACH_GATE_RECHECK_SECONDS"),
    )


#: The feeds' data intervals are calendar periods in this zone.
TIMEZONE = "Europe/Brussels"


@dataclass(frozen=True)
class FeedConfig:
    """The structural feeds' settings (see :mod:`welfare_exchange.feeds.config` for their meaning)."""

    schedule: str
    start_date: dt.date
    catchup: bool
    deadline: dt.timedelta
    deadline_alert: bool
    snapshot_policy: str
    snapshot_timeout: dt.timedelta
    snapshot_poke: dt.timedelta
    max_active_tasks: int


def get_feed_config() -> FeedConfig:
    start = _raw("WELFARE_EXCHANGE_FEED_START_DATE") or ""
    try:
        start_date = dt.date.fromisoformat(start)
    except ValueError as exc:
        raise ValueError(f"WELFARE_EXCHANGE_FEED_START_DATE must be YYYY-MM-DD, got {start!r}") from exc
    policy = _raw("WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY")
    if policy not in ("wait", "ignore"):
        raise ValueError(f"WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY must be 'wait' or 'ignore', got {policy!r}")
    return FeedConfig(
        schedule=_raw("WELFARE_EXCHANGE_FEED_SCHEDULE") or "",
        start_date=start_date,
        catchup=_bool("WELFARE_EXCHANGE_FEED_CATCHUP"),
        deadline=dt.timedelta(hours=_number("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS")),
        deadline_alert=_bool("WELFARE_EXCHANGE_FEED_DEADLINE_ALERT"),
        snapshot_policy=policy,
        snapshot_timeout=dt.timedelta(seconds=_number("WELFARE_EXCHANGE_FEED_SNAPSHOT_TIMEOUT_SECONDS")),
        snapshot_poke=dt.timedelta(seconds=_number("WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS")),
        max_active_tasks=_int("WELFARE_EXCHANGE_FEED_MAX_ACTIVE_TASKS"),
    )
