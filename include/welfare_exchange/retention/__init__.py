"""Retention: nothing outlives its term, and every deletion is proven.

* :mod:`~welfare_exchange.retention.rules` — the rules that set deadlines (days after the
  exchange, delete the request after matching, the legal maximum, protocol end);
* :mod:`~welfare_exchange.retention.runner` — the retention run: delete what is due on SFTP,
  locally and in the database, certify each deletion in the audit trail, prune the audit trail
  past its legal term;
* :mod:`~welfare_exchange.retention.status` — what is due when, per protocol;
* :mod:`~welfare_exchange.retention.commands` — ``welfare-exchange retention status|run``.

The daily DAG ``retention_daily`` (``dags/retention.py``) wires the runner's steps.
"""

from welfare_exchange.retention.rules import apply_rules, end_protocols, on_matched
from welfare_exchange.retention.runner import RetentionIncomplete, delete_due, prune_audit, run

__all__ = ["RetentionIncomplete", "apply_rules", "delete_due", "end_protocols", "on_matched", "prune_audit", "run"]
