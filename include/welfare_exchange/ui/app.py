"""The FastAPI app behind the Exchanges view, mounted by the Airflow plugin at :data:`URL_PREFIX`.

Routes (all behind Airflow's login, see :mod:`welfare_exchange.ui.auth`):

* ``GET /`` — the page (HTML), shown inside the Airflow UI through an external view;
* ``GET /api/exchanges`` — the same overview as JSON, for scripts and monitoring.

Reads the project database only (never writes, never Airflow's metadata DB). Links to DAGs
and runs are absolute paths of the Airflow UI, with target ``_top`` so that they replace the
whole UI rather than open inside the plugin's iframe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from welfare_exchange.db import session_scope
from welfare_exchange.ui import auth, queries

log = logging.getLogger(__name__)

URL_PREFIX = "/welfare-exchange"
TEMPLATES = Path(__file__).resolve().parent / "templates"

_jinja = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _airflow_base(request: Request) -> str:
    # Mounted at <Airflow root>/welfare-exchange: the part before our prefix is where the
    # Airflow UI lives (empty unless Airflow runs under a sub-path via [api] base_url).
    root = request.scope.get("root_path", "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else ""


def _wants_html(request: Request) -> bool:
    # The JSON routes live under /api/; everything else is a page a browser opened.
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return not path.startswith("/api/")


def create_app(user_resolver: auth.UserResolver | None = None) -> FastAPI:
    """The plugin's FastAPI app.

    :param user_resolver: validates a token and returns the user (default: Airflow's auth
        manager, :func:`welfare_exchange.ui.auth.airflow_user_from_token`). Tests pass their own.
    """
    resolver = user_resolver or auth.airflow_user_from_token
    app = FastAPI(
        title="Welfare exchanges",
        description="Per protocol / municipality: status, last exchange, current step, counts, retention, audit chain.",
        # No interactive docs: the plugin's surface is two read-only routes.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    async def current_user(request: Request) -> Any:
        return await auth.require_user(request, resolver)

    @app.exception_handler(auth.NotAuthenticated)
    async def _not_authenticated(request: Request, exc: auth.NotAuthenticated) -> Response:
        headers = {"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
        if not _wants_html(request):
            return JSONResponse({"detail": "Not authenticated: log in to Airflow"}, status_code=401, headers=headers)
        login = auth.login_url(next_url=str(request.url))
        page = _jinja.get_template("login_required.html").render(login_url=login)
        return HTMLResponse(page, status_code=401, headers=headers)

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return JSONResponse({"detail": "Forbidden: no access to the Airflow UI"}, status_code=403)

    def _overview() -> queries.Overview | None:
        try:
            with session_scope() as session:
                return queries.overview(session)
        except Exception as err:
            # The exception text can carry the database URL; log its type only, and point
            # the operator to the runbook.
            log.error("Exchanges view: project database unreachable (%s)", type(err).__name__)
            return None

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, user: Any = Depends(current_user)) -> Response:
        data = _overview()
        html = _jinja.get_template("exchanges.html").render(
            data=data.to_dict() if data else None,
            base=_airflow_base(request),
            user=user.get_name(),
            json_url=f"{request.scope.get('root_path', '')}/api/exchanges",
        )
        return HTMLResponse(html, status_code=200 if data else 503, headers={"Cache-Control": "no-store"})

    @app.get("/api/exchanges")
    def exchanges(request: Request, user: Any = Depends(current_user)) -> Response:
        data = _overview()
        if data is None:
            return JSONResponse(
                {"detail": "project database unreachable: see docs/RUNBOOK.md § 'The project database is unreachable'"},
                status_code=503,
            )
        body = data.to_dict()
        body["airflow_base"] = _airflow_base(request)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return app
