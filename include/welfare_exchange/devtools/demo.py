"""``make demo``: one Method 1 exchange end to end, through a real scheduler, in one command.

What it does, on the embedded defaults (SQLite, LocalExecutor, OpenSSH on loopback):

1. a fresh workspace ``var/demo/`` (project DB, Airflow home, SFTP root, staging), recreated on
   every run so the demo can be run again and again without touching ``var/``'s own data;
2. a small synthetic entitlement store (``welfare-exchange entitlements generate``);
3. the SFTP server on 127.0.0.1 with Gent's (44021) chrooted account; the file password of
   the protocol's key connection is generated now, kept in memory, handed to Airflow as
   ``AIRFLOW_CONN_KEY_44021`` and never printed or written;
4. a Method 1 SFTP protocol for Gent, created, submitted, advised and signed through the CLI
   (which writes the registry snapshot the DAG file reads);
5. an encrypted request dropped in Gent's inbox as the municipality would (``.part`` + rename);
6. Airflow started (:class:`~welfare_exchange.devtools.airflow_server.AirflowServer`), the
   exchange DAG unpaused and triggered through the REST API, followed to the end;
7. the result downloaded from Gent's outbox, decrypted with the password and summarised —
   counts, file name, SHA-256, the validation report; the audit trail anchored (signed) and
   verified (``welfare-exchange audit anchor``, ``audit verify``);
8. everything it started stopped again, also on Ctrl-C or an error; exit 1 on failure.

Privacy: the only place an INSZ number exists outside the project DB is the encrypted
request file. The demo prints counts, never numbers.

:func:`prepare` (steps 1–5) is shared with ``make up`` (:mod:`welfare_exchange.devtools.up`).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from welfare_exchange.settings import REPO_ROOT, get_settings

NIS = "44021"  # Gent
KEY_CONNECTION = f"key_{NIS}"
REQUEST_NAME = f"aanvraag_{NIS}_demo.xlsx"
DEMO_FAILED = 1

# Wrong rows a real request contains: a bad check digit, text, a number far too short. None
# of them is personal data.
INVALID_ROWS = ["12345678901", "onbekend", "999"]


class DemoError(RuntimeError):
    """A demo step failed; the message says which and what to look at."""


class Progress:
    """Concise progress lines: ``[  12.3 s] message``."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {message}", flush=True)


@dataclasses.dataclass
class Prepared:
    """What :func:`prepare` set up: the running SFTP server and everything Airflow needs."""

    workspace: Path
    sftp: Any  # welfare_exchange.devtools.sftp_server.SftpServer (running)
    protocol_id: int
    dag_id: str
    password: str = dataclasses.field(repr=False)
    airflow_env: dict[str, str] = dataclasses.field(repr=False)
    request_rows: int = 0
    request_valid_rows: int = 0


def _cli(*args: str, capture: bool = True) -> str:
    """Run ``welfare-exchange ARGS`` in a subprocess (the same way an operator would)."""
    exe = Path(sys.executable).with_name("welfare-exchange")
    cmd = [str(exe) if exe.exists() else "welfare-exchange", *args]
    done = subprocess.run(cmd, env=os.environ.copy(), stdin=subprocess.DEVNULL, text=True,
                          capture_output=capture, check=False)
    if done.returncode != 0:
        # CLI errors are ours and carry no personal data; show them as they are.
        raise DemoError(f"`welfare-exchange {' '.join(args[:2])}` failed (exit {done.returncode}): "
                        f"{(done.stderr or '').strip()[-800:]} {(done.stdout or '').strip()[-400:]}")
    return (done.stdout or "").strip()


def _settings_env(workspace: Path) -> dict[str, str]:
    """The project settings of the workspace, for this process, the CLI and Airflow alike."""
    env = {
        "WELFARE_EXCHANGE_HOME": str(workspace),
        "WELFARE_EXCHANGE_DB_URL": f"sqlite:///{workspace / 'welfare_exchange.db'}",
        "WELFARE_EXCHANGE_REGISTRY_SNAPSHOT": str(workspace / "registry_snapshot.json"),
        "WELFARE_EXCHANGE_STAGING_DIR": str(workspace / "staging"),
        # A demo should not wait a minute between looks, nor ten seconds for a file to settle.
        "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "2",
        "WELFARE_EXCHANGE_SETTLE_SECONDS": "1",
        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "3",
        "WELFARE_EXCHANGE_TASK_RETRIES": "2",
        "WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": "300",
        "WELFARE_EXCHANGE_GATE_TIMEOUT_SECONDS": "300",
    }
    # `make` loads these from var/secrets.env; run by hand without it, the demo's throw-away
    # database gets throw-away keys (generated, never written).
    current = get_settings()
    for name, value, make in (
        ("WELFARE_EXCHANGE_AUDIT_HMAC_KEY", current.audit_hmac_key, lambda: secrets.token_hex(32)),
        ("WELFARE_EXCHANGE_STAGING_KEY", current.staging_key, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()),
        ("WELFARE_EXCHANGE_AUDIT_SIGNING_KEY", current.audit_signing_key, lambda: secrets.token_hex(32)),
    ):
        env[name] = value or make()
    return env


