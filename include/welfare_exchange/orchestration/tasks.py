"""The one task wrapper: how a step runs inside an Airflow task.

Steps are plain functions (the CLI and the tests call them without a scheduler). In a task they
get the task's :class:`~welfare_exchange.runinfo.RunInfo`, and an error no retry can fix — bad
input, a closed protocol gate, a missing key connection (``permanent`` errors, see
:mod:`welfare_exchange.errors`) — fails the task at once instead of using up its retries. This
module is the only place that translation is written.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from welfare_exchange.errors import is_permanent
from welfare_exchange.runinfo import RunInfo


def fail(message: str) -> NoReturn:
    """Fail the task now, without retries: what it found will not change by trying again."""
    raise AirflowFailException(message)


@contextlib.contextmanager
def permanent_errors_fail() -> Iterator[None]:
    """Inside: an error no retry can fix fails the task at once; any other is retried."""
    try:
        yield
    except Exception as err:
        if is_permanent(err):
            fail(str(err))
        raise


def run_step(step: Callable[..., Any], run: Callable[[Any], RunInfo] = RunInfo.from_context) -> Callable[..., Any]:
    """Call ``step`` with this task's run info after its positional arguments.

    :param run: how the run info is made from the task context (the feeds date theirs by the
        data interval).
    """

    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        info = run(get_current_context())
        with permanent_errors_fail():
            return step(*args, info, **kwargs)

    return wrapper
