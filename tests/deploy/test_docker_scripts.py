"""The scripts the containers run, exercised for real on this machine (no Docker engine).

* the SFTP server's sshd_config renders and Debian's sshd accepts it (`sshd -t`);
* the mail server's dovecot.conf renders and dovecot accepts it; the SMTP sink delivers into
  Maildirs that dovecot then serves over IMAP;
* the PostgreSQL init script creates both databases and roles on the real server, and the
  airflow-init script migrates both databases as those (non-superuser) roles and creates the
  first admin of the FAB auth manager;
* every secret of .env.example left a placeholder is refused, by name and never by value, by
  each container that uses it (postgres, redis, airflow-init, mail), with the environment
  docker-compose gives that container; redis then keeps its password off its command line.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import secrets
import shutil
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

import yaml

from tests.deploy.helpers import DOCKER_DIR, ENV_EXAMPLE, ROOT, clean_env, parse_env_file, run_compose

SSHD = "/usr/sbin/sshd"
DOVECOT = "/usr/sbin/dovecot"
DOVECONF = "/usr/bin/doveconf"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _need(binary: str, package: str) -> None:
    if not os.path.exists(binary):
        pytest.fail(f"{binary} is missing: install the Debian package {package} (`make system-deps`)")


def test_every_script_parses_and_is_executable():
    scripts = sorted(DOCKER_DIR.rglob("*.sh"))
    assert len(scripts) >= 7
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.relative_to(ROOT)}: {result.stderr}"
        assert os.stat(script).st_mode & stat.S_IXUSR, f"{script.relative_to(ROOT)} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
    for module in sorted(DOCKER_DIR.rglob("*.py")):
        compile(module.read_text(), str(module), "exec")


# ---------------------------------------------------------------- SFTP server
def _render_sshd(tmp_path: Path, municipalities: str) -> subprocess.CompletedProcess:
    host_key = tmp_path / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    env = clean_env(
        SFTP_MUNICIPALITIES=municipalities,
        SFTP_HOST_KEY=str(host_key),
        SFTP_PORT=str(_free_port()),
        SFTP_LISTEN_ADDRESS="127.0.0.1",
        SFTP_PID_FILE=str(tmp_path / "sshd.pid"),
    )
    return subprocess.run(
        [str(DOCKER_DIR / "sftp" / "render-sshd-config.sh"), str(DOCKER_DIR / "sftp" / "sshd_config.template"), str(tmp_path / "sshd_config")],
        env=env, capture_output=True, text=True,
    )


def test_sftp_config_renders_and_sshd_accepts_it(tmp_path):
    _need(SSHD, "openssh-server")
    result = _render_sshd(tmp_path, "44021, 11002")
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "sshd_config").read_text()
    check = subprocess.run([SSHD, "-t", "-f", str(tmp_path / "sshd_config")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert not re.search(r"@[A-Z_]+@", config)  # every placeholder filled
    assert "AllowUsers wx_44021 wx_11002" in config
    for nis in ("44021", "11002"):
        block = config.split(f"Match User wx_{nis}\n", 1)[1].split("Match", 1)[0]
        assert f"ChrootDirectory /srv/sftp/municipalities/{nis}" in block
        assert "ForceCommand internal-sftp" in block
    for line in ("PasswordAuthentication no", "PermitRootLogin no", "AllowTcpForwarding no", "PermitTTY no"):
        assert line in config


def test_sftp_config_without_municipalities_lets_nobody_in(tmp_path):
    _need(SSHD, "openssh-server")
    assert _render_sshd(tmp_path, "").returncode == 0
    assert "DenyUsers *" in (tmp_path / "sshd_config").read_text()
    assert subprocess.run([SSHD, "-t", "-f", str(tmp_path / "sshd_config")]).returncode == 0


def test_sftp_agency_config_admits_only_the_agency_accounts_and_both_allow_the_crowd(tmp_path):
    _need(SSHD, "openssh-server")
    assert _render_sshd(tmp_path, "44021 11002").returncode == 0
    env = clean_env(SFTP_MUNICIPALITIES="44021 11002", SFTP_HOST_KEY=str(tmp_path / "ssh_host_ed25519_key"),
                    SFTP_AGENCY_PORT=str(_free_port()), SFTP_AGENCY_PID_FILE=str(tmp_path / "agency.pid"))
    agency = tmp_path / "sshd_config.agency"
    subprocess.run([str(DOCKER_DIR / "sftp" / "render-sshd-config.sh"), str(DOCKER_DIR / "sftp" / "sshd_config.template"),
                    str(agency), "agency"], env=env, check=True)
    assert subprocess.run([SSHD, "-t", "-f", str(agency)]).returncode == 0
    text = agency.read_text()
    assert "AllowUsers wxa_44021 wxa_11002" in text and "Match User wx_" not in text
    municipalities = (tmp_path / "sshd_config").read_text()
    assert "-P mkdir,rmdir,symlink,hardlink" in municipalities and "-P " not in text
    for config in (text, municipalities):
        assert "MaxStartups 300:30:600" in config and "MaxSessions 10" in config and "-u 0027" in config


def test_the_sftp_image_runs_the_municipalities_sshd_under_landlock():
    dockerfile = (DOCKER_DIR / "sftp" / "Dockerfile").read_text()
    assert "python3" in dockerfile and "landlock_exec.py" in dockerfile and "EXPOSE 22 2022" in dockerfile
    entrypoint = (DOCKER_DIR / "sftp" / "entrypoint.sh").read_text()
    assert 'landlock_exec.py" --best-effort "${create_in[@]}" -- /usr/sbin/sshd' in entrypoint
    assert '-m 2770 "$chroot_base/$nis/$dir"' in entrypoint and '-m 0700 "$chroot_base/$nis/$dir"' in entrypoint


def test_the_rendered_sftp_configs_enforce_the_rights_per_directory(tmp_path, sftp_municipality):
    """Both rendered configs, run by Debian's sshd on loopback over a municipality's folders
    (made by the dev server the same way as the entrypoint makes them): the municipality
    uploads in inbox/ and deletes in outbox/ but cannot upload there; the agency delivers."""
    import paramiko

    server, account = sftp_municipality.server, sftp_municipality.account
    ports = {"municipalities": _free_port(), "agency": _free_port()}
    procs = []
    try:
        for role in ports:
            (tmp_path / role).mkdir()
            os.chmod(tmp_path / role, 0o755)
            env = clean_env(SFTP_MUNICIPALITIES=account.nis, SFTP_HOST_KEY=str(server.host_key_path),
                            SFTP_LISTEN_ADDRESS="127.0.0.1", SFTP_PORT=str(ports["municipalities"]),
                            SFTP_AGENCY_PORT=str(ports["agency"]), SFTP_PID_FILE=str(tmp_path / role / "sshd.pid"),
                            SFTP_AGENCY_PID_FILE=str(tmp_path / role / "sshd.pid"),
                            SFTP_AUTHORIZED_KEYS_DIR=str(server.root / "authorized_keys"),
                            SFTP_CHROOT_BASE=str(account.chroot.parent))
            config = tmp_path / f"sshd_config.{role}"
            subprocess.run([str(DOCKER_DIR / "sftp" / "render-sshd-config.sh"),
                            str(DOCKER_DIR / "sftp" / "sshd_config.template"), str(config), role], env=env, check=True)
            launcher = [sys.executable, str(DOCKER_DIR / "sftp" / "landlock_exec.py"), "--create-in",
                        str(tmp_path / role), "--create-in", str(account.local_dir("inbox")), "--"]
            procs.append(subprocess.Popen([*(launcher if role == "municipalities" else []), SSHD, "-D", "-e", "-f",
                                           str(config)], stderr=subprocess.DEVNULL, start_new_session=True))
            deadline = time.monotonic() + 15
            while not (tmp_path / role / "sshd.pid").exists():
                assert time.monotonic() < deadline and procs[-1].poll() is None, f"sshd ({role}) did not start"
                time.sleep(0.05)

        def session(user, key, port):
            return server.ssh_client(user, key, port=port).open_sftp()

        municipality = session(account.username, account.municipality_key, ports["municipalities"])
        agency = session(account.agency_username, account.agency_key, ports["agency"])
        with municipality.open("inbox/aanvraag.xlsx", "wb") as fh:
            fh.write(b"request")
        with agency.open("outbox/groeipakket_resultaat.xlsx", "wb") as fh:
            fh.write(b"result")
        assert agency.open("inbox/aanvraag.xlsx").read() == b"request"
        with pytest.raises(PermissionError):
            municipality.open("outbox/nep.xlsx", "wb")
        with pytest.raises(PermissionError):
            municipality.listdir("received")
        municipality.remove("outbox/groeipakket_resultaat.xlsx")
        with pytest.raises(paramiko.AuthenticationException):
            server.ssh_client(account.username, account.municipality_key, port=ports["agency"])
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            proc.wait(timeout=10)


@pytest.mark.parametrize("bad", ["4402", "44021;rm", "../44021", "4402x"])
def test_sftp_config_refuses_a_bad_nis_code(tmp_path, bad):
    result = _render_sshd(tmp_path, bad)
    assert result.returncode == 2
    assert "5 digits" in result.stderr
    assert not (tmp_path / "sshd_config").exists()


# ---------------------------------------------------------------- mail server
@contextlib.contextmanager
def _mail_root():
    # dovecot's mail processes (user nobody) must traverse the root: not a 0700 pytest folder.
    root = Path(tempfile.mkdtemp(prefix="wx-deploy-mail-"))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _render_dovecot(root: Path, port: int, uid: int, gid: int) -> Path:
    for sub in ("run", "state", "log"):
        (root / sub).mkdir(exist_ok=True)
    env = clean_env(
        MAIL_IMAP_PORT=str(port), MAIL_LISTEN="127.0.0.1", MAIL_RUN_DIR=str(root / "run"),
        MAIL_STATE_DIR=str(root / "state"), MAIL_LOG_PATH=str(root / "log" / "dovecot.log"),
        MAIL_USERS_FILE=str(root / "users"), MAIL_UID=str(uid), MAIL_GID=str(gid), MAIL_INTERNAL_USER="root",
    )
    config = root / "dovecot.conf"
    subprocess.run(
        [str(DOCKER_DIR / "mail" / "render-dovecot-conf.sh"), str(DOCKER_DIR / "mail" / "dovecot.conf.template"), str(config)],
        env=env, check=True,
    )
    return config


def test_mail_config_renders_and_dovecot_accepts_it():
    _need(DOVECONF, "dovecot-core")
    with _mail_root() as root:
        config = _render_dovecot(root, _free_port(), 65534, 65534)
        result = subprocess.run([DOVECONF, "-c", str(config), "-n"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert not re.search(r"@[A-Z_]+@", config.read_text())
        assert "ssl = no" in result.stdout and "protocols = imap" in result.stdout


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_smtp_sink_delivers_into_mailboxes_that_dovecot_serves():
    _need(DOVECOT, "dovecot-imapd")
    nobody = pwd.getpwnam("nobody")
    with _mail_root() as root:
        mail = root / "mail"
        mail.mkdir(mode=0o711)
        passwords = {user: secrets.token_urlsafe(12) for user in ("agency", "sink")}
        (root / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}:{nobody.pw_uid}:{nobody.pw_gid}::{mail / u}::\n" for u, p in passwords.items())
        )
        os.chmod(root / "users", 0o600)
        smtp_port, imap_port = _free_port(), _free_port()
        config = _render_dovecot(root, imap_port, nobody.pw_uid, nobody.pw_gid)
        sink_env = clean_env(
            MAIL_ROOT=str(mail), MAIL_SMTP_HOST="127.0.0.1", MAIL_SMTP_PORT=str(smtp_port),
            MAIL_LOCAL_ADDRESSES="groeipakket@agency.test=agency", MAIL_CATCHALL_USER="sink",
            MAIL_UID=str(nobody.pw_uid), MAIL_GID=str(nobody.pw_gid),
        )
        sink_log = open(root / "sink.log", "wb")
        sink = subprocess.Popen([sys.executable, str(DOCKER_DIR / "mail" / "smtp_sink.py")], env=sink_env,
                                stdout=sink_log, stderr=subprocess.STDOUT)
        dovecot = subprocess.Popen([DOVECOT, "-c", str(config), "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_port(smtp_port, sink)
            _wait_port(imap_port, dovecot)
            request = EmailMessage()
            request["From"], request["To"], request["Subject"] = "dpo@gent.test", "GroeiPakket@agency.test", "aanvraag"
            request.set_content("request " + uuid.uuid4().hex)
            result = EmailMessage()
            result["From"], result["To"], result["Subject"] = "groeipakket@agency.test", "dpo@gent.test", "resultaat"
            result.set_content("result " + uuid.uuid4().hex)
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
                smtp.send_message(request)
                smtp.send_message(result)

            def fetch(user: str) -> list[bytes]:
                imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=10)
                try:
                    imap.login(user, passwords[user])
                    imap.select("INBOX")
                    _, ids = imap.search(None, "ALL")
                    return [imap.fetch(i, "(RFC822)")[1][0][1] for i in ids[0].split()]
                finally:
                    imap.logout()

            agency, sink_box = fetch("agency"), fetch("sink")
            assert len(agency) == 1 and request.get_content().strip().encode() in agency[0]
            assert len(sink_box) == 1 and result.get_content().strip().encode() in sink_box[0]
            with pytest.raises(imaplib.IMAP4.error):
                imaplib.IMAP4("127.0.0.1", imap_port, timeout=10).login("agency", "wrong-password")
            # Delivered files belong to the mail user and are private.
            delivered = [p for d in ("new", "cur") for p in (mail / "agency" / "Maildir" / d).iterdir()]
            assert len(delivered) == 1
            for path in [mail / "agency", mail / "agency" / "Maildir", *delivered]:
                assert path.stat().st_uid == nobody.pw_uid
                assert not path.stat().st_mode & 0o077
            healthy = subprocess.run(
                [sys.executable, str(DOCKER_DIR / "mail" / "healthcheck.py")],
                env=clean_env(MAIL_SMTP_PORT=str(smtp_port), MAIL_IMAP_PORT=str(imap_port)),
            )
            assert healthy.returncode == 0
        finally:
            for proc in (sink, dovecot):
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            sink_log.close()
        # The sink's log names neither addresses nor contents.
        log = (root / "sink.log").read_text()
        assert "accepted a message" in log
        assert "gent.test" not in log and "agency.test" not in log
        # Once stopped, the healthcheck reports it.
        down = subprocess.run(
            [sys.executable, str(DOCKER_DIR / "mail" / "healthcheck.py")],
            env=clean_env(MAIL_SMTP_PORT=str(smtp_port), MAIL_IMAP_PORT=str(imap_port)), capture_output=True,
        )
        assert down.returncode != 0


# ---------------------------------------------------------------- PostgreSQL + airflow-init
def _pg_admin():
    from tests.fixtures.db import PG_ADMIN_URL

    return sa.engine.make_url(PG_ADMIN_URL)


def _psql_env(admin) -> dict[str, str]:
    env = clean_env(PGHOST=admin.host or "127.0.0.1", PGPORT=str(admin.port or 5432),
                    POSTGRES_USER=admin.username or "postgres", POSTGRES_DB=admin.database or "postgres")
    if admin.password:
        env["PGPASSWORD"] = admin.password
    return env


@pytest.fixture
def deployment_databases():
    """Run docker/postgres/initdb.sh against the real server with fresh names; drop afterwards."""
    admin = _pg_admin()
    suffix = uuid.uuid4().hex[:8]
    names = {
        "AIRFLOW_DB_NAME": f"wx_deploy_af_{suffix}", "AIRFLOW_DB_USER": f"wx_deploy_af_{suffix}",
        "AIRFLOW_DB_PASSWORD": secrets.token_urlsafe(16),
        "WELFARE_EXCHANGE_DB_NAME": f"wx_deploy_pj_{suffix}", "WELFARE_EXCHANGE_DB_USER": f"wx_deploy_pj_{suffix}",
        "WELFARE_EXCHANGE_DB_PASSWORD": secrets.token_urlsafe(16),
    }
    env = _psql_env(admin) | names | {"WELFARE_EXCHANGE_INIT_SQL": str(DOCKER_DIR / "postgres" / "create-databases.sql")}
    try:
        for _ in range(2):  # idempotent: a second run changes nothing and does not fail
            result = subprocess.run([str(DOCKER_DIR / "postgres" / "initdb.sh")], env=env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
        yield names
    finally:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for key in ("AIRFLOW_DB_NAME", "WELFARE_EXCHANGE_DB_NAME"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{names[key]}" WITH (FORCE)'))
            for key in ("AIRFLOW_DB_USER", "WELFARE_EXCHANGE_DB_USER"):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{names[key]}"'))
        engine.dispose()


def _url(names, kind: str, driver: str = "postgresql+psycopg2") -> str:
    admin = _pg_admin()
    prefix = "AIRFLOW_DB" if kind == "airflow" else "WELFARE_EXCHANGE_DB"
    return sa.engine.URL.create(
        driver, username=names[f"{prefix}_USER"], password=names[f"{prefix}_PASSWORD"],
        host=admin.host or "127.0.0.1", port=admin.port or 5432, database=names[f"{prefix}_NAME"],
    ).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_initdb_creates_two_databases_with_separate_owners(deployment_databases):
    names = deployment_databases
    admin = sa.create_engine(_pg_admin())
    with admin.connect() as conn:
        rows = dict(conn.execute(sa.text(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname IN (:a, :p)"
        ), {"a": names["AIRFLOW_DB_NAME"], "p": names["WELFARE_EXCHANGE_DB_NAME"]}).all())
        roles = dict(conn.execute(sa.text(
            "SELECT rolname, rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname IN (:a, :p)"
        ), {"a": names["AIRFLOW_DB_USER"], "p": names["WELFARE_EXCHANGE_DB_USER"]}).all())
    admin.dispose()
    assert rows == {names["AIRFLOW_DB_NAME"]: names["AIRFLOW_DB_USER"],
                    names["WELFARE_EXCHANGE_DB_NAME"]: names["WELFARE_EXCHANGE_DB_USER"]}
    assert roles == {names["AIRFLOW_DB_USER"]: False, names["WELFARE_EXCHANGE_DB_USER"]: False}
    # The Airflow role cannot open the project database (and the other way round).
    for user_kind, db_kind in (("airflow", "project"), ("project", "airflow")):
        url = sa.engine.make_url(_url(names, user_kind)).set(database=sa.engine.make_url(_url(names, db_kind)).database)
        engine = sa.create_engine(url)
        with pytest.raises(sa.exc.OperationalError, match="permission denied|CONNECT privilege"):
            engine.connect().close()
        engine.dispose()


def _with_scripts_on_path(*folders: Path) -> str:
    """PATH as the containers have it: the shared secrets check (and stand-ins) found by name."""
    return ":".join([*(str(f) for f in folders), str(DOCKER_DIR), os.environ.get("PATH", "/usr/bin:/bin")])


def _init_env(names, tmp_path: Path, **overrides: str) -> dict[str, str]:
    venv_bin = ROOT / ".venv" / "bin"
    env = clean_env(
        PATH=_with_scripts_on_path(venv_bin),
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW__CELERY__BROKER_URL="redis://:unused@127.0.0.1:1/0",
        AIRFLOW_ADMIN_USERNAME="admin",
        AIRFLOW_ADMIN_PASSWORD=secrets.token_urlsafe(16),
        AIRFLOW_DB_PASSWORD=names["AIRFLOW_DB_PASSWORD"] if names else secrets.token_urlsafe(16),
        WELFARE_EXCHANGE_DB_PASSWORD=names["WELFARE_EXCHANGE_DB_PASSWORD"] if names else secrets.token_urlsafe(16),
        REDIS_PASSWORD=secrets.token_urlsafe(16),
        WELFARE_EXCHANGE_HOME=str(tmp_path / "home"),
        WELFARE_EXCHANGE_STAGING_DIR=str(tmp_path / "staging"),
        WELFARE_EXCHANGE_AUDIT_HMAC_KEY=secrets.token_hex(32),
        WELFARE_EXCHANGE_STAGING_KEY=Fernet.generate_key().decode(),
        WELFARE_EXCHANGE_AUDIT_SIGNING_KEY=secrets.token_hex(32),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=_url(names, "airflow") if names else "postgresql+psycopg2://x:y@127.0.0.1:1/x",
        WELFARE_EXCHANGE_DB_URL=_url(names, "project") if names else "postgresql+psycopg2://x:y@127.0.0.1:1/x",
    )
    env.update(overrides)
    return env


def test_airflow_init_refuses_placeholders_and_missing_secrets(tmp_path):
    script = str(DOCKER_DIR / "airflow" / "init.sh")
    env = _init_env(None, tmp_path, AIRFLOW_ADMIN_PASSWORD="change-me", REDIS_PASSWORD="airflow")
    result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "AIRFLOW_ADMIN_PASSWORD still holds the placeholder" in result.stderr
    assert "REDIS_PASSWORD is a well-known default" in result.stderr  # every bad one, not only the first
    assert "refusing to start" in result.stderr and "migrating" not in result.stdout
    env = _init_env(None, tmp_path)
    del env["WELFARE_EXCHANGE_STAGING_KEY"]
    result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "WELFARE_EXCHANGE_STAGING_KEY is not set" in result.stderr
    assert env["AIRFLOW_ADMIN_PASSWORD"] not in result.stdout + result.stderr
    env = _init_env(None, tmp_path, AIRFLOW__CORE__FERNET_KEY="short-key")
    result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "AIRFLOW__CORE__FERNET_KEY (AIRFLOW_FERNET_KEY in .env) is shorter than 16 characters" in result.stderr
    assert "short-key" not in result.stdout + result.stderr


# ---------------------------------------------------------------- placeholders, per container
#: The script each container that holds secrets starts with.
CONTAINER_SCRIPTS = {
    "postgres": DOCKER_DIR / "postgres" / "entrypoint.sh",
    "redis": DOCKER_DIR / "redis" / "entrypoint.sh",
    "airflow-init": DOCKER_DIR / "airflow" / "init.sh",
    "mail": DOCKER_DIR / "mail" / "entrypoint.sh",
}
ENV_EXAMPLE_SECRETS = sorted(k for k in parse_env_file(ENV_EXAMPLE) if re.search(r"PASSWORD|SECRET|FERNET|HMAC|STAGING_KEY", k))


def _services(tmp_path: Path, **values: str) -> dict[str, dict]:
    """The services as docker-compose resolves them, from .env.example with every secret
    generated except ``values``."""
    env = {k: (secrets.token_urlsafe(24) if k in ENV_EXAMPLE_SECRETS else v) for k, v in parse_env_file(ENV_EXAMPLE).items()}
    env.update(values)
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = run_compose("--profile", "dev", "--profile", "cli", "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


@pytest.mark.parametrize("secret", ENV_EXAMPLE_SECRETS)
def test_a_placeholder_secret_stops_every_container_that_holds_it(secret, tmp_path):
    marker = secrets.token_hex(8)
    placeholder = f"change-me-{marker}"
    services = _services(tmp_path, **{secret: placeholder})
    environments = {name: {k: str(v) for k, v in (svc.get("environment") or {}).items()} for name, svc in services.items()}
    holders = {name for name, env in environments.items() if any(marker in value for value in env.values())}
    checked = holders & set(CONTAINER_SCRIPTS)
    assert checked, f"{secret}: no container that starts with a secrets check holds it ({sorted(holders)})"
    # The other holders (the Airflow components) only start once airflow-init, which checks it, succeeded.
    for name in holders - checked:
        assert "airflow-init" in checked, (secret, name)
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in sorted(checked):
        result = subprocess.run([str(CONTAINER_SCRIPTS[name])], env=clean_env(PATH=_with_scripts_on_path(), **environments[name]),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, f"{name} started with {secret} a placeholder: {result.stderr[-500:]}"
        assert secret in result.stderr and "still holds the placeholder" in result.stderr, (name, result.stderr)
        assert marker not in result.stdout + result.stderr, f"{name} printed the value of {secret}"


def _stand_in_image_entrypoint(folder: Path) -> Path:
    # The postgres and redis images' own docker-entrypoint.sh drops to the service user and
    # runs the command; on the host, running the command is all there is to do.
    folder.mkdir(exist_ok=True)
    stand_in = folder / "docker-entrypoint.sh"
    stand_in.write_text('#!/bin/sh\necho "image entrypoint: $*" >&2\nexec "$@"\n')
    stand_in.chmod(0o755)
    return folder


def test_postgres_with_real_passwords_goes_on_to_the_image_entrypoint(tmp_path):
    good = {name: secrets.token_urlsafe(24) for name in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "WELFARE_EXCHANGE_DB_PASSWORD")}
    env = clean_env(PATH=_with_scripts_on_path(_stand_in_image_entrypoint(tmp_path / "bin")), **good)
    result = subprocess.run([str(CONTAINER_SCRIPTS["postgres"]), "true"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "image entrypoint: true" in result.stderr
    assert not [v for v in good.values() if v in result.stdout + result.stderr]


def test_redis_requires_its_password_which_is_on_no_command_line(tmp_path):
    _need("/usr/bin/redis-server", "redis-server")
    password, port = secrets.token_urlsafe(24), _free_port()
    env = clean_env(PATH=_with_scripts_on_path(_stand_in_image_entrypoint(tmp_path / "bin")), REDIS_PASSWORD=password,
                    REDIS_PORT=str(port), REDIS_BIND="127.0.0.1")
    log = open(tmp_path / "redis.log", "wb")
    server = subprocess.Popen([str(CONTAINER_SCRIPTS["redis"])], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, server)
        anonymous = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr
        authed = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=10,
                                env=clean_env(REDISCLI_AUTH=password))
        assert authed.stdout.strip() == "PONG"
        # The script exec'd into redis-server: its command line is the server's, without the password.
        assert password.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert b"redis-server" in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert password not in (tmp_path / "redis.log").read_text()


@pytest.mark.postgres
def test_airflow_init_migrates_both_databases_as_their_roles(deployment_databases, tmp_path):
    names = deployment_databases
    env = _init_env(names, tmp_path)
    script = str(DOCKER_DIR / "airflow" / "init.sh")
    for _ in range(2):  # idempotent: every `docker-compose up` runs it again
        result = subprocess.run([script], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    for secret in ("AIRFLOW_ADMIN_PASSWORD", "WELFARE_EXCHANGE_AUDIT_HMAC_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[secret] not in output, f"init printed {secret}"
    assert "API login 'admin' (role Admin) ready" in output and "already exists" in output  # the second run
    # The first admin of the FAB auth manager, with the password of .env (checked as FAB does).
    from werkzeug.security import check_password_hash

    engine = sa.create_engine(_url(names, "airflow"))
    with engine.connect() as conn:
        [(hashed, role)] = conn.execute(sa.text(
            "SELECT u.password, r.name FROM ab_user u JOIN ab_user_role ur ON ur.user_id = u.id"
            " JOIN ab_role r ON r.id = ur.role_id WHERE u.username = 'admin'"
        )).all()
        roles = {name for (name,) in conn.execute(sa.text("SELECT name FROM ab_role"))}
    engine.dispose()
    assert role == "Admin" and check_password_hash(hashed, env["AIRFLOW_ADMIN_PASSWORD"])
    assert {"Viewer", "User", "Op", "Admin"} <= roles
    for kind, table in (("airflow", "dag_run"), ("project", "alembic_version")):
        engine = sa.create_engine(_url(names, kind))
        with engine.connect() as conn:
            assert sa.inspect(conn).has_table(table), f"{kind} database lacks {table}"
        engine.dispose()
