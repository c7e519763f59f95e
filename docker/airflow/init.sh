#!/usr/bin/env bash
# One-shot initialisation of a welfare-exchange deployment (the airflow-init service).
#
# Idempotent: run it on every `docker-compose up`; it only applies what is missing.
#   1. Airflow metadata database: `airflow db migrate`.
#   2. Project database (registry, ledger, audit trail): `welfare-exchange db upgrade`.
#   3. API login: the first admin of the FAB auth manager (`airflow users create`).
# It refuses placeholder secrets first, and prints none: passwords and keys are only read
# from the environment.
set -euo pipefail
umask 0077

fail() { echo "airflow-init: $*" >&2; exit 1; }

# Refuse to start with a missing secret, a placeholder of .env.example or a well-known default
# (require-secrets.sh names the variable, never its value); the connection URLs, built from
# the same secrets by docker-compose.yaml, must be set.
require-secrets.sh airflow-init \
  AIRFLOW__CORE__FERNET_KEY:AIRFLOW_FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET:AIRFLOW_JWT_SECRET \
  AIRFLOW__API__SECRET_KEY:AIRFLOW_API_SECRET_KEY AIRFLOW_ADMIN_PASSWORD \
  WELFARE_EXCHANGE_AUDIT_HMAC_KEY WELFARE_EXCHANGE_STAGING_KEY WELFARE_EXCHANGE_AUDIT_SIGNING_KEY \
  AIRFLOW_DB_PASSWORD WELFARE_EXCHANGE_DB_PASSWORD REDIS_PASSWORD \
  || exit 1
for name in WELFARE_EXCHANGE_DB_URL AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW__CELERY__BROKER_URL; do
  [ -n "${!name:-}" ] || fail "$name is not set: see docker-compose.yaml"
done

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

echo "airflow-init: migrating the welfare-exchange project database"
welfare-exchange db upgrade

auth_manager="${AIRFLOW__CORE__AUTH_MANAGER:-}"
case "$auth_manager" in
  *.FabAuthManager)
    # The first admin of the FAB auth manager (roles Viewer, User, Op, Admin come with it).
    # The password goes to the command's prompt on stdin, never on a command line; setsid
    # leaves the command without a terminal, so its prompt reads stdin. An existing user is
    # left as it is: change its password in the UI or with `airflow users reset-password`.
    username="${AIRFLOW_ADMIN_USERNAME:-admin}"
    printf '%s\n%s\n' "$AIRFLOW_ADMIN_PASSWORD" "$AIRFLOW_ADMIN_PASSWORD" \
      | setsid -w airflow users create --username "$username" --role Admin \
          --firstname "$username" --lastname welfare-exchange --email "$username@welfare-exchange.invalid" \
      || fail "the admin user '$username' could not be created: see the output above"
    echo "airflow-init: API login '$username' (role Admin) ready; more users: airflow users create --role Viewer|Op"
    ;;
  *)
    echo "airflow-init: auth manager ${auth_manager:-(the default)} manages its own users: none created here"
    ;;
esac

echo "airflow-init: done ($(airflow version))"
