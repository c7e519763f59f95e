"""Method 2 campaigns: one Airflow DAG per Method 2 protocol in the registry.

The agency contacts the families with a sociale toeslag for the municipality; the municipality
receives only counts. The DAGs are built from the registry snapshot file (written by every
protocol change), never from a database query: see ``welfare_exchange.orchestration.method2_dag``.
"""

from welfare_exchange.orchestration.method2_dag import method2_dags

globals().update(method2_dags())
