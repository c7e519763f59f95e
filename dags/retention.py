"""### Retention — daily deletion run and audit-trail pruning

Nothing an exchange leaves behind outlives its term, and every deletion is proven. Each run
works on its **logical date** (never the wall clock), so a re-run or back-fill of a day deletes
exactly what was due that day.

| task | what it does |
|---|---|
| `end_protocols` | protocols whose `valid_until` passed → `expired` (audited); pending exchanges of expired and revoked protocols are stopped, all their data due now |
| `apply_rules` | "delete the request as soon as matching is done"; deadlines past the legal maximum (`WELFARE_EXCHANGE_MAX_RETENTION_DAYS`) clamped and audited |
| `delete_due_items` | deletes every due request (`received/`, `quarantine/`), result and report (`outbox/`), staging folder and ledger payload; a **deletion certificate** per item in the audit (what, SHA-256, when, rule); already gone = certified *already gone* |
| `prune_audit_trail` | removes audit records past `WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS` that an anchor that old covers, as a chained `audit.pruned` fact carrying the chain hash over |
| `anchor_audit_head` | verifies the trail, appends its head to the anchor store outside the database (`WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE`), RFC 3161 time-stamped and/or signed, and records that in the trail; a TSA that does not answer fails the task (retried), never an unauthenticated anchor |

An unreachable SFTP server fails `delete_due_items` (its items stay due; the other municipalities'
items are deleted) and the task retries with backoff — see `docs/retention.md`, *When a retention
run fails*. Clearing any task is safe: nothing is deleted or certified twice.
"""

# An Airflow DAG file (Airflow parses only files that name it); orchestration builds the DAG.
from welfare_exchange.orchestration.retention_dag import build_retention_dag

retention_dag = build_retention_dag(doc_md=__doc__)
