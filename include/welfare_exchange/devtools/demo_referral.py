"""The referral round trip as a demo (``python -m welfare_exchange.devtools.demo --referral``, ``make demo-referral``).

A fresh workspace, a generated entitlement store and referral candidates, a real SFTP server on
loopback, a signed referral agreement with the Sociaal Huis of a large city (Oostende when free), and Airflow private to the
demo: the referral DAG sends the encrypted list, the Sociaal Huis (played here) returns an
encrypted feedback file, the feedback DAG records it and writes the evaluation report to the
agency's own outbox. Figures only; no personal data is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import time
from pathlib import Path

#: Large cities no test or other demo uses: dev SFTP accounts are system-wide, and an account
#: another process also holds is removed (and re-made with other ids) when that process ends.
CITIES = ("35013", "34022", "71016", "46021", "13040", "23088", "42006")


def _free_city() -> str:
    import pwd

    from welfare_exchange.devtools.sftp_server import ACCOUNT_PREFIX, sweep_stale_accounts

    sweep_stale_accounts()  # accounts left by ended processes do not count as held
    for nis in CITIES:
        try:
            pwd.getpwnam(f"{ACCOUNT_PREFIX}{nis}")
        except KeyError:
            return nis
    return CITIES[0]
OUTCOMES = ("gecontacteerd", "ondersteuning gestart", "geweigerd", "onbereikbaar", "verhuisd")


def _feedback_file(codes: list[str], password: str, on: dt.date) -> bytes:
    """What a Sociaal Huis sends back: the template, filled in and saved with the agreed password."""
    import xlsxwriter

    from welfare_exchange.intake import encrypt_agile

    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = book.add_worksheet("Terugkoppeling")
    for col, heading in enumerate(("Doorverwijzingsnummer", "Resultaat", "Datum")):
        sheet.write_string(0, col, heading)
    for row, code in enumerate(codes, start=1):
        sheet.write_string(row, 0, code)
        sheet.write_string(row, 1, OUTCOMES[row % 3 if row % 7 else 3])
        sheet.write_string(row, 2, on.isoformat())
    book.close()
    return encrypt_agile(buffer.getvalue(), password)


def run(args: argparse.Namespace) -> int:
    import json
    import secrets
    import shutil

    import sqlalchemy as sa

    from welfare_exchange.devtools import demo
    from welfare_exchange.devtools.airflow_server import AirflowServer
    from welfare_exchange.devtools.sftp_server import SftpServer, chroot_capable_root

    say = demo.Progress()
    NIS = _free_city()  # noqa: N806 - the demo's municipality, as in demo.py
    REFERRAL_KEY_CONNECTION = f"key_{NIS}_referral"  # noqa: N806
    workspace = Path(args.workspace).resolve()
    airflow = sftp = None
    try:
        if workspace.exists():
            shutil.rmtree(workspace)
        workspace.mkdir(parents=True)
        os.chmod(workspace, 0o755)
        os.environ.update(demo._settings_env(workspace))
        from welfare_exchange import db
        from welfare_exchange.db.engine import dispose_engines

        dispose_engines()
        db.upgrade()
        demo._cli("entitlements", "generate", "--children", str(args.children), "--seed", str(args.seed), "--no-progress")
        say(f"workspace {demo._rel(workspace)}: database migrated, entitlement store of {args.children:,} children")
        candidates_csv = workspace / "referral_candidates.csv"
        # Six birth years rather than two: enough families in one city for a readable demo.
        born_from = (dt.date.today() - dt.timedelta(days=6 * 365)).isoformat()
        demo._cli("referral", "generate", "--out", str(candidates_csv), "--seed", str(args.seed), "--nis", NIS,
                  "--born-from", born_from)
        say(f"referral candidates (Kind en Gezin): {demo._cli('referral', 'import', str(candidates_csv))}")
        candidates_csv.unlink()  # personal data: not left on disk

        sftp = SftpServer(chroot_capable_root(workspace / "sftp"))
        sftp.start()
        account = sftp.add_municipality(NIS)
        password = secrets.token_urlsafe(24)
        conn_name, conn_value = sftp.env_var(NIS)
        today = dt.date.today()
        protocol_id = int(demo._cli(
            "protocol", "create", "--nis", NIS, "--kind", "referral", "--channel", "sftp",
            "--key-connection", REFERRAL_KEY_CONNECTION, "--agreement-ref", f"SO/{today.year}/demo",
            "--agreement-date", (today - dt.timedelta(days=40)).isoformat(), "--secrecy-conditions", "art. 7",
            "--college-decision-ref", f"BCSD/{today.year}/demo",
            "--college-decision-date", (today - dt.timedelta(days=30)).isoformat(),
            "--dpo-advice-date", (today - dt.timedelta(days=14)).isoformat(),
        ).split()[-1])
        for action in ("submit", "advise", "sign"):
            demo._cli("protocol", action, str(protocol_id))
        from welfare_exchange.orchestration.dag_factory import read_snapshot
        from welfare_exchange.orchestration.referral_dag import feedback_dag_id, referral_dag_id

        entry = next(p for p in read_snapshot() if int(p["id"]) == protocol_id)
        list_dag, feedback_dag = referral_dag_id(entry), feedback_dag_id(entry)
        say(f"referral agreement: protocol {protocol_id} signed with the Sociaal Huis of {entry['municipality']} → DAGs {list_dag}, {feedback_dag}")
        say(f"dry run: {demo._cli('referral', 'select', '--protocol', str(protocol_id))}")

        env = {**demo._settings_env(workspace), conn_name: conn_value,
               f"AIRFLOW_CONN_{REFERRAL_KEY_CONNECTION.upper()}": json.dumps({"conn_type": "generic", "password": password}),
               "AIRFLOW__CORE__DAGS_FOLDER": str(demo.REPO_ROOT / "dags")}
        airflow = AirflowServer(home=workspace / "airflow", env=env)
        airflow.start(timeout=180)
        say(f"Airflow up at {airflow.url}")
        for dag_id in (list_dag, feedback_dag):
            airflow.wait_for_dag(dag_id, timeout=180)
            airflow.unpause(dag_id)

        t = time.monotonic()
        run_id = airflow.trigger(list_dag)
        state = airflow.wait_for_run(list_dag, run_id, timeout=args.timeout, on_task_state=demo._on_task_state(say))
        if state != "success":
            raise demo.DemoError(f"the referral run ended {state}")
        lists = [p for p in account.local_dir("outbox").iterdir() if p.name.startswith("doorverwijzingen_")]
        say(f"referral list delivered over SFTP in {time.monotonic() - t:.1f} s: {len(lists)} encrypted file(s) in the outbox")

        from welfare_exchange.db import session_scope
        from welfare_exchange.db.models import Referral, ReferralFeedback

        with session_scope() as session:
            codes = list(session.scalars(sa.select(Referral.code).where(Referral.protocol_id == protocol_id).order_by(Referral.id)))
            selected = len(codes)
            sent = session.scalar(sa.select(sa.func.count()).select_from(Referral).where(Referral.sent_at.is_not(None)))
        if not sent:
            raise demo.DemoError("no family was referred: the generated candidates gave none with consent in kansarmoede")
        sftp.drop_request(NIS, _feedback_file(codes, password, today), "terugkoppeling_demo.xlsx")  # as the Sociaal Huis would
        say(f"the Sociaal Huis returns encrypted feedback on {len(codes)} referrals (inbox/terugkoppeling_demo.xlsx)")
        run_id = airflow.trigger(feedback_dag)
        state = airflow.wait_for_run(feedback_dag, run_id, timeout=args.timeout, on_task_state=demo._on_task_state(say))
        if state != "success":
            raise demo.DemoError(f"the feedback run ended {state}")
        with session_scope() as session:
            received = session.scalar(sa.select(sa.func.count()).select_from(ReferralFeedback))
        from welfare_exchange.settings import get_settings

        reports = sorted((get_settings().agency_outbox / "referral").glob("*.txt"))
        if not reports:
            raise demo.DemoError("no evaluation report in the agency's outbox")
        say(f"evaluation report in the agency's outbox: {demo._rel(reports[-1])}")
        for line in reports[-1].read_text().splitlines()[6:13]:
            say(f"  {line}")
        demo._scan_task_logs(airflow, say)
        say(f"referral demo finished: families selected {selected}, sent {sent}, feedback received {received}")
        return 0
    except KeyboardInterrupt:
        say("interrupted: stopping everything the demo started")
        return 130
    except Exception as err:  # noqa: BLE001 - the demo reports any failure in one line and exits 1
        say(f"DEMO FAILED: {demo.safe_error(err)}")
        return demo.DEMO_FAILED
    finally:
        if airflow is not None:
            airflow.stop()
        if sftp is not None:
            sftp.stop()


def main(argv: list[str] | None = None) -> int:
    import signal

    from welfare_exchange.devtools import demo

    parser = argparse.ArgumentParser(prog="python -m welfare_exchange.devtools.demo --referral",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(demo.REPO_ROOT / "var" / "demo-referral"), help="recreated on every run")
    parser.add_argument("--children", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--request-size", type=int, default=3000, help="unused here (the Method 1 demo's)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each run")
    args = parser.parse_args(argv)
    demo.quiet_libraries()
    signal.signal(signal.SIGTERM, demo._sigterm_as_interrupt)
    return run(args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
