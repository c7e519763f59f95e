#!/usr/bin/env bash
# One-shot initialisation of a welfare-exchange deployment (the airflow-init service).
#
# Idempotent: run it on every `docker-compose up`; it only applies what is missing.
#   1. Airflow metadata database: `airflow db migrate`.
#   2. Project database (registry, ledger, audit trail): `welfare-exchange db upgrade`.
#   3. API login: the admin account of the configured auth manager.
# It prints no secret: passwords and keys are only read from the environment.
set -euo pipefail
umask 0077

fail() { echo "airflow-init: $*" >&2; exit 1; }

# Refuse to start with a missing secret or with the placeholder of .env.example.
for name in AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY \
            AIRFLOW_ADMIN_PASSWORD WELFARE_EXCHANGE_AUDIT_HMAC_KEY WELFARE_EXCHANGE_STAGING_KEY \
            WELFARE_EXCHANGE_AUDIT_SIGNING_KEY \
            WELFARE_EXCHANGE_DB_URL AIRFLOW__DATABASE__SQL_ALCHEMY_CONN; do
  value="${!name:-}"
  [ -n "$value" ] || fail "$name is not set: copy .env.example to .env and fill it in"
  case "$value" in
    *change-me*) fail "$name still holds the placeholder of .env.example: generate a real value (see .env.example)";;
  esac
done

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

echo "airflow-init: migrating the welfare-exchange project database"
welfare-exchange db upgrade

auth_manager="${AIRFLOW__CORE__AUTH_MANAGER:-airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager}"
case "$auth_manager" in
  *SimpleAuthManager)
    # SimpleAuthManager reads the users' passwords from a JSON file; the api-server would
    # otherwise generate one and print it to its log. Write it from the env file instead,
    # readable by the service user only, on the volume the api-server mounts.
    passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?must point into the airflow-auth volume}"
    mkdir -p "$(dirname "$passwords_file")"
    python - "$passwords_file" <<'PY'
import json, os, sys, tempfile

path = sys.argv[1]
username = os.environ.get("AIRFLOW_ADMIN_USERNAME") or "admin"
passwords = {username: os.environ["AIRFLOW_ADMIN_PASSWORD"]}
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".passwords-")
with os.fdopen(fd, "w") as handle:
    json.dump(passwords, handle)
    handle.write("\n")
os.chmod(tmp, 0o600)
os.replace(tmp, path)
print(f"airflow-init: API login '{username}' (admin) configured")
PY
    ;;
  *)
    echo "airflow-init: auth manager $auth_manager manages its own users: none created here"
    ;;
esac

echo "airflow-init: done ($(airflow version))"
