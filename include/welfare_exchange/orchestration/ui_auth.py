"""Who may see and do what in the Exchanges view: Airflow's login and the project's three levels.

Airflow 3 mounts a plugin's FastAPI app under its API server but does **not** put it behind
Airflow's authentication: without this module the page would be public. We therefore accept
exactly what Airflow's own API accepts — the JWT in ``Authorization: Bearer …`` (API clients,
``POST /auth/token``) or in the ``_token`` cookie the Airflow UI sets after login (the view is
shown in the UI's iframe, same origin, so the cookie comes along) — and validate it with
Airflow's configured auth manager (``get_user_from_token``: signature, expiry, revocation).

The project's levels (:class:`Level`) are defined once, in :data:`LEVEL_CHECKS`, as questions
to the auth manager's authorization API, so they follow whatever roles the deployment gives
(FAB's Viewer/User/Op/Admin, or another auth manager's). A route states the level it needs
with ``Depends(require(Level.X))``.

An unauthenticated request gets 401 (the page's handler sends browsers to Airflow's login); a
user below the level a route needs gets 403. Why 401 for an invalid or expired token too
(Airflow's API says 403 for an invalid one): for this page both mean "log in again".
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

log = logging.getLogger(__name__)

#: The cookie the Airflow UI stores the JWT in (``airflow…base_auth_manager.COOKIE_NAME_JWT_TOKEN``).
COOKIE_NAME = "_token"


class Level(enum.IntEnum):
    """The project's levels of access; each includes the ones below it."""

    #: sees the Exchanges view and its JSON API (read only).
    VIEWER = 1
    #: may act on exchanges: clear (retry) their tasks and runs.
    OPERATOR = 2
    #: may manage the connections that hold the DPOs' keys and the SFTP accounts, and read
    #: Airflow's own audit log.
    ADMIN = 3

    @property
    def label(self) -> str:
        """``viewer``, ``operator`` or ``admin``: the name the API and the docs use."""
        return self.name.lower()


def _may_view(manager: Any, user: Any) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    # Exchanges are DAG runs: whoever may open the Airflow UI and read DAGs may see them.
    return manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user) and manager.is_authorized_dag(
        method="GET", user=user
    )


def _may_operate(manager: Any, user: Any) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    # What Airflow's own clearTaskInstances endpoint requires (a retry is a clear), plus
    # editing the run (its state goes back to queued).
    return all(
        manager.is_authorized_dag(method="PUT", access_entity=entity, user=user)
        for entity in (DagAccessEntity.TASK_INSTANCE, DagAccessEntity.RUN)
    )


def _may_administer(manager: Any, user: Any) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return manager.is_authorized_connection(method="PUT", user=user) and manager.is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.AUDIT_LOG, user=user
    )


#: The one definition of the levels: a user has a level when its check and those of every
#: lower level pass. With the FAB auth manager's default roles: Viewer → viewer; User and Op
#: → operator (both may clear tasks in Airflow's own UI too); Admin → admin. With
#: SimpleAuthManager (demo, ``make up``): viewer → viewer, user → operator, op and admin → admin.
LEVEL_CHECKS: tuple[tuple[Level, Callable[[Any, Any], bool]], ...] = (
    (Level.VIEWER, _may_view),
    (Level.OPERATOR, _may_operate),
    (Level.ADMIN, _may_administer),
)


def level_of(manager: Any, user: Any) -> Level | None:
    """The highest level ``user`` has according to the auth manager ``manager``; ``None``: none."""
    level = None
    for candidate, check in LEVEL_CHECKS:
        if not check(manager, user):
            break
        level = candidate
    return level


@dataclass(frozen=True)
class Caller:
    """The logged-in Airflow user of a request and the project level it has."""

    name: str
    level: Level


#: ``(token) -> Caller``; raises :class:`NotAuthenticated` or :class:`Forbidden`.
CallerResolver = Callable[[str], Awaitable[Caller]]


class NotAuthenticated(Exception):
    """No token, or a token Airflow does not accept (invalid, expired, revoked)."""


class Forbidden(Exception):
    """A valid Airflow user below the level a route needs."""

    def __init__(self, needed: Level, caller: Caller | None = None) -> None:
        self.needed = needed
        self.caller = caller
        has = caller.level.label if caller else "no level"
        super().__init__(f"this needs the {needed.label} level; your Airflow role gives {has}")


def token_from_request(request: Request) -> str | None:
    """The JWT the request carries: the Bearer header wins over the UI's cookie, as in Airflow."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE_NAME) or None


async def airflow_caller_from_token(token: str) -> Caller:
    """Validate ``token`` with the API server's auth manager; its user and level.

    :raises NotAuthenticated: the token is invalid, expired or revoked.
    :raises Forbidden: the user has not even the viewer level.
    """
    # Imported here: only the API server process, where the auth manager is initialised,
    # ever calls this; importing the plugin elsewhere (scheduler, workers) stays cheap.
    from jwt import InvalidTokenError

    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except InvalidTokenError as err:  # ExpiredSignatureError is a subclass
        raise NotAuthenticated(type(err).__name__) from None
    level = level_of(manager, user)
    if level is None:
        raise Forbidden(Level.VIEWER)
    return Caller(name=str(user.get_name()), level=level)


def login_url(next_url: str) -> str:
    """Airflow's login page, returning to ``next_url`` afterwards (``/auth/login`` if unknown)."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=next_url)
    except Exception:  # no auth manager in this process (unit tests): Airflow's default path
        log.debug("no auth manager: using the default login path")
        return "/auth/login"


def require(level: Level) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency: the request's :class:`Caller`, who has at least ``level``.

    The token is checked by ``app.state.caller_resolver`` when the app sets one (tests), else
    by :func:`airflow_caller_from_token`. Use as ``caller: Caller = Depends(require(Level.OPERATOR))``.

    :raises NotAuthenticated: no token, or one that is not accepted.
    :raises Forbidden: the caller's level is below ``level``.
    """

    async def dependency(request: Request) -> Caller:
        token = token_from_request(request)
        if token is None:
            raise NotAuthenticated("no token")
        resolver: CallerResolver = getattr(request.app.state, "caller_resolver", None) or airflow_caller_from_token
        caller = await resolver(token)
        if caller.level < level:
            raise Forbidden(level, caller)
        return caller

    dependency.__name__ = f"require_{level.label}"
    return dependency
