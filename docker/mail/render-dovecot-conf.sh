#!/usr/bin/env bash
# Render dovecot.conf for the welfare-exchange development mail server.
#
#   render-dovecot-conf.sh TEMPLATE OUTPUT
#
# Environment (container defaults): MAIL_IMAP_PORT (1143), MAIL_LISTEN (*), MAIL_ROOT
# (/srv/mail), MAIL_RUN_DIR (/run/dovecot-wx), MAIL_STATE_DIR (/var/lib/dovecot-wx),
# MAIL_LOG_PATH (/dev/stderr), MAIL_USERS_FILE (/run/dovecot-wx-users/users),
# MAIL_UID/MAIL_GID (of vmail), MAIL_INTERNAL_USER (dovecot).
# Text only, so the result can be checked with `doveconf -c OUTPUT` anywhere.
set -euo pipefail

template="$1"
output="$2"
port="${MAIL_IMAP_PORT:-1143}"
listen="${MAIL_LISTEN:-*}"
run_dir="${MAIL_RUN_DIR:-/run/dovecot-wx}"
state_dir="${MAIL_STATE_DIR:-/var/lib/dovecot-wx}"
log_path="${MAIL_LOG_PATH:-/dev/stderr}"
users_file="${MAIL_USERS_FILE:-/run/dovecot-wx-users/users}"
mail_uid="${MAIL_UID:-$(id -u vmail)}"
mail_gid="${MAIL_GID:-$(id -g vmail)}"
internal_user="${MAIL_INTERNAL_USER:-dovecot}"

[[ "$port" =~ ^[0-9]{1,5}$ ]] || { echo "render-dovecot-conf: bad MAIL_IMAP_PORT" >&2; exit 2; }
[[ "$mail_uid$mail_gid" =~ ^[0-9]+$ ]] || { echo "render-dovecot-conf: bad MAIL_UID/MAIL_GID" >&2; exit 2; }
[[ "$listen" =~ ^[0-9a-fA-F.:*]+$ ]] || { echo "render-dovecot-conf: bad MAIL_LISTEN" >&2; exit 2; }
[[ "$internal_user" =~ ^[a-z_][a-z0-9_-]*$ ]] || { echo "render-dovecot-conf: bad MAIL_INTERNAL_USER" >&2; exit 2; }
for path in "$run_dir" "$state_dir" "$log_path" "$users_file"; do
  [[ "$path" =~ ^/[A-Za-z0-9._/-]+$ ]] || { echo "render-dovecot-conf: bad path '$path'" >&2; exit 2; }
done

sed -e "s|@IMAP_PORT@|$port|g" -e "s|@LISTEN@|$listen|g" -e "s|@RUN_DIR@|$run_dir|g" \
    -e "s|@STATE_DIR@|$state_dir|g" -e "s|@LOG_PATH@|$log_path|g" -e "s|@USERS_FILE@|$users_file|g" \
    -e "s|@MAIL_UID@|$mail_uid|g" -e "s|@MAIL_GID@|$mail_gid|g" -e "s|@INTERNAL_USER@|$internal_user|g" \
    "$template" > "$output.tmp"
chmod 0644 "$output.tmp"
mv "$output.tmp" "$output"
