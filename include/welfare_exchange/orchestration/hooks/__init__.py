"""Hooks: the only code that reads Airflow connections. Importing this package installs them as
the source of :mod:`welfare_exchange.connections` (DAG files, triggers, the CLI and the UI plugin
import it)."""

from welfare_exchange.orchestration.hooks.airflow_connections import AirflowHooks, install

install()

__all__ = ["AirflowHooks", "install"]
