"""Method 1 exchanges: one Airflow DAG per Method 1 protocol in the registry.

Each protocol's DAG receives over its own channel — the municipality's SFTP inbox, or the
agency's mailbox for S/MIME e-mail — and runs the same steps after receipt. With any e-mail
protocol there is also ``method1_mail_triage``, which refuses mail from unknown senders.

The DAGs are built from the registry snapshot file (written by every protocol change), never
from a database query: see ``welfare_exchange.orchestration.dag_factory``.
"""

from welfare_exchange.orchestration.dag_factory import method1_dags

globals().update(method1_dags())