def _request_workbook(numbers: list[str]) -> tuple[bytes, int]:
    """The municipality's request: one column "INSZ" as text cells, plus a few invalid rows."""
    import xlsxwriter

    rows = list(numbers) + INVALID_ROWS + numbers[:2]  # the last two: duplicates
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = workbook.add_worksheet("Kinderen")
    text = workbook.add_format({"num_format": "@"})
    sheet.write_string(0, 0, "INSZ")
    for r, value in enumerate(rows, start=1):
        if value:
            sheet.write_string(r, 0, value, text)
    workbook.close()
    return buffer.getvalue(), len(rows)


def prepare(workspace: Path, *, children: int = 20000, seed: int = 7, request_size: int = 3000,
            drop_request: bool = True, progress: Progress | None = None) -> Prepared:
    """Steps 1–5: a fresh workspace, store, SFTP server, signed protocol and (optionally) a request.

    The SFTP server is left running: the caller stops ``prepared.sftp``. On error everything
    started here is stopped before the exception propagates.
    """
    say = progress or Progress()
    workspace = workspace.resolve()
    # 1. A fresh workspace each run: the demo's data never mixes with an earlier run's.
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    os.chmod(workspace, 0o755)  # sshd chroots below it: not group/world-writable
    os.environ.update(_settings_env(workspace))

    from welfare_exchange import db
    from welfare_exchange.db.engine import dispose_engines

    dispose_engines()  # settings changed: no engine on another URL may linger
    db.upgrade()
    say(f"workspace {_rel(workspace)}: project database migrated ({_rel(workspace / 'welfare_exchange.db')})")

    # 2. The entitlement store.
    t = time.monotonic()
    _cli("entitlements", "generate", "--children", str(children), "--seed", str(seed), "--no-progress")
    say(f"entitlement store generated: {children:,} children, seed {seed} ({time.monotonic() - t:.1f} s)")

    # 3. SFTP on loopback, Gent's confined account, the key connection's password.
    from welfare_exchange.devtools.sftp_server import SftpServer, chroot_capable_root

    sftp = SftpServer(chroot_capable_root(workspace / "sftp"))
    try:
        sftp.start()
        sftp.add_municipality(NIS)
        password = secrets.token_urlsafe(24)
        conn_name, conn_value = sftp.env_var(NIS)
        airflow_env = {
            **_settings_env(workspace),
            conn_name: conn_value,
            f"AIRFLOW_CONN_{KEY_CONNECTION.upper()}": json.dumps({"conn_type": "generic", "password": password}),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        }
        say(f"SFTP server on 127.0.0.1:{sftp.port}: account for Gent ({NIS}), host key pinned in {conn_name}")

        # 4. The protocol, through its whole life cycle up to signed.
        today = dt.date.today()
        protocol_id = int(_cli(
            "protocol", "create", "--nis", NIS, "--kind", "method1", "--channel", "sftp",
            "--key-connection", KEY_CONNECTION,
            "--college-decision-ref", f"CBS/{today.year}/demo",
            "--college-decision-date", (today - dt.timedelta(days=30)).isoformat(),
            "--dpo-advice-date", (today - dt.timedelta(days=14)).isoformat(),
        ).split()[-1])
        for action in ("submit", "advise", "sign"):
            _cli("protocol", action, str(protocol_id))
        from welfare_exchange.orchestration.dag_factory import method1_dag_id, read_snapshot

        entry = next((p for p in read_snapshot() if int(p["id"]) == protocol_id), None)
        if entry is None:
            raise DemoError(f"protocol {protocol_id} is not in the registry snapshot {get_settings().registry_snapshot}")
        dag_id = method1_dag_id(entry)
        say(f"protocol {protocol_id} created, submitted, advised and signed → DAG {dag_id}")

        prepared = Prepared(workspace, sftp, protocol_id, dag_id, password, airflow_env)
        if drop_request:
            drop_demo_request(prepared, request_size=request_size, seed=seed, progress=say)
        return prepared
    except BaseException:
        sftp.stop()
        raise


