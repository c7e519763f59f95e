"""docker-compose.yaml, Dockerfile and .env.example: validated with the real docker-compose.

No Docker engine is needed: ``docker-compose config`` parses, validates and interpolates the
file exactly as ``docker-compose up`` would. Missing docker-compose is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse

import pytest

from tests.deploy.helpers import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ROOT,
    parse_env_file,
    run_compose,
)

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
    "sftp",
    "mail",
}
#: Services that run a command and exit: no healthcheck, never restarted.
ONE_SHOT_SERVICES = {"airflow-init", "airflow-cli"}
AIRFLOW_SERVICES = {s for s in REQUIRED_SERVICES if s.startswith("airflow-")} | {"airflow-cli"}
VAR_REF = re.compile(r"^\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\}$")


# ---------------------------------------------------------------- docker-compose validates
def test_compose_config_validates_with_env_example():
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("profiles", [(), ("dev",), ("dev", "cli")])
def test_compose_config_validates_per_profile(profiles):
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(*args, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_render_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr  # the ${VAR:?set VAR in .env} message names the fix


def test_required_services_present(compose_config):
    assert REQUIRED_SERVICES <= set(compose_config["services"])


def test_dev_servers_are_in_the_dev_profile_only(compose_raw):
    services = compose_raw["services"]
    assert services["sftp"]["profiles"] == ["dev"]
    assert services["mail"]["profiles"] == ["dev"]
    for name in REQUIRED_SERVICES - {"sftp", "mail"}:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker-compose up`"
        # A production service may not wait for a development one.
        assert not set(services[name].get("depends_on", {})) & {"sftp", "mail"}, name


# ---------------------------------------------------------------- health and start-up order
def test_every_long_running_service_has_a_healthcheck(compose_config):
    for name, service in compose_config["services"].items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"one-shot {name} must not be restarted"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert service.get("restart") == "unless-stopped", f"{name} must come back after a crash"


def test_start_up_waits_for_healthy_dependencies(compose_config):
    services = compose_config["services"]
    init = services["airflow-init"]["depends_on"]
    assert init["postgres"]["condition"] == "service_healthy"
    assert init["redis"]["condition"] == "service_healthy"
    for name in AIRFLOW_SERVICES - ONE_SHOT_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in ("airflow-worker", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-api-server"]["condition"] == "service_healthy"


def test_healthchecks_use_real_endpoints_and_job_types(compose_config):
    services = compose_config["services"]
    command = lambda name: " ".join(services[name]["healthcheck"]["test"][1:])  # noqa: E731
    assert "/api/v2/monitor/health" in command("airflow-api-server")
    assert ":8974/health" in command("airflow-scheduler")
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert "--job-type DagProcessorJob" in command("airflow-dag-processor")
    assert "--job-type TriggererJob" in command("airflow-triggerer")
    assert "inspect ping" in command("airflow-worker")
    assert "pg_isready" in command("postgres") or "psql" in command("postgres")
    assert "redis-cli ping" in command("redis")


def test_worker_celery_app_of_the_healthcheck_is_importable(compose_config):
    """The worker healthcheck pings ``celery --app <module>.app``: that module must import
    with the pinned lock, or neither the worker nor its healthcheck can start."""
    cmd = " ".join(compose_config["services"]["airflow-worker"]["healthcheck"]["test"][1:])
    module, attr = re.search(r"--app ([\w.]+)\.(\w+)", cmd).groups()
    code = f"import importlib; m = importlib.import_module({module!r}); assert hasattr(m, {attr!r})"
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{module} does not import with constraints.txt:\n{result.stderr[-1500:]}"


def test_worker_supervisors_watch_the_task_exit(compose_config):
    """The worker's Celery app, loaded with the compose file's settings as ``celery worker`` loads
    it, installs the exit watch before the pool forks (``orchestration.task_exit``); so the image
    keeps Airflow's 5 s supervisor wake-up. Without the compose setting (the control) it does not."""
    worker_env = compose_config["services"]["airflow-worker"]["environment"]
    assert "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL" not in worker_env
    code = ("import airflow.providers.celery.executors.celery_executor_utils\n"
            "from airflow.sdk.execution_time.supervisor import ActivitySubprocess\n"
            "from welfare_exchange.orchestration.task_exit import MARK\n"
            "print('watched' if getattr(ActivitySubprocess, MARK, False) else 'not watched')")
    seen = {}
    for label, option in (("compose", worker_env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]), ("airflow", None)):
        env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"}
        if option:
            env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = option
        result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-1500:]
        seen[label] = result.stdout.strip().splitlines()[-1]
    assert seen == {"compose": "watched", "airflow": "not watched"}


