#!/usr/bin/env bash
# Start the development mail server: IMAP users, dovecot, then the SMTP sink.
#
# Users (IMAP login = mailbox name): "agency" (MAIL_AGENCY_PASSWORD), the agency's mailbox
# that Airflow polls, and "sink" (MAIL_SINK_PASSWORD), the catch-all for every other
# recipient. Passwords come from the environment into a 0600 file under /run, never into
# the image or a volume. If dovecot or the sink stops, the container stops (and restarts).
set -euo pipefail

require-secrets.sh mail MAIL_AGENCY_PASSWORD MAIL_SINK_PASSWORD \
  || exit 1

share=/usr/local/share/welfare-exchange-mail
users_dir=/run/dovecot-wx-users
config=/etc/dovecot/welfare-exchange.conf
uid="$(id -u vmail)"
gid="$(id -g vmail)"

umask 0077
mkdir -p "$users_dir" /run/dovecot-wx /var/lib/dovecot-wx
chmod 0755 /run/dovecot-wx
: > "$users_dir/users"
for entry in "agency:MAIL_AGENCY_PASSWORD" "sink:MAIL_SINK_PASSWORD"; do
  user="${entry%%:*}"
  var="${entry#*:}"
  password="${!var}"
  case "$password" in *:*|*$'\n'*) echo "mail: $var may not contain ':' or a newline" >&2; exit 1;; esac
  install -d -o vmail -g vmail -m 0700 "/srv/mail/$user"
  printf '%s:{PLAIN}%s:%s:%s::/srv/mail/%s::\n' "$user" "$password" "$uid" "$gid" "$user" >> "$users_dir/users"
done
chown root:dovecot "$users_dir" "$users_dir/users"
chmod 0750 "$users_dir"
chmod 0640 "$users_dir/users"

MAIL_UID="$uid" MAIL_GID="$gid" "$share/render-dovecot-conf.sh" "$share/dovecot.conf.template" "$config"
doveconf -c "$config" -n > /dev/null

/usr/sbin/dovecot -c "$config" -F &
setpriv --reuid=vmail --regid=vmail --init-groups \
  env MAIL_ROOT=/srv/mail python3 "$share/smtp_sink.py" &

trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
wait -n
status=$?
echo "mail: a server process stopped (status $status): stopping the container" >&2
kill -TERM $(jobs -p) 2>/dev/null || true
wait || true
exit "$status"
