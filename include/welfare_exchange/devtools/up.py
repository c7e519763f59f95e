"""``make up``: the demo's set-up, then Airflow left running on http://127.0.0.1:8080 for a person.

Same preparation as ``make demo`` (:func:`welfare_exchange.devtools.demo.prepare`) in its own workspace
``var/up/`` (recreated on every start): a small entitlement store, the SFTP server on loopback
with Gent's account, a signed Method 1 protocol and an encrypted request waiting in Gent's
inbox. Airflow then runs in the foreground with the checkout's own home (``var/airflow``, so
the UI's history survives restarts) on ``$AIRFLOW__API__PORT`` (8080), until Ctrl-C. The
exchange DAG is unpaused but not triggered: trigger it in the UI and follow it there.

Once up, it prints where to log in (URL, user ``admin``, and the file holding the generated
password with the command that shows it; the password itself never goes to the terminal or a
log) and the command that points the ``welfare-exchange`` CLI at this workspace's data.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from welfare_exchange.devtools import demo
from welfare_exchange.devtools.airflow_server import AirflowServer, default_home
from welfare_exchange.settings import REPO_ROOT


def where_to_log_in(airflow: AirflowServer, workspace: Path, dag_id: str) -> list[str]:
    """The lines that tell a newcomer how to log in and how to point the CLI at this workspace
    (commands to copy, runnable from any folder)."""
    return [
        f"log in at {airflow.url}/  user: admin",
        f"  password (generated, not printed): cat {shlex.quote(str(airflow.password_file))}",
        f"  the Exchanges view: {airflow.url}/plugin/welfare-exchanges;  the DAG: {airflow.url}/dags/{dag_id}",
        "the CLI on this data:",
        f"  cd {shlex.quote(str(REPO_ROOT))} && source scripts/env.sh && "
        f"WELFARE_EXCHANGE_HOME={shlex.quote(demo._rel(workspace))} welfare-exchange protocol list",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m welfare_exchange.devtools.up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(REPO_ROOT / "var" / "up"), help="recreated on every start")
    parser.add_argument("--airflow-home", default=None, help="AIRFLOW_HOME (default: $AIRFLOW_HOME or var/airflow)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW__API__PORT") or 8080))
    parser.add_argument("--children", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-request", action="store_true", help="do not drop a request in Gent's inbox")
    args = parser.parse_args(argv)
    demo.quiet_libraries()
    signal.signal(signal.SIGTERM, demo._sigterm_as_interrupt)
    # Ctrl-C stops everything, also when started from a script's background job (a shell
    # without job control starts those with SIGINT ignored, and Python keeps it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    say = demo.Progress()
    prepared = None
    airflow = None
    try:
        prepared = demo.prepare(Path(args.workspace), children=args.children, seed=args.seed,
                                drop_request=not args.no_request, progress=say)
        home = Path(args.airflow_home) if args.airflow_home else default_home()
        airflow = AirflowServer(home=home, port=args.port, env=prepared.airflow_env)
        airflow.start(timeout=180)
        airflow.wait_for_dag(prepared.dag_id, timeout=180)
        airflow.unpause(prepared.dag_id)
        say("Airflow is up")
        for line in where_to_log_in(airflow, prepared.workspace, prepared.dag_id):
            print(line, flush=True)
        say(f"component logs: {demo._rel(airflow.process_log_dir)}; task logs: {demo._rel(airflow.task_log_dir())}")
        say("trigger the DAG in the UI (▶); Gent's request is waiting in its inbox. Ctrl-C stops everything.")
        while airflow.running:
            time.sleep(1)
        say("an Airflow component exited:\n" + airflow.log_tails())
        return 1
    except KeyboardInterrupt:
        say("stopping Airflow and the SFTP server")
        return 0
    except Exception as err:  # noqa: BLE001 - one clear line, then exit 1
        say(f"UP FAILED: {demo.safe_error(err)}")
        return 1
    finally:
        if airflow is not None:
            airflow.stop()
        if prepared is not None:
            prepared.sftp.stop()


if __name__ == "__main__":
    sys.exit(main())
