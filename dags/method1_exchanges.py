"""Method 1 exchanges: one Airflow DAG per Method 1 protocol in the registry.

The DAGs are built from the registry snapshot file (written by every protocol change), never
from a database query: see ``welfare_exchange.exchange.dag_factory``.
"""

from welfare_exchange.exchange.dag_factory import method1_dags

globals().update(method1_dags())