def drop_demo_request(prepared: Prepared, *, request_size: int = 3000, seed: int = 7, progress: Progress | None = None) -> None:
    """Step 5: the encrypted request in Gent's inbox, uploaded as ``.part`` and renamed."""
    from welfare_exchange.db import session_scope
    from welfare_exchange.entitlements import sample_children
    from welfare_exchange.intake import encrypt_agile

    with session_scope() as session:
        numbers = sample_children(session, NIS, request_size, seed)
    if not numbers:
        raise DemoError(f"the generated store has no children domiciled in {NIS}")
    # Gent holds ~4 % of the store's children: with the default 20,000 that is ~800, not thousands.
    plain, rows = _request_workbook(numbers)
    encrypted = encrypt_agile(plain, prepared.password)
    del plain, numbers  # the plaintext lives in memory only, and not longer than needed
    prepared.sftp.drop_request(NIS, encrypted, REQUEST_NAME)
    prepared.request_rows = rows
    prepared.request_valid_rows = rows - len(INVALID_ROWS) - 2
    (progress or print)(
        f"request {REQUEST_NAME} dropped in Gent's inbox: {rows:,} rows ({len(INVALID_ROWS)} invalid, 2 duplicates), "
        f"Agile-encrypted, {len(encrypted):,} bytes"
    )


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _decrypt(data: bytes, password: str) -> bytes:
    import msoffcrypto

    office = msoffcrypto.OfficeFile(io.BytesIO(data))
    office.load_key(password=password, verify_password=True)
    out = io.BytesIO()
    office.decrypt(out)
    return out.getvalue()


def summarise_result(prepared: Prepared, say: Progress) -> None:
    """Step 7: download, decrypt and summarise what Gent received — counts only."""
    from python_calamine import CalamineWorkbook

    outbox = prepared.sftp.read_outbox(NIS)
    results = {name: data for name, data in outbox.items() if name.endswith(".xlsx")}
    if len(results) != 1:
        raise DemoError(f"expected one result file in Gent's outbox, found {sorted(outbox)}")
    (name, data), = results.items()
    say(f"result downloaded from Gent's outbox: {name}, {len(data):,} bytes, SHA-256 {hashlib.sha256(data).hexdigest()}")
    workbook = CalamineWorkbook.from_filelike(io.BytesIO(_decrypt(data, prepared.password)))
    sheets = {sheet: workbook.get_sheet_by_name(sheet).to_python() for sheet in workbook.sheet_names}
    info = {str(row[0]): str(row[1]) for row in sheets.get("Info", []) if len(row) >= 2}
    result_rows = max(len(sheets.get("Resultaat", [])) - 1, 0)
    say(f"decrypted with the protocol's key; sheets: {', '.join(sheets)}")
    in_info = info.get("Rijen in aanvraag", "?")
    agree = "the result's Info sheet agrees" if in_info == str(prepared.request_rows) else f"the result's Info sheet says {in_info}"
    say(f"  rows requested: {prepared.request_rows:,} ({agree})")
    say(f"  valid INSZ numbers: {info.get('Geldige INSZ-nummers', '?')}")
    say(f"  children with a sociale toeslag since the reference date: {info.get('Kinderen met recht', '?')}")
    say(f"  result rows (child, beneficiary, period): {result_rows:,}")
    say("  validation report:")
    for row in sheets.get("Validatierapport", [])[1:]:
        reason, count, where = (list(row) + ["", "", ""])[:3]
        where = str(where)
        where = where if len(where) <= 60 else where[:57] + "..."
        say(f"    {reason}: {_int(count)} (rows {where})")
    others = sorted(set(outbox) - set(results))
    if others:
        say(f"  other files in the outbox: {', '.join(others)}")


