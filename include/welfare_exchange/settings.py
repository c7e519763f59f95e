"""One place for configuration: every setting, its environment variable and its default.

Settings are read from the environment each time :func:`get_settings` is called (cheap), so
tests and the CLI can change them without reloading modules. Nothing here touches a database
or the network: DAG files may import it at parse time.

Secrets (the audit HMAC key, the staging encryption key, the anchor signing key) come from the environment, which
``make`` fills from the git-ignored ``var/secrets.env`` it generates on first install; in a
deployment the deployment's secret store fills the same variables (README, "Secrets").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"setting {name} must be an integer, got {value!r}") from exc


#: The ways an audit anchor can be authenticated outside the project database.
ANCHOR_AUTH_METHODS = ("timestamp", "signature")


def _anchor_auth(name: str, default: str) -> frozenset[str]:
    words = frozenset(w.strip() for w in (os.environ.get(name) or default).replace(",", " ").split())
    if not words or words - set(ANCHOR_AUTH_METHODS):
        raise ValueError(
            f"setting {name} must name one or both of {', '.join(ANCHOR_AUTH_METHODS)} "
            f"(comma-separated), got {os.environ.get(name)!r}"
        )
    return words


def _percent(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 100:
        raise ValueError(f"setting {name} must be a percentage between 0 and 100, got {value!r}")
    return number


#: Airflow's task weight rules (``airflow.task.priority_strategy``); ``downstream`` is Airflow's default.
TASK_WEIGHT_RULES = ("upstream", "downstream", "absolute")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ValueError(f"setting {name} must be one of {', '.join(choices)}, got {os.environ.get(name)!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment.

    :param home: folder for all runtime state (``WELFARE_EXCHANGE_HOME``, default ``var/``).
    :param db_url: SQLAlchemy URL of the project database (``WELFARE_EXCHANGE_DB_URL``);
        a SQLite file in ``home`` by default, ``postgresql+psycopg2://…`` in production.
    :param staging_dir: where fetched request files (sealed with the staging key) and encrypted
        intermediates live until their retention ends (``WELFARE_EXCHANGE_STAGING_DIR``).
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
    task_weight_rule: str = "upstream"


def get_settings() -> Settings:
    home = _path("WELFARE_EXCHANGE_HOME", REPO_ROOT / "var")
    return Settings(
        home=home,
        db_url=os.environ.get("WELFARE_EXCHANGE_DB_URL") or f"sqlite:///{home / 'welfare_exchange.db'}",
        staging_dir=_path("WELFARE_EXCHANGE_STAGING_DIR", home / "staging"),
        registry_snapshot=_path("WELFARE_EXCHANGE_REGISTRY_SNAPSHOT", home / "registry_snapshot.json"),
        audit_hmac_key=os.environ.get("WELFARE_EXCHANGE_AUDIT_HMAC_KEY") or None,
        staging_key=os.environ.get("WELFARE_EXCHANGE_STAGING_KEY") or None,
        audit_retention_days=_int("WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS", 3653),
        max_retention_days=_int("WELFARE_EXCHANGE_MAX_RETENTION_DAYS", 365),
        audit_anchor_file=_path("WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE", home / "audit-anchors.jsonl"),
        audit_anchor_auth=_anchor_auth("WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH", "signature"),
        audit_tsa_url=os.environ.get("WELFARE_EXCHANGE_AUDIT_TSA_URL") or None,
        audit_tsa_cert=Path(os.environ["WELFARE_EXCHANGE_AUDIT_TSA_CERT"]) if os.environ.get("WELFARE_EXCHANGE_AUDIT_TSA_CERT") else None,
        audit_signing_key=os.environ.get("WELFARE_EXCHANGE_AUDIT_SIGNING_KEY") or None,
        audit_signing_public_key=os.environ.get("WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY") or None,
        import_max_withdrawn_percent=_percent("WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT", 5.0),
        referral_feedback_days=_int("WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS", 42),
        agency_outbox=_path("WELFARE_EXCHANGE_AGENCY_OUTBOX", home / "agency-outbox"),
        arrival_window_seconds=_int("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", 24 * 3600),
        airflow_api_url=(os.environ.get("WELFARE_EXCHANGE_AIRFLOW_API_URL") or "").rstrip("/") or None,
        airflow_api_conn_id=os.environ.get("WELFARE_EXCHANGE_AIRFLOW_API_CONN_ID") or "airflow_api",
        task_weight_rule=_choice("WELFARE_EXCHANGE_TASK_WEIGHT_RULE", "upstream", TASK_WEIGHT_RULES),
    )
