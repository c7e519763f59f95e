"""Airflow sensors. Their code runs in workers and the triggerer, where connections are read
through the Airflow hooks: importing the package installs them."""

from welfare_exchange.orchestration import hooks  # noqa: F401
