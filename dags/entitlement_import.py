"""### Entitlement import — refresh the entitlement store and announce it

Imports the agency's extract (CSV: `child_insz, child_birth_date, child_nis, beneficiary_insz,
supplement, start_date, end_date, …`) into the entitlement store, streamed in constant memory
with progress (rows, rows/s, ETA) in the task log. Each row is checked (a bad row refuses the
file, reported by line number, never by value); nothing is overwritten or deleted: the store
keeps every version with the moment it was recorded.

Params: `import_file` (default `WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE`); `mode` — `full`
(default: the agency's whole extract; every current entitlement absent from it is withdrawn) or
`delta` (a partial file: add and correct only); `allow_shrink` — confirm a full extract that
withdraws more than `WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT` (5 %) of the entitlements,
which is otherwise refused as a truncated extract.

A successful import emits an event on the Asset `entitlement_snapshot`
(`welfare-exchange://entitlement-store`), with counts as its extra: the `structural_feeds` DAG
waits for such an event dated after the interval it reports on.
"""

# An Airflow DAG file (Airflow parses only files that name it); orchestration builds the DAG.
from welfare_exchange.orchestration.entitlement_import_dag import build_entitlement_import_dag


def entitlement_import():
    """The DAG, built again (what the tests call)."""
    return build_entitlement_import_dag(doc_md=__doc__)


entitlement_import_dag = entitlement_import()
