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

from airflow.sdk import Param, dag, get_current_context, task

from welfare_exchange import audit
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.orchestration.assets import ENTITLEMENT_SNAPSHOT
from welfare_exchange.orchestration.tasks import permanent_errors_fail
from welfare_exchange.feeds.store_refresh import import_entitlements


@dag(
    dag_id="entitlement_import",
    dag_display_name="Entitlement store · import",
    description="Import the entitlement extract and emit the entitlement_snapshot Asset event",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "import_file": Param(None, type=["null", "string"], description="CSV path on the worker (default: the drop location)"),
        "mode": Param("full", enum=["full", "delta"],
                      description="full: the agency's whole extract (what it lacks is withdrawn); delta: a partial file"),
        "allow_shrink": Param(False, type="boolean",
                              description="confirm a full extract that withdraws more than the allowed share of the entitlements"),
    },
    tags=["entitlements", "asset"],
)
def entitlement_import():
    @task(task_id="import_entitlements", outlets=[ENTITLEMENT_SNAPSHOT])
    def import_entitlements_task(import_file: str | None = None) -> dict:
        context = get_current_context()
        params = context["params"]
        with permanent_errors_fail():  # a refused file does not get better by retrying
            counts = import_entitlements(
                import_file, audit.Actor.from_context(context), mode=params.get("mode") or "full",
                allow_shrink=bool(params.get("allow_shrink")),
            )
        context["outlet_events"][ENTITLEMENT_SNAPSHOT].extra = counts
        return counts

    import_entitlements_task("{{ params.import_file or '' }}")


entitlement_import()
