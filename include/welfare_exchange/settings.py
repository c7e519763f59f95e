"""One place for configuration: every setting, its environment variable and its default.

Settings are read from the environment each time :func:`get_settings` is called (cheap), so
tests and the CLI can change them without reloading modules. Nothing here touches a database
or the network: DAG files may import it at parse time.

Secrets (the audit HMAC key, the staging encryption key) come from the environment, which
``make`` fills from the git-ignored ``var/secrets.env`` it generates on first install; in a
production deployment they come from the secrets backend via the same variables.
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


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment.

    :param home: folder for all runtime state (``WELFARE_EXCHANGE_HOME``, default ``var/``).
    :param db_url: SQLAlchemy URL of the project database (``WELFARE_EXCHANGE_DB_URL``);
        a SQLite file in ``home`` by default, ``postgresql+psycopg2://…`` in production.
    :param staging_dir: where fetched (still encrypted) request files and encrypted
        intermediates live until their retention ends (``WELFARE_EXCHANGE_STAGING_DIR``).
    :param registry_snapshot: JSON snapshot of the protocol registry that DAG files read at
        parse time instead of querying the database (``WELFARE_EXCHANGE_REGISTRY_SNAPSHOT``).
    :param audit_hmac_key: key of the keyed HMAC that pseudonymises INSZ numbers in the audit
        trail (``WELFARE_EXCHANGE_AUDIT_HMAC_KEY``, hex or any string of >= 32 characters).
    :param staging_key: Fernet key that encrypts intermediates at rest
        (``WELFARE_EXCHANGE_STAGING_KEY``).
    :param audit_retention_days: legal term of the audit trail (default 10 years).
    :param max_retention_days: legal maximum no protocol's retention may exceed.
    :param import_max_withdrawn_percent: the largest share (in %) of the current entitlements a
        full extract may withdraw without ``--allow-shrink``
        (``WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT``, default 5): a truncated extract is
        refused instead of wiping the store.
    """

    home: Path
    db_url: str
    staging_dir: Path
    registry_snapshot: Path
    audit_hmac_key: str | None
    staging_key: str | None
    audit_retention_days: int
    max_retention_days: int
    import_max_withdrawn_percent: float


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
        import_max_withdrawn_percent=_percent("WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT", 5.0),
    )
