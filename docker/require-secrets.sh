#!/usr/bin/env bash
# Refuse to start a container with a secret that is missing or still a placeholder.
#
#   require-secrets.sh COMPONENT NAME[:ENV_FILE_NAME] ...
#
# Each NAME is an environment variable holding a password or key. It must be set, must not be
# the "change-me" placeholder of .env.example nor a well-known default ("airflow", "admin",
# "password", …), and must be at least 16 characters long: every secret .env.example tells
# how to generate is longer. ENV_FILE_NAME is the .env variable to fix when it differs from
# NAME (AIRFLOW__CORE__FERNET_KEY:AIRFLOW_FERNET_KEY). Messages name the variable, never its
# value; every bad one is reported, then the script exits 1 (callers then stop).
#
# One script for every container (airflow-init, postgres, redis, mail), so the rule is the
# same everywhere: the airflow image copies it, the others mount it, all on PATH.
set -euo pipefail

component="${1:?usage: require-secrets.sh COMPONENT NAME[:ENV_FILE_NAME] ...}"
shift
min_length=16
# Defaults of Airflow's own quick-start files, of the images and of tutorials.
well_known=" airflow admin password passw0rd secret postgres redis root changeit default example test guest letmein "

bad=0
for spec in "$@"; do
  name="${spec%%:*}"
  fix="${spec#*:}"
  label="$name"
  [ "$fix" = "$name" ] || label="$name ($fix in .env)"
  value="${!name:-}"
  lowered="${value,,}"
  reason=""
  if [ -z "$value" ]; then
    reason="is not set: copy .env.example to .env and fill it in"
  elif [[ "$lowered" == *change-me* || "$lowered" == *changeme* ]]; then
    reason="still holds the placeholder of .env.example: generate a real value (see .env.example)"
  elif [[ "$well_known" == *" $lowered "* ]]; then
    reason="is a well-known default, not a secret: generate a real value (see .env.example)"
  elif [ "${#value}" -lt "$min_length" ]; then
    reason="is shorter than $min_length characters: generate a real value (see .env.example)"
  fi
  if [ -n "$reason" ]; then
    echo "$component: $label $reason" >&2
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then
  echo "$component: refusing to start: fix the variables named above in .env" >&2
  exit 1
fi