# ---------------------------------------------------------------- scaling and exposure
def test_worker_is_scalable(compose_config):
    worker = compose_config["services"]["airflow-worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker  # every replica must be its own celery@<host>
    assert not worker.get("ports"), "a published port would clash with --scale"


def _published(port) -> tuple[str | None, str | None]:
    """(host_ip, published) of a short ("IP:HOST:CONTAINER/proto") or long port entry."""
    if isinstance(port, dict):
        return port.get("host_ip"), port.get("published")
    parts = str(port).split("/")[0].split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return None, parts[0]
    return None, None  # container port only: published on a random port of every interface


def test_no_port_is_published_beyond_loopback(compose_config):
    seen = 0
    for name, service in compose_config["services"].items():
        for port in service.get("ports", []):
            host_ip, published = _published(port)
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"
            assert published, f"{name}: {port!r} publishes a random port"
            seen += 1
    assert seen >= 4  # api-server, sftp, smtp, imap
    for name in ("postgres", "redis"):
        assert not compose_config["services"][name].get("ports"), f"{name} must stay on the internal network"


def test_api_server_is_published_and_execution_api_points_at_it(compose_config):
    services = compose_config["services"]
    assert _published(services["airflow-api-server"]["ports"][0]) == ("127.0.0.1", "8080")
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"


# ---------------------------------------------------------------- Airflow configuration
def test_airflow_services_share_one_configuration(compose_config):
    services = compose_config["services"]
    reference = services["airflow-scheduler"]["environment"]
    assert reference["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert reference["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert reference["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert reference["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert reference["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert reference["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
    assert reference["WELFARE_EXCHANGE_DB_URL"].startswith("postgresql+psycopg2://")
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        for key, value in reference.items():
            assert env.get(key) == value, f"{name}: {key} differs from the scheduler's"
    # The project DB and the Airflow DB are two databases of the one postgres server.
    airflow_db = urllib.parse.urlsplit(reference["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    project_db = urllib.parse.urlsplit(reference["WELFARE_EXCHANGE_DB_URL"])
    assert airflow_db.hostname == project_db.hostname == "postgres"
    assert airflow_db.path != project_db.path
    assert airflow_db.username != project_db.username


def test_airflow_settings_exist_in_airflow_3_3(compose_config):
    """Every AIRFLOW__SECTION__KEY names a real option of the installed Airflow (incl. the
    Celery provider): a typo would be silently ignored by Airflow."""
    names = sorted(
        {key for s in compose_config["services"].values() for key in s.get("environment", {}) if key.startswith("AIRFLOW__")}
    )
    code = (
        "import json, sys\n"
        "from airflow.configuration import conf\n"
        "d = conf.configuration_description\n"
        "names = json.loads(sys.argv[1])\n"
        "print(json.dumps([n for n in names if n.split('__')[2].lower() not in "
        "d.get(n.split('__')[1].lower(), {}).get('options', {})]))\n"
    )
    import json

    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-W", "ignore", "-c", code, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "AIRFLOW_HOME": "/tmp/wx-deploy-airflow-home"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    unknown = json.loads(result.stdout.strip().splitlines()[-1])
    assert not unknown, f"not Airflow 3.3 options: {unknown}"
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in names


def test_volumes_for_logs_staging_and_state(compose_config):
    services = compose_config["services"]
    for name in AIRFLOW_SERVICES:
        targets = {str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in services[name]["volumes"]}
        assert "/opt/airflow/logs" in targets, name
        assert "/opt/welfare-exchange/staging" in targets, name
        assert "/opt/welfare-exchange/home" in targets, name
    env = services["airflow-worker"]["environment"]
    assert env["WELFARE_EXCHANGE_STAGING_DIR"] == "/opt/welfare-exchange/staging"
    # Workers may run on several hosts: staging in the project database every worker reaches.
    assert env["WELFARE_EXCHANGE_STAGING_BACKEND"] == "postgres"
    # No service keeps a password file: FAB's users live in the metadata DB.
    for name, service in services.items():
        targets = [v if isinstance(v, str) else v["target"] for v in service.get("volumes", [])]
        assert not any("/opt/airflow/auth" in t for t in targets), name


def test_login_is_the_fab_auth_manager(compose_config):
    services = compose_config["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
        assert not [key for key in env if "SIMPLE_AUTH_MANAGER" in key], name
    code = "from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager"
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the FAB auth manager does not import with constraints.txt:\n{result.stderr[-1500:]}"


# ---------------------------------------------------------------- secrets
def _walk_strings(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def test_no_secret_values_in_the_compose_file(compose_raw):
    checked = 0
    for name, service in compose_raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if re.search(r"PASSWORD|SECRET|FERNET|HMAC|STAGING_KEY|SIGNING_KEY", key) and not key.endswith("_FILE"):
                assert VAR_REF.match(value), f"{name}.{key} must be a ${{VAR}} reference, not a value"
                assert ":-" not in value or value.endswith(":-}"), f"{name}.{key}: no default secret"
                checked += 1
            # A URL's password must be a ${VAR} too (references replaced by a marker, then parsed).
            marked = re.sub(r"\$\{[^}]*\}", "VAR", value)
            url = urllib.parse.urlsplit(marked) if "://" in marked else None
            if url and url.password is not None:
                assert url.password == "VAR", f"{name}.{key}: the password in the URL must be a ${{VAR}} reference"
                checked += 1
    assert checked >= 12
    # Nothing key-shaped anywhere in the file (long mixed-case/digit tokens outside ${...}).
    text = re.sub(r"\$\{[^}]*\}", "", COMPOSE_FILE.read_text())
    for token in re.findall(r"[A-Za-z0-9+/=_-]{32,}", text):
        assert not (re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"[0-9]", token)), (
            "key-like value in docker-compose.yaml"
        )
    assert "BEGIN" not in text and "PRIVATE KEY" not in text


def test_env_example_has_placeholders_only():
    values = parse_env_file(ENV_EXAMPLE)
    secrets = {k: v for k, v in values.items() if re.search(r"PASSWORD|SECRET|FERNET|HMAC|STAGING_KEY|SIGNING_KEY", k)}
    assert len(secrets) >= 10
    for key, value in secrets.items():
        assert value == "change-me", f".env.example: {key} must be the placeholder change-me"


def test_env_example_defines_every_required_variable():
    text = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    defined = set(parse_env_file(ENV_EXAMPLE))
    assert required <= defined, f"required but missing from .env.example: {sorted(required - defined)}"
    assert referenced <= defined, f"not documented in .env.example: {sorted(referenced - defined)}"


def test_env_file_is_git_ignored_and_example_is_not():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT)
    assert example.returncode == 1, ".env.example must be committable"


def test_bind_mounts_and_build_contexts_exist(compose_config):
    for name, service in compose_config["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if not source.startswith("/"):
                continue  # a named volume
            if source.startswith(str(ROOT / "var")):
                continue  # runtime folder (git-ignored), created on first start
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# ---------------------------------------------------------------- Dockerfile
def _instructions(path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_from_the_pinned_lock():
    steps = _instructions(DOCKERFILE)
    froms = [rest for op, rest in steps if op == "FROM"]
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for op, rest in steps if op == "ARG" and "=" in rest)
    images = {args.get(m.group(1), m.group(0)) if (m := re.match(r"\$\{(\w+)\}", f.split()[0])) else f.split()[0] for f in froms}
    assert images == {"python:3.11-slim-bookworm"}
    runs = " ".join(rest for op, rest in steps if op == "RUN")
    assert re.search(r"pip install -r \S*requirements\.txt -c \S*constraints\.txt", runs), "deps from the lock"
    assert re.search(r"pip install --no-deps -e \S+", runs), "the project, the way `make install` does"
    copies = " ".join(rest for op, rest in steps if op == "COPY")
    for needed in ("requirements.txt", "constraints.txt", "pyproject.toml", "include/", "dags/", "plugins/"):
        assert needed in copies, f"Dockerfile does not copy {needed}"
    envs = " ".join(rest for op, rest in steps if op == "ENV")
    assert "AIRFLOW_HOME=/opt/airflow" in envs
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerfile_sources_are_in_the_build_context():
    """Every COPY source exists and is not excluded by .dockerignore; secrets and state are."""
    ignore = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]
    for op, rest in _instructions(DOCKERFILE):
        if op != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            top = source.rstrip("/").split("/")[0]
            assert top not in ignore and source.rstrip("/") not in ignore, f"{source} is in .dockerignore"
    for secret in (".env", ".venv", "var", ".git", "tests"):
        assert secret in ignore, f".dockerignore must exclude {secret}"


def test_dev_server_images_are_debian_bookworm():
    for name in ("sftp", "mail"):
        steps = _instructions(ROOT / "docker" / name / "Dockerfile")
        assert [rest for op, rest in steps if op == "FROM"] == ["debian:bookworm-slim"], name
    sftp = (ROOT / "docker" / "sftp" / "Dockerfile").read_text()
    assert "openssh-server" in sftp and "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*" in sftp
    mail = (ROOT / "docker" / "mail" / "Dockerfile").read_text()
    assert "dovecot-imapd" in mail and "python3-aiosmtpd" in mail


def test_image_paths_used_by_compose_are_those_the_dockerfile_creates(compose_config):
    dockerfile = DOCKERFILE.read_text()
    assert "COPY docker/airflow/ /opt/welfare-exchange/docker/" in dockerfile
    assert (ROOT / "docker" / "airflow" / "entrypoint.sh").is_file()
    assert '"/opt/welfare-exchange/docker/entrypoint.sh"' in dockerfile
    init = compose_config["services"]["airflow-init"]["command"]
    assert init == ["/opt/welfare-exchange/docker/init.sh"]
    assert (ROOT / "docker" / "airflow" / "init.sh").is_file()
    # Volume mount points exist in the image with the service user as owner.
    for folder in ("/opt/airflow/logs", "/opt/welfare-exchange/home", "/opt/welfare-exchange/staging"):
        assert folder in dockerfile
    # The secrets check every container runs: in the image, and mounted where it is not.
    assert "COPY docker/require-secrets.sh /usr/local/bin/" in dockerfile
    for name in ("postgres", "redis"):
        service = compose_config["services"][name]
        mounts = {v.split(":")[1] if isinstance(v, str) else v["target"] for v in service["volumes"]}
        assert "/usr/local/bin/require-secrets.sh" in mounts, name
        assert service["entrypoint"] == [f"/opt/welfare-exchange/{name}/entrypoint.sh"]
        assert f"/opt/welfare-exchange/{name}/entrypoint.sh" in mounts
    assert "COPY require-secrets.sh /usr/local/bin/" in (ROOT / "docker" / "mail" / "Dockerfile").read_text()
