"""Only users logged in to Airflow see the Exchanges view.

Airflow 3 mounts a plugin's FastAPI app under its API server but does **not** put it behind
Airflow's authentication: without this module the page would be public. We therefore accept
exactly what Airflow's own API accepts — the JWT in ``Authorization: Bearer …`` (API clients,
``POST /auth/token``) or in the ``_token`` cookie the Airflow UI sets after login (the view is
shown in the UI's iframe, same origin, so the cookie comes along) — and validate it with
Airflow's configured auth manager (``get_user_from_token``: signature, expiry, revocation).
The user must then be allowed to see the Airflow UI at all (``AccessView.WEBSITE``).

An unauthenticated request gets 401 (the page adds a link to Airflow's login); a user without
access gets 403. Why 401 for an invalid or expired token too (Airflow's API says 403 for an
invalid one): for this page both mean "log in again".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

log = logging.getLogger(__name__)

#: The cookie the Airflow UI stores the JWT in (``airflow…base_auth_manager.COOKIE_NAME_JWT_TOKEN``).
COOKIE_NAME = "_token"

#: ``(token) -> user``; raises :class:`NotAuthenticated` or :class:`Forbidden`.
UserResolver = Callable[[str], Awaitable[Any]]


class NotAuthenticated(Exception):
    """No token, or a token Airflow does not accept (invalid, expired, revoked)."""


class Forbidden(Exception):
    """A valid Airflow user who may not see the Airflow UI."""


def token_from_request(request: Request) -> str | None:
    """The JWT the request carries: the Bearer header wins over the UI's cookie, as in Airflow."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE_NAME) or None


async def airflow_user_from_token(token: str) -> Any:
    """Validate ``token`` with the API server's auth manager; the user it belongs to.

    :raises NotAuthenticated: the token is invalid, expired or revoked.
    :raises Forbidden: the user may not access the Airflow UI.
    """
    # Imported here: only the API server process, where the auth manager is initialised,
    # ever calls this; importing the plugin elsewhere (scheduler, workers) stays cheap.
    from jwt import InvalidTokenError

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except InvalidTokenError as err:  # ExpiredSignatureError is a subclass
        raise NotAuthenticated(type(err).__name__) from None
    if not manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise Forbidden(f"user {user.get_name()!r} may not access the Airflow UI")
    return user


def login_url(next_url: str) -> str:
    """Airflow's login page, returning to ``next_url`` afterwards (``/auth/login`` if unknown)."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=next_url)
    except Exception:  # no auth manager in this process (unit tests): Airflow's default path
        log.debug("no auth manager: using the default login path")
        return "/auth/login"


async def require_user(request: Request, resolver: UserResolver) -> Any:
    """The logged-in Airflow user of ``request``.

    :raises NotAuthenticated: no token, or one that is not accepted.
    :raises Forbidden: the user may not see the Airflow UI.
    """
    token = token_from_request(request)
    if token is None:
        raise NotAuthenticated("no token")
    return await resolver(token)
