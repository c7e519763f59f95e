"""The FastAPI app behind the Exchanges view, mounted by the Airflow plugin at :data:`URL_PREFIX`.

Routes (all behind Airflow's login; the level each needs, see :mod:`welfare_exchange.ui.auth`):

* ``GET /`` — the page (HTML), shown inside the Airflow UI through an external view (viewer);
* ``GET /api/exchanges`` — the same overview as JSON, for scripts and monitoring (viewer);
* ``GET /api/whoami`` — the caller's Airflow user name and project level (viewer).

A browser that is not logged in is sent to Airflow's login page and back; a script gets 401.

Reads the project database only (never writes, never Airflow's metadata DB). Links to DAGs
and runs are absolute paths of the Airflow UI, with target ``_top`` so that they replace the
whole UI rather than open inside the plugin's iframe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

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


def create_app(caller_resolver: auth.CallerResolver | None = None) -> FastAPI:
    """The plugin's FastAPI app.

    :param caller_resolver: validates a token and returns the :class:`~welfare_exchange.ui.auth.Caller`
        (default: Airflow's auth manager, :func:`welfare_exchange.ui.auth.airflow_caller_from_token`).
        Tests pass their own.
    """
    app = FastAPI(
        title="Welfare exchanges",
        description="Per protocol / municipality: status, last exchange, current step, counts, retention, audit chain.",
        # No interactive docs: the plugin's surface is a few read-only routes.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.caller_resolver = caller_resolver
    viewer = Depends(auth.require(auth.Level.VIEWER))

    @app.exception_handler(auth.NotAuthenticated)
    async def _not_authenticated(request: Request, exc: auth.NotAuthenticated) -> Response:
        headers = {"Cache-Control": "no-store"}
        if _wants_html(request):
            # Back to this page after logging in: a path of this server, never another host.
            here = request.scope.get("root_path", "") + request.url.path.removeprefix(request.scope.get("root_path", ""))
            back = f"{here}?{request.url.query}" if request.url.query else here
            return RedirectResponse(auth.login_url(next_url=back), status_code=303, headers=headers)
        headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"detail": "Not authenticated: log in to Airflow"}, status_code=401, headers=headers)

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return JSONResponse({"detail": f"Forbidden: {exc}"}, status_code=403, headers={"Cache-Control": "no-store"})

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
    def page(request: Request, caller: auth.Caller = viewer) -> Response:
        data = _overview()
        html = _jinja.get_template("exchanges.html").render(
            data=data.to_dict() if data else None,
            base=_airflow_base(request),
            user=caller.name,
            level=caller.level.label,
            json_url=f"{request.scope.get('root_path', '')}/api/exchanges",
        )
        return HTMLResponse(html, status_code=200 if data else 503, headers={"Cache-Control": "no-store"})

    @app.get("/api/exchanges")
    def exchanges(request: Request, caller: auth.Caller = viewer) -> Response:
        data = _overview()
        if data is None:
            return JSONResponse(
                {"detail": "project database unreachable: see docs/RUNBOOK.md § 'The project database is unreachable'"},
                status_code=503,
            )
        body = data.to_dict()
        body["airflow_base"] = _airflow_base(request)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/api/whoami")
    def whoami(caller: auth.Caller = viewer) -> Response:
        return JSONResponse({"user": caller.name, "level": caller.level.label}, headers={"Cache-Control": "no-store"})

    return app
