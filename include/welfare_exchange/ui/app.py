"""The FastAPI app behind the Exchanges view, mounted by the Airflow plugin at :data:`URL_PREFIX`.

Routes (all behind Airflow's login; the level each needs, see :mod:`welfare_exchange.orchestration.ui_auth`):

* ``GET /`` — every protocol and where its exchange is now (viewer);
* ``GET /history`` — every exchange and run, filtered by municipality or NIS, kind, state and
  period, or one exchange by id; ``GET /exchanges/{id}`` — one exchange with its audit facts;
* ``GET /audit`` — the processing register, filtered by exchange, protocol, action and date;
* ``GET /runbook`` — ``docs/RUNBOOK.md``, which every failure's cause links to;
* ``GET /api/exchanges``, ``/api/history``, ``/api/exchanges/{id}``, ``/api/audit``,
  ``/api/audit.csv`` (the register as ``welfare-exchange audit export`` writes it),
  ``/api/whoami`` — the same as JSON for scripts, monitoring and the pages' own refresh;
* ``POST /api/exchanges/{id}/retry``, ``POST /api/runs/retry`` — retry a failed exchange
  (operator; :mod:`welfare_exchange.ui.retry`).

A browser that is not logged in is sent to Airflow's login page and back; a script gets 401.

Airflow's state is read through its REST API with the caller's own token
(:mod:`welfare_exchange.orchestration.airflow_api`); the project database is read, and written only by a
retry's audit fact. The login cookie comes with every request the browser makes, so the POST
routes also require a CSRF token: the pages carry it and send it back in ``X-CSRF-Token``,
and it must equal the ``wx_csrf`` cookie (double submit) — a form or script on another site
can neither read the cookie nor set the header. Links to DAGs and runs are absolute paths of
the Airflow UI, with target ``_top`` so that they replace the whole UI rather than open inside
the plugin's iframe.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import logging
import secrets
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError
from welfare_exchange.failures import CAUSES
from welfare_exchange.orchestration import airflow_api
from welfare_exchange.orchestration import ui_auth as auth
from welfare_exchange.ui import queries, retry, runbook, states

log = logging.getLogger(__name__)

URL_PREFIX = "/welfare-exchange"
TEMPLATES = Path(__file__).resolve().parent / "templates"
CSRF_COOKIE = "wx_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: How often the pages ask for fresh state (seconds).
REFRESH_SECONDS = 10
NO_STORE = {"Cache-Control": "no-store"}
DB_DOWN = "project database unreachable: see docs/RUNBOOK.md § 'The project database is unreachable'"

_jinja = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _when(value: str | None) -> str:
    """An ISO moment as ``2026-11-28 09:00 UTC``."""
    if not value:
        return "—"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _merge_page(query: dict[str, str], page: int) -> str:
    return urllib.parse.urlencode({**{k: v for k, v in query.items() if k != "page"}, "page": page})


_jinja.filters.update(anchor=runbook.anchor, when=_when, merge_page=_merge_page)

#: ``(request, token) -> AirflowApi`` acting as the caller.
AirflowFactory = Callable[[Request, str], airflow_api.AirflowApi]


def _airflow_base(request: Request) -> str:
    # Mounted at <Airflow root>/welfare-exchange: the part before our prefix is where the
    # Airflow UI lives (empty unless Airflow runs under a sub-path via [api] base_url).
    root = request.scope.get("root_path", "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else ""


def _wants_html(request: Request) -> bool:
    # The JSON routes live under /api/; everything else is a page a browser opened.
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return not path.startswith("/api/")


def _default_airflow(request: Request, token: str) -> airflow_api.AirflowApi:
    return airflow_api.AirflowApi(airflow_api.url_of_this_server(request.scope, _airflow_base(request)), token)


class DatabaseDown(Exception):
    """The project database cannot be reached (its URL, which may hold a password, is never shown)."""


class Refused(Exception):
    """A request refused for what it is, not for who sends it (a missing CSRF token): 403."""


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        raise InputError(f"not a date in YYYY-MM-DD form: {value!r}") from None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise InputError(f"not a number: {value!r}") from None


def _history_filter(request: Request) -> queries.HistoryFilter:
    q = request.query_params
    state = q.get("state") or None
    if state is not None and state not in states.STATES:
        raise InputError(f"unknown state {state!r}; one of {', '.join(states.STATES)}")
    return queries.HistoryFilter(who=q.get("who") or None, kind=q.get("kind") or None, state=state,
                                 since=_date(q.get("since")), until=_date(q.get("until")),
                                 exchange_id=_int(q.get("exchange")), page=_int(q.get("page")) or 1)


def _register_filter(request: Request) -> audit.RegisterFilter:
    q = request.query_params
    return audit.RegisterFilter(since=_date(q.get("since")), until=_date(q.get("until")), exchange_id=_int(q.get("exchange")),
                                protocol_id=_int(q.get("protocol")), action=(q.get("action") or "").strip() or None)


def create_app(caller_resolver: auth.CallerResolver | None = None, airflow: AirflowFactory | None = None) -> FastAPI:
    """The plugin's FastAPI app.

    :param caller_resolver: validates a token and returns the :class:`~welfare_exchange.orchestration.ui_auth.Caller`
        (default: Airflow's auth manager, :func:`welfare_exchange.orchestration.ui_auth.airflow_caller_from_token`).
    :param airflow: makes the Airflow API client acting as the caller (default: this API server,
        :func:`welfare_exchange.orchestration.airflow_api.url_of_this_server`). Tests pass their own.
    """
    app = FastAPI(
        title="Welfare exchanges",
        description="Per protocol / municipality: the true state of every exchange, history, retry, the processing register.",
        # No interactive docs: the plugin's surface is a few routes documented above.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.caller_resolver = caller_resolver
    app.state.airflow = airflow or _default_airflow
    viewer = Depends(auth.require(auth.Level.VIEWER))
    operator = Depends(auth.require(auth.Level.OPERATOR))

    @app.exception_handler(auth.NotAuthenticated)
    async def _not_authenticated(request: Request, exc: auth.NotAuthenticated) -> Response:
        if _wants_html(request):
            # Back to this page after logging in: a path of this server, never another host.
            here = request.scope.get("root_path", "") + request.url.path.removeprefix(request.scope.get("root_path", ""))
            back = f"{here}?{request.url.query}" if request.url.query else here
            return RedirectResponse(auth.login_url(next_url=back), status_code=303, headers=NO_STORE)
        return JSONResponse({"detail": "Not authenticated: log in to Airflow"}, status_code=401,
                            headers={**NO_STORE, "WWW-Authenticate": "Bearer"})

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return JSONResponse({"detail": f"Forbidden: {exc}"}, status_code=403, headers=NO_STORE)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return JSONResponse({"detail": f"Forbidden: {exc}"}, status_code=403, headers=NO_STORE)

    @app.exception_handler(InputError)
    async def _bad_input(request: Request, exc: InputError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=400, headers=NO_STORE)

    @app.exception_handler(DatabaseDown)
    async def _database_down(request: Request, exc: DatabaseDown) -> Response:
        if _wants_html(request):
            return HTMLResponse(_jinja.get_template("unreachable.html").render(), status_code=503, headers=NO_STORE)
        return JSONResponse({"detail": DB_DOWN}, status_code=503, headers=NO_STORE)

    def _read(what: Callable[[Any], Any]) -> Any:
        try:
            with session_scope() as session:
                return what(session)
        except (InputError, Refused, auth.NotAuthenticated, auth.Forbidden):
            raise
        except Exception as err:
            # The exception text can carry the database URL: its type only.
            log.error("Exchanges view: project database unreachable (%s)", type(err).__name__)
            raise DatabaseDown() from None

    def _with_airflow(request: Request, what: Callable[[Any, airflow_api.AirflowApi], Any]) -> Any:
        token = auth.token_from_request(request) or ""
        with request.app.state.airflow(request, token) as api:
            return _read(lambda session: what(session, api))

    def _page(request: Request, caller: auth.Caller, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        root = request.scope.get("root_path", "")
        html = _jinja.get_template(template).render(
            base=_airflow_base(request), root=root, user=caller.name, level=caller.level.label,
            may_retry=caller.level >= auth.Level.OPERATOR, csrf=token, refresh=REFRESH_SECONDS,
            causes=CAUSES, state_names=states.STATES, **values,
        )
        response = HTMLResponse(html, status_code=status, headers=NO_STORE)
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                            path=root or "/")
        return response

    def _json(body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=NO_STORE)

    def _check_csrf(request: Request) -> None:
        cookie, header = request.cookies.get(CSRF_COOKIE) or "", request.headers.get(CSRF_HEADER) or ""
        origin = request.headers.get("origin")
        if not cookie or not hmac.compare_digest(cookie, header):
            raise Refused("the request lacks the page's CSRF token: reload the page and try again")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Refused("the request comes from another site")

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, caller: auth.Caller = viewer) -> Response:
        data = _with_airflow(request, lambda session, api: queries.overview(session, api=api))
        return _page(request, caller, "exchanges.html", data=data.to_dict(), json_url=f"{request.scope.get('root_path', '')}/api/exchanges")

    @app.get("/history", response_class=HTMLResponse)
    def history_page(request: Request, caller: auth.Caller = viewer) -> Response:
        f = _history_filter(request)
        data = _with_airflow(request, lambda session, api: queries.history(session, f, api=api))
        return _page(request, caller, "history.html", data=data.to_dict(), f=f, query=dict(request.query_params),
                     json_url=f"{request.scope.get('root_path', '')}/api/history?{request.url.query}")

    @app.get("/exchanges/{exchange_id}", response_class=HTMLResponse)
    def exchange_page(request: Request, exchange_id: int, caller: auth.Caller = viewer) -> Response:
        data = _with_airflow(request, lambda session, api: queries.history(session, queries.HistoryFilter(exchange_id=exchange_id), api=api))
        facts = _read(lambda session: queries.exchange_facts(session, exchange_id))
        return _page(request, caller, "exchange.html", status=200 if data.rows else 404, data=data.to_dict(),
                     exchange_id=exchange_id, facts=facts, json_url=f"{request.scope.get('root_path', '')}/api/exchanges/{exchange_id}")

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, caller: auth.Caller = viewer) -> Response:
        where = _register_filter(request)
        page_no = _int(request.query_params.get("page")) or 1
        data = _read(lambda session: queries.register(session, where, page_no))
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        return _page(request, caller, "audit.html", data=data.to_dict(), where=where, query=query,
                     csv_url=f"{request.scope.get('root_path', '')}/api/audit.csv?{request.url.query}")

    @app.get("/runbook", response_class=HTMLResponse)
    def runbook_page(request: Request, caller: auth.Caller = viewer) -> Response:
        body = runbook.html()
        return _page(request, caller, "runbook.html", status=200 if body else 404, body=body)

    # ------------------------------------------------------------------ JSON

    @app.get("/api/exchanges")
    def exchanges(request: Request, caller: auth.Caller = viewer) -> Response:
        data = _with_airflow(request, lambda session, api: queries.overview(session, api=api))
        return _json({**data.to_dict(), "airflow_base": _airflow_base(request)})

    @app.get("/api/history")
    def history(request: Request, caller: auth.Caller = viewer) -> Response:
        f = _history_filter(request)
        return _json(_with_airflow(request, lambda session, api: queries.history(session, f, api=api)).to_dict())

    @app.get("/api/exchanges/{exchange_id}")
    def exchange(request: Request, exchange_id: int, caller: auth.Caller = viewer) -> Response:
        data = _with_airflow(request, lambda session, api: queries.history(session, queries.HistoryFilter(exchange_id=exchange_id), api=api))
        if not data.rows:
            return _json({"detail": f"no exchange {exchange_id}"}, 404)
        facts = _read(lambda session: queries.exchange_facts(session, exchange_id))
        return _json({**data.rows[0], "airflow": data.airflow, "facts": facts})

    @app.get("/api/audit")
    def register(request: Request, caller: auth.Caller = viewer) -> Response:
        where = _register_filter(request)
        page_no = _int(request.query_params.get("page")) or 1
        return _json(_read(lambda session: queries.register(session, where, page_no)).to_dict())

    @app.get("/api/audit.csv")
    def register_csv(request: Request, caller: auth.Caller = viewer) -> Response:
        where = _register_filter(request)

        def rows() -> Any:
            out = io.StringIO()
            _read(lambda session: audit.write_csv(audit.export_rows(session, where=where), out))
            yield out.getvalue()

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="verwerkingsregister_{stamp}.csv"'})

    @app.get("/api/whoami")
    def whoami(caller: auth.Caller = viewer) -> Response:
        return _json({"user": caller.name, "level": caller.level.label})

    # ------------------------------------------------------------------ actions

    def _retry(request: Request, caller: auth.Caller, **target: Any) -> Response:
        _check_csrf(request)
        token = auth.token_from_request(request) or ""
        with request.app.state.airflow(request, token) as api:
            try:
                outcome = retry.retry(api, operator=caller.name, via="the Exchanges view", **target)
            except (InputError, Refused):
                raise
            except Exception as err:
                log.error("Exchanges view: retry failed (%s)", type(err).__name__)
                raise DatabaseDown() from None
        return _json({"ok": outcome.ok, "detail": outcome.message, "failed": outcome.failed, "cleared": outcome.cleared},
                     outcome.status)

    @app.post("/api/exchanges/{exchange_id}/retry")
    def retry_exchange(request: Request, exchange_id: int, caller: auth.Caller = operator) -> Response:
        return _retry(request, caller, exchange_id=exchange_id)

    @app.post("/api/runs/retry")
    def retry_run(request: Request, dag_id: str, run_id: str, caller: auth.Caller = operator) -> Response:
        return _retry(request, caller, dag_id=dag_id, run_id=run_id)

    return app