def _int(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def safe_error(err: BaseException) -> str:
    """``Type: message`` — or the type alone when the message holds anything INSZ-shaped."""
    from welfare_exchange.insz import find_insz_shaped

    text = f"{type(err).__name__}: {err}"
    return f"{type(err).__name__}: [message withheld: it contained personal data]" if find_insz_shaped(text) else text


def _on_task_state(say: Progress):
    # Only states worth a line: the end of a task, a wait, a retry.
    worth = {"success", "failed", "skipped", "upstream_failed", "up_for_retry", "deferred", "up_for_reschedule"}

    def report(task_id: str, state: str | None) -> None:
        if state in worth:
            say(f"  task {task_id}: {state}")

    return report


def run_demo(args: argparse.Namespace) -> int:
    from welfare_exchange.devtools.airflow_server import AirflowServer

    say = Progress()
    workspace = Path(args.workspace)
    prepared = None
    airflow = None
    try:
        prepared = prepare(workspace, children=args.children, seed=args.seed, request_size=args.request_size, progress=say)
        # 6. Airflow, private to the demo (its own home and metadata DB, a free port).
        t = time.monotonic()
        airflow = AirflowServer(home=workspace / "airflow", env=prepared.airflow_env)
        airflow.start(timeout=180)
        say(f"Airflow up at {airflow.url} ({time.monotonic() - t:.1f} s; component logs in {_rel(airflow.process_log_dir)})")
        airflow.wait_for_dag(prepared.dag_id, timeout=180)
        airflow.unpause(prepared.dag_id)
        t = time.monotonic()
        run_id = airflow.trigger(prepared.dag_id)
        say(f"triggered {prepared.dag_id} through the REST API: run {run_id}")
        state = airflow.wait_for_run(prepared.dag_id, run_id, timeout=args.timeout, on_task_state=_on_task_state(say))
        say(f"run {state} in {time.monotonic() - t:.1f} s (trigger to end, through the scheduler)")
        if state != "success":
            raise DemoError(f"the exchange run ended {state}: see the task logs under {_rel(airflow.task_log_dir())} "
                            f"or the Airflow UI")
        # 7. What the municipality received.
        summarise_result(prepared, say)
        cli = str(Path(sys.executable).with_name("welfare-exchange"))
        anchor = subprocess.run([cli, "audit", "anchor"], env=os.environ.copy(), capture_output=True, text=True, check=False)
        say(f"welfare-exchange audit anchor: {(anchor.stdout or anchor.stderr).strip()}")
        verify = subprocess.run([cli, "audit", "verify"], env=os.environ.copy(), capture_output=True, text=True, check=False)
        say(f"welfare-exchange audit verify: {(verify.stdout or verify.stderr).strip()}")
        if verify.returncode != 0:
            raise DemoError("the audit chain did not verify")
        _scan_task_logs(airflow, say)
        say("demo finished: the exchange ran end to end")
        return 0
    except KeyboardInterrupt:
        say("interrupted: stopping everything the demo started")
        return 130
    except Exception as err:  # noqa: BLE001 - the demo reports any failure in one line and exits 1
        say(f"DEMO FAILED: {safe_error(err)}")
        return DEMO_FAILED
    finally:
        # 8. Stop what we started, in reverse order.
        if airflow is not None:
            airflow.stop()
        if prepared is not None:
            prepared.sftp.stop()


def _scan_task_logs(airflow, say: Progress) -> None:
    """The task logs must not contain an INSZ: say how many files were checked."""
    from welfare_exchange.insz import find_insz_shaped

    files = [p for p in airflow.task_log_dir().rglob("*") if p.is_file()]
    leaks = [p for p in files if find_insz_shaped(p.read_text(errors="replace"))]
    if leaks:
        raise DemoError(f"INSZ-shaped numbers found in {len(leaks)} task log file(s), e.g. {_rel(leaks[0])}")
    say(f"task logs scanned: {len(files)} files, no INSZ")


def quiet_libraries() -> None:
    """Keep the terminal to our progress lines: paramiko logs every SFTP login at INFO."""
    import logging

    logging.getLogger("paramiko").setLevel(logging.WARNING)


def _sigterm_as_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m welfare_exchange.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(REPO_ROOT / "var" / "demo"), help="recreated on every run")
    parser.add_argument("--children", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--request-size", type=int, default=3000, help="children sampled from Gent (fewer if it has fewer)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    parser.add_argument("--referral", action="store_true",
                        help="run the referral round trip instead (list to the Sociaal Huis, feedback, evaluation)")
    args = parser.parse_args(argv)
    quiet_libraries()
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if args.referral:
        # Its own module (it reuses this one's helpers, so this one does not import it back).
        rest = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--referral"]
        os.execv(sys.executable, [sys.executable, "-m", "welfare_exchange.devtools.demo_referral", *rest])
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
