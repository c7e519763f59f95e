"""Airflow-facing code: the only package under welfare_exchange that imports Airflow."""
