# Runtime environment of the checkout, sourced by the Makefile recipes and .ci/run.
# Everything lives in git-ignored folders of the checkout; secrets are generated on first use.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WELFARE_EXCHANGE_HOME="${WELFARE_EXCHANGE_HOME:-$here/var}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$WELFARE_EXCHANGE_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$here/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$here/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Task slots: 4 per core unless set (welfare_exchange.exchange.scheduling.derived_parallelism).
_cores="$(nproc 2>/dev/null || echo 1)"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$(( _cores * 4 > 4 ? _cores * 4 : 4 ))}"
unset _cores
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
# A worker of Airflow's own LocalExecutor (the dev servers: nothing watches a task's exit) is free
# for the next try within a second of a try's end (scheduling.WORKER_WAKEUP_SECONDS).
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="${AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL:-1}"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-5}"
export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="${AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL:-5}"
export PATH="$here/.venv/bin:$PATH"
mkdir -p "$WELFARE_EXCHANGE_HOME"
secrets="$WELFARE_EXCHANGE_HOME/secrets.env"
# Each secret is generated once, on first use; one added later is appended to an existing file.
_secret() {  # NAME COMMAND
  if ! grep -qs "^$1=" "$secrets"; then (umask 077; echo "$1=$(python3 -c "$2")" >> "$secrets"); fi
}
_secret WELFARE_EXCHANGE_AUDIT_HMAC_KEY 'import secrets; print(secrets.token_hex(32))'
_secret WELFARE_EXCHANGE_STAGING_KEY 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'
# The Ed25519 key that signs the audit trail's anchors (any 32 random bytes, in hex).
_secret WELFARE_EXCHANGE_AUDIT_SIGNING_KEY 'import secrets; print(secrets.token_hex(32))'
unset -f _secret
set -a; . "$secrets"; set +a
