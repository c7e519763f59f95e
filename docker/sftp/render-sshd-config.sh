#!/usr/bin/env bash
# Render sshd_config for the welfare-exchange SFTP server.
#
#   render-sshd-config.sh TEMPLATE OUTPUT [municipalities|agency]
#
# Two listeners share the host key and the directories: "municipalities" (the default; only
# the accounts wx_<nis> may log in, port SFTP_PORT) and "agency" (only wxa_<nis>, the agency's
# account per municipality, port SFTP_AGENCY_PORT). See entrypoint.sh for why.
#
# Environment:
#   SFTP_MUNICIPALITIES  NIS codes (5 digits), separated by spaces or commas: one chrooted
#                        account of each kind per code. Empty: nobody may log in.
#   SFTP_PORT (22), SFTP_AGENCY_PORT (2022), SFTP_LISTEN_ADDRESS (0.0.0.0), SFTP_HOST_KEY,
#   SFTP_PID_FILE, SFTP_AGENCY_PID_FILE, SFTP_AUTHORIZED_KEYS_DIR, SFTP_CHROOT_BASE: paths,
#   defaulting to the container's; SFTP_MAX_STARTUPS (300:30:600), SFTP_MAX_SESSIONS (10).
#
# Pure text rendering (no account is created here), so the result can be checked with
# `sshd -t -f OUTPUT` anywhere, including in the tests.
set -euo pipefail

template="$1"
output="$2"
role="${3:-municipalities}"
listen="${SFTP_LISTEN_ADDRESS:-0.0.0.0}"
host_key="${SFTP_HOST_KEY:-/etc/ssh/host_keys/ssh_host_ed25519_key}"
keys_dir="${SFTP_AUTHORIZED_KEYS_DIR:-/etc/ssh/authorized_keys}"
chroot_base="${SFTP_CHROOT_BASE:-/srv/sftp/municipalities}"
max_startups="${SFTP_MAX_STARTUPS:-300:30:600}"
max_sessions="${SFTP_MAX_SESSIONS:-10}"
case "$role" in
  municipalities)
    port="${SFTP_PORT:-22}"
    pid_file="${SFTP_PID_FILE:-/run/sftp-municipalities/sshd.pid}"
    prefix="wx_"
    # No directories or links; umask 027 so the agency (group) reads what is uploaded.
    sftp_command="internal-sftp -l INFO -d / -u 0027 -P mkdir,rmdir,symlink,hardlink"
    ;;
  agency)
    port="${SFTP_AGENCY_PORT:-2022}"
    pid_file="${SFTP_AGENCY_PID_FILE:-/run/sshd-agency.pid}"
    prefix="wxa_"
    sftp_command="internal-sftp -l INFO -d / -u 0027"
    ;;
  *) echo "render-sshd-config: the role is 'municipalities' or 'agency', got '$role'" >&2; exit 2 ;;
esac

# Values end up in sshd_config: accept only what they can be.
[[ "$port" =~ ^[0-9]{1,5}$ ]] || { echo "render-sshd-config: bad port for $role" >&2; exit 2; }
[[ "$max_startups" =~ ^[0-9]+(:[0-9]+:[0-9]+)?$ ]] || { echo "render-sshd-config: bad SFTP_MAX_STARTUPS" >&2; exit 2; }
[[ "$max_sessions" =~ ^[0-9]+$ ]] || { echo "render-sshd-config: bad SFTP_MAX_SESSIONS" >&2; exit 2; }
for path in "$host_key" "$pid_file" "$keys_dir" "$chroot_base"; do
  [[ "$path" =~ ^/[A-Za-z0-9._/-]+$ ]] || { echo "render-sshd-config: bad path '$path'" >&2; exit 2; }
done
[[ "$listen" =~ ^[0-9a-fA-F.:]+$ ]] || { echo "render-sshd-config: bad SFTP_LISTEN_ADDRESS" >&2; exit 2; }

nis_codes=()
for nis in ${SFTP_MUNICIPALITIES//,/ }; do
  if [[ ! "$nis" =~ ^[0-9]{5}$ ]]; then
    echo "render-sshd-config: a NIS code is 5 digits, got '$nis'" >&2
    exit 2
  fi
  nis_codes+=("$nis")
done

tmp="$(mktemp "${output}.XXXXXX")"
sed -e "s|@PORT@|$port|" -e "s|@LISTEN_ADDRESS@|$listen|" -e "s|@HOST_KEY@|$host_key|" \
    -e "s|@PID_FILE@|$pid_file|" -e "s|@AUTHORIZED_KEYS_DIR@|$keys_dir|" \
    -e "s|@MAX_STARTUPS@|$max_startups|" -e "s|@MAX_SESSIONS@|$max_sessions|" "$template" > "$tmp"
{
  echo
  echo "# Only the registered accounts of this listener ($role) may log in, and only to SFTP."
  if [ "${#nis_codes[@]}" -eq 0 ]; then
    echo "DenyUsers *"
  else
    printf 'AllowUsers'; printf " ${prefix}%s" "${nis_codes[@]}"; echo
    for nis in "${nis_codes[@]}"; do
      echo "Match User ${prefix}$nis"
      echo "    ChrootDirectory $chroot_base/$nis"
      # -d /: a session starts at the chroot's top, so "inbox" is a valid path.
      echo "    ForceCommand $sftp_command"
    done
  fi
} >> "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$output"
