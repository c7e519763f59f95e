"""A Method 1 DAG run driven task by task, as Airflow runs it when an operator clears tasks.

No scheduler: each task is the plain step function the DAG wires, called with a
:class:`RunInfo` of this run. A cleared task runs when its upstream tasks' last states allow it
(``record_data_subjects`` is ``all_done``, as in the DAG); a failure leaves its downstream
``upstream_failed``. What the tests add on top — crashes, revocations — they inject around it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, SideEffect
from welfare_exchange.errors import ProtocolError
from welfare_exchange.exchange import steps
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.protocols import check_gate, get

#: The DAG's tasks in a topological order, each with its upstream tasks.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "protocol_gate": (),
    "wait_for_request": ("protocol_gate",),
    "fetch_request": ("wait_for_request",),
    "decrypt_and_validate": ("fetch_request",),
    "send_receipt": ("decrypt_and_validate",),
    "match_entitlements": ("decrypt_and_validate",),
    "build_result": ("match_entitlements",),
    "record_data_subjects": ("build_result",),
    "protocol_gate_before_delivery": ("build_result",),
    "deliver_result": ("protocol_gate_before_delivery",),
    "record_retention": ("deliver_result", "record_data_subjects"),
}
TASKS = tuple(UPSTREAM)
ALL_DONE = {"record_data_subjects"}
_EXCHANGE_STEPS = {
    "decrypt_and_validate": steps.decrypt_and_validate,
    "send_receipt": steps.send_receipt,
    "match_entitlements": steps.match_entitlements,
    "build_result": steps.build_result,
    "record_data_subjects": steps.record_data_subjects,
    "protocol_gate_before_delivery": steps.recheck_gate,
    "deliver_result": steps.deliver_result,
    "record_retention": steps.record_retention,
}


def downstream(task: str) -> tuple[str, ...]:
    """``task`` and every task after it (what "clear with downstream" clears), in run order."""
    found, out = {task}, [task]
    for other in TASKS[TASKS.index(task) + 1:]:
        if found & set(UPSTREAM[other]):
            found.add(other)
            out.append(other)
    return tuple(out)


@dataclass
class StepRun:
    """One DAG run of one protocol: task states, the exchange id its fetch pushed, what failed."""

    protocol_id: int
    run_id: str
    exchange_date: dt.date
    item: dict[str, Any]
    states: dict[str, str] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    exchange_id: int | None = None
    errors: list[tuple[str, BaseException]] = field(default_factory=list)

    def info(self, task: str) -> RunInfo:
        return RunInfo(exchange_date=self.exchange_date, dag_id=f"method1_p{self.protocol_id}", run_id=self.run_id,
                       task_id=task, try_number=self.tries.get(task, 0))

    def clear(self, *tasks: str, around: dict[str, Callable[[], contextlib.AbstractContextManager]] | None = None) -> dict[str, str]:
        """Clear ``tasks`` and run them in DAG order, each as Airflow would; returns their new states.

        :param around: per task, a context to run it in (a crash injected, the protocol revoked just before).
        """
        for task in TASKS:
            if task not in tasks:
                continue
            upstream = [self.states.get(u) for u in UPSTREAM[task]]
            runnable = all(s is not None for s in upstream) if task in ALL_DONE else all(s == "success" for s in upstream)
            if not runnable:
                self.states[task] = "upstream_failed"
                continue
            self.tries[task] = self.tries.get(task, 0) + 1
            try:
                with (around or {}).get(task, contextlib.nullcontext)():
                    self.states[task] = self._run(task)
            except Exception as exc:  # a task failure, whatever its cause
                self.states[task] = "failed"
                self.errors.append((task, exc))
        return {t: self.states[t] for t in tasks}

    def whole_run(self) -> dict[str, str]:
        return self.clear(*TASKS)

    def _run(self, task: str) -> str:
        if task == "protocol_gate":
            with session_scope() as session:
                protocol = get(session, self.protocol_id)
                decision = check_gate(protocol, self.exchange_date, kind="method1", channel=protocol.channel)
            if not decision.is_open:
                raise ProtocolError(f"protocol gate {decision.state}: {decision.reason}")
            return "success"
        if task == "wait_for_request":
            return "success"
        if task == "fetch_request":
            self.exchange_id = steps.fetch_request(self.protocol_id, self.item, self.info(task))
            return "success" if self.exchange_id is not None else "skipped"
        if self.exchange_id is None:
            return "skipped"
        _EXCHANGE_STEPS[task](self.exchange_id, self.info(task))
        return "success"

    # ------------------------------------------------------------------ what the ledger says

    def exchange(self) -> Exchange | None:
        with session_scope() as session:
            return session.scalar(sa.select(Exchange).where(Exchange.protocol_id == self.protocol_id))

    def facts(self) -> list[tuple[int, str, str | None]]:
        """``(id, action, fact_key)`` of the audit records about this run's exchange, in order."""
        exchange = self.exchange()
        if exchange is None:
            return []
        with session_scope() as session:
            return [tuple(r) for r in session.execute(
                sa.select(AuditRecord.id, AuditRecord.action, AuditRecord.fact_key)
                .where(AuditRecord.exchange_id == exchange.id).order_by(AuditRecord.id)
            )]

    def side_effects(self, kind: str) -> list[SideEffect]:
        exchange = self.exchange()
        if exchange is None:
            return []
        with session_scope() as session:
            return list(session.scalars(
                sa.select(SideEffect).where(SideEffect.exchange_id == exchange.id, SideEffect.kind == kind)
            ))
