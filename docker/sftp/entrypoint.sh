#!/usr/bin/env bash
# Start the welfare-exchange SFTP server: accounts, chroots, host key, configs, then two sshd.
#
# Per municipality (SFTP_MUNICIPALITIES, NIS codes), two system accounts with fixed ids (so the
# files on the data volume keep their owners when the container is recreated), no password,
# no shell, both chrooted to /srv/sftp/municipalities/<nis> (root-owned 0755, sshd's rule):
#   * wx_<nis>  (uid 100000 + NIS): the municipality's login;
#   * wxa_<nis> (uid 200000 + NIS): the agency's login for it, also in the group wx_<nis>.
# Rights per directory (owner:group mode):
#   inbox/, outbox/         wxa:wx 2770   the municipality uploads in inbox/, reads and deletes
#                                         in outbox/; the agency takes requests, delivers results
#   received/, quarantine/  wxa:wxa 0700  the agency only
# POSIX cannot let a municipality delete in outbox/ without letting it create there: the
# municipalities' sshd (port SFTP_PORT, 22) runs under Landlock (landlock_exec.py), where files
# can be created only beneath an inbox/. The agency's sshd (SFTP_AGENCY_PORT, 2022, for the
# workers only) runs without it. Public keys: /etc/ssh/authorized_keys/wx_<nis> (the
# municipality's) and wxa_<nis> (the agency's), mounted read-only.
# The ed25519 host key is generated once into the host_keys volume and printed, to be pinned
# in the Airflow connection (extra "host_key").
set -euo pipefail

share=/usr/local/share/welfare-exchange-sftp
chroot_base=/srv/sftp/municipalities
host_key=/etc/ssh/host_keys/ssh_host_ed25519_key
config=/etc/ssh/sshd_config.municipalities
agency_config=/etc/ssh/sshd_config.agency
pid_dir=/run/sftp-municipalities

if [ ! -s "$host_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C welfare-exchange-sftp -f "$host_key"
fi
chmod 0600 "$host_key"
echo "sftp: host key to pin: $(cut -d' ' -f1,2 "$host_key.pub")"

account() {  # account NAME ID [SUPPLEMENTARY_GROUP]
  if ! id "$1" > /dev/null 2>&1; then
    groupadd --gid "$2" "$1"
    useradd --uid "$2" --gid "$2" ${3:+--groups "$3"} --no-create-home --home-dir / --shell /usr/sbin/nologin "$1"
  fi
  [ -z "${3:-}" ] || usermod --append --groups "$3" "$1"
  # Locked password, but a valid account for public-key login.
  usermod -p '*' "$1"
  [ -f "/etc/ssh/authorized_keys/$1" ] || echo "sftp: warning: no /etc/ssh/authorized_keys/$1: $1 cannot log in yet" >&2
}

chmod 0755 /srv /srv/sftp "$chroot_base"
create_in=(--create-in "$pid_dir")
for nis in ${SFTP_MUNICIPALITIES//,/ }; do
  [[ "$nis" =~ ^[0-9]{5}$ ]] || { echo "sftp: a NIS code is 5 digits, got '$nis'" >&2; exit 2; }
  user="wx_$nis"
  agency="wxa_$nis"
  account "$user" $((100000 + 10#$nis))
  account "$agency" $((200000 + 10#$nis)) "$user"
  install -d -o root -g root -m 0755 "$chroot_base/$nis"
  for dir in inbox outbox; do
    install -d -o "$agency" -g "$user" -m 2770 "$chroot_base/$nis/$dir"
  done
  for dir in received quarantine; do
    install -d -o "$agency" -g "$agency" -m 0700 "$chroot_base/$nis/$dir"
  done
  create_in+=(--create-in "$chroot_base/$nis/inbox")
done

"$share/render-sshd-config.sh" "$share/sshd_config.template" "$config" municipalities
"$share/render-sshd-config.sh" "$share/sshd_config.template" "$agency_config" agency
/usr/sbin/sshd -t -f "$config"
/usr/sbin/sshd -t -f "$agency_config"
mkdir -p /run/sshd "$pid_dir"
echo "sftp: serving municipalities: ${SFTP_MUNICIPALITIES:-none} (municipalities on :${SFTP_PORT:-22}, agency on :${SFTP_AGENCY_PORT:-2022})"

/usr/sbin/sshd -D -e -f "$agency_config" &
agency_pid=$!
python3 "$share/landlock_exec.py" --best-effort "${create_in[@]}" -- /usr/sbin/sshd -D -e -f "$config" &
municipal_pid=$!
trap 'kill -TERM "$agency_pid" "$municipal_pid" 2> /dev/null || true' TERM INT
# Either listener ending ends the container (its restart policy brings both back).
status=0
wait -n "$agency_pid" "$municipal_pid" || status=$?
kill -TERM "$agency_pid" "$municipal_pid" 2> /dev/null || true
wait || true
exit "$status"
