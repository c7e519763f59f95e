#!/usr/bin/env bash
# Render sshd_config for the welfare-exchange SFTP server.
#
#   render-sshd-config.sh TEMPLATE OUTPUT
#
# Environment:
#   SFTP_MUNICIPALITIES  NIS codes (5 digits), separated by spaces or commas: one chrooted
#                        account wx_<nis> each. Empty: nobody may log in.
#   SFTP_PORT (22), SFTP_LISTEN_ADDRESS (0.0.0.0), SFTP_HOST_KEY, SFTP_PID_FILE,
#   SFTP_AUTHORIZED_KEYS_DIR, SFTP_CHROOT_BASE: paths, defaulting to the container's.
#
# Pure text rendering (no account is created here), so the result can be checked with
# `sshd -t -f OUTPUT` anywhere, including in the tests.
set -euo pipefail

template="$1"
output="$2"
port="${SFTP_PORT:-22}"
listen="${SFTP_LISTEN_ADDRESS:-0.0.0.0}"
host_key="${SFTP_HOST_KEY:-/etc/ssh/host_keys/ssh_host_ed25519_key}"
pid_file="${SFTP_PID_FILE:-/run/sshd.pid}"
keys_dir="${SFTP_AUTHORIZED_KEYS_DIR:-/etc/ssh/authorized_keys}"
chroot_base="${SFTP_CHROOT_BASE:-/srv/sftp/municipalities}"

# Values end up in sshd_config: accept only what they can be.
[[ "$port" =~ ^[0-9]{1,5}$ ]] || { echo "render-sshd-config: bad SFTP_PORT" >&2; exit 2; }
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
    -e "s|@PID_FILE@|$pid_file|" -e "s|@AUTHORIZED_KEYS_DIR@|$keys_dir|" "$template" > "$tmp"
{
  echo
  echo "# Only the registered municipalities may log in, and only to SFTP."
  if [ "${#nis_codes[@]}" -eq 0 ]; then
    echo "DenyUsers *"
  else
    printf 'AllowUsers'; printf ' wx_%s' "${nis_codes[@]}"; echo
    for nis in "${nis_codes[@]}"; do
      echo "Match User wx_$nis"
      echo "    ChrootDirectory $chroot_base/$nis"
      # -d /: a session starts at the chroot's top, so "inbox" is a valid path.
      echo "    ForceCommand internal-sftp -l INFO -d /"
    done
  fi
} >> "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$output"
