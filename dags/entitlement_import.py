"""### Entitlement import — refresh the entitlement store and announce it

Imports the agency's extract (CSV: `child_insz, child_birth_date, child_nis, beneficiary_insz,
supplement, start_date, end_date, …`) into the entitlement store, validated as a whole first
(a bad row refuses the file, reported by line number, never by value) and upserted
idempotently. A successful import emits an event on the Asset `entitlement_snapshot`
(`welfare-exchange://entitlement-store`), with counts as its extra: the `structural_feeds` DAG
waits for such an event dated after the interval it reports on. Trigger it after each extract
(param `import_file`; default `WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE`).
"""

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from welfare_exchange import audit
from welfare_exchange.errors import InputError
from welfare_exchange.exchange.defaults import default_args
from welfare_exchange.feeds.assets import ENTITLEMENT_SNAPSHOT
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
    params={"import_file": Param(None, type=["null", "string"], description="CSV path on the worker (default: the drop location)")},
    tags=["entitlements", "asset"],
)
def entitlement_import():
    @task(task_id="import_entitlements", outlets=[ENTITLEMENT_SNAPSHOT])
    def import_entitlements_task(import_file: str | None = None) -> dict:
        context = get_current_context()
        try:
            counts = import_entitlements(import_file, audit.Actor.from_context(context))
        except InputError as err:  # a refused file does not get better by retrying
            raise AirflowFailException(str(err)) from None
        context["outlet_events"][ENTITLEMENT_SNAPSHOT].extra = counts
        return counts

    import_entitlements_task("{{ params.import_file or '' }}")


entitlement_import()
