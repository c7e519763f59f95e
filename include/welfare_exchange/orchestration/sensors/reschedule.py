"""Reschedule-mode pokes of the project's sensors are never closer together than :data:`FLOOR_SECONDS`.

Why: in Airflow 3.3 a task process's end can reach the scheduler seconds late (the task
supervisor notices the exit on its next wake-up, every ``[workers] min_heartbeat_interval``:
Airflow's 5 s, the dev servers' 1 s — see :data:`welfare_exchange.exchange.scheduling.WORKER_WAKEUP_SECONDS`
— and later under load; a supervisor that watches the exit, :mod:`welfare_exchange.orchestration.task_exit`,
reports it at once, but the scheduler may still read it late). When a sensor in
``reschedule`` mode is queued for its next poke before that late "success" of the previous
poke arrives, the scheduler takes the event for a task killed from outside, marks the try
failed and kills the poke that is running (`apache/airflow#71172
<https://github.com/apache/airflow/issues/71172>`_, open; fix proposed in #71194). With the
project's default poke interval (60 s) that never happens; a short interval (tests, an
impatient operator) made it happen several times a minute and failed runs.

The floor is ``WELFARE_EXCHANGE_RESCHEDULE_FLOOR_SECONDS`` (15 s by default). It applies to
reschedule mode only: a deferred wait pokes in the triggerer, where no
task process starts or ends per look, and keeps its own interval.
"""

from __future__ import annotations

from welfare_exchange.settings import get_timing


class RescheduleFloor:
    """Mixin for a ``BaseSensorOperator``: the next rescheduled poke is at least the floor away
    (well above the supervisor's late-exit lag)."""

    def _get_next_poke_interval(self, started_at, run_duration, poke_count) -> float:
        interval = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        if not getattr(self, "reschedule", False):
            return interval
        return max(float(interval), get_timing().reschedule_floor)
