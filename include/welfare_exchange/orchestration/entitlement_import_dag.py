"""The entitlement import DAG (``entitlement_import``): refresh the store, emit the snapshot Asset."""

from __future__ import annotations

from airflow.sdk import DAG, Param, dag, get_current_context, task

from welfare_exchange import audit
from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.orchestration.assets import ENTITLEMENT_SNAPSHOT
from welfare_exchange.orchestration.tasks import permanent_errors_fail
from welfare_exchange.feeds.store_refresh import import_entitlements


def build_entitlement_import_dag(doc_md: str | None = None) -> DAG:
    """The ``entitlement_import`` DAG (``doc_md``: the DAG file's documentation)."""

    @dag(
        dag_id="entitlement_import",
        dag_display_name="Entitlement store · import",
        description="Import the entitlement extract and emit the entitlement_snapshot Asset event",
        doc_md=doc_md,
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

    return entitlement_import()
