"""The LocalExecutor, with the project's modules imported before it forks its workers.

Every task try runs in a process forked from a LocalExecutor worker, and the workers are forked
from the scheduler when the executor starts. Importing
:data:`welfare_exchange.exchange.scheduling.PRELOAD_MODULES` right before that means every task
process starts with Airflow's DAG bag, the DAG factory, the channels and the SFTP hook imported:
measured under a batch on 2 cores, the DAG file's import and parse took 2.5 s (median) of every
try, more than the step itself. Selected with
``AIRFLOW__CORE__EXECUTOR=welfare_exchange.orchestration.executor.PreloadingLocalExecutor``
(the benchmark's "new" policy; the dev servers keep Airflow's LocalExecutor); restart the
scheduler after upgrading the code. Its workers wake the moment a try's process exits
(:mod:`welfare_exchange.orchestration.task_exit`), so a slot is free again at once. Before that
watch, its workers were seen reporting a try's end a little later than the stock executor's
(not measured again since); the sensors' reschedule floor
(:mod:`welfare_exchange.orchestration.sensors.reschedule`) keeps such a late end clear of
Airflow's stale-event race.
"""

from __future__ import annotations

import importlib

from airflow.executors.local_executor import LocalExecutor

from welfare_exchange.exchange.scheduling import PRELOAD_MODULES
from welfare_exchange.orchestration import task_exit

#: The value of ``[core] executor`` that selects it.
EXECUTOR = f"{__name__}.PreloadingLocalExecutor"


class PreloadingLocalExecutor(LocalExecutor):
    """:class:`LocalExecutor` whose workers (and so their task processes) inherit the preloaded modules."""

    def start(self) -> None:
        for name in PRELOAD_MODULES:
            importlib.import_module(name)
        task_exit.install()  # a worker is free when its try's process exits (task_exit)
        super().start()
