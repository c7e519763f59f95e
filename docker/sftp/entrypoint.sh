#!/usr/bin/env bash
# Start the welfare-exchange SFTP server: accounts, chroots, host key, config, then sshd.
#
# Per municipality (SFTP_MUNICIPALITIES, NIS codes):
#   * system account wx_<nis>, no password, no shell, a fixed uid (100000 + NIS) so the files
#     on the data volume keep their owner when the container is recreated;
#   * /srv/sftp/municipalities/<nis> (root-owned 0755: sshd's chroot rule) with inbox/,
#     received/, outbox/ and quarantine/ owned by the account (0700);
#   * its public keys in /etc/ssh/authorized_keys/wx_<nis> (mounted read-only; one line for
#     the agency key, one for the municipality's).
# The ed25519 host key is generated once into the host_keys volume and printed, to be pinned
# in the Airflow connection (extra "host_key").
set -euo pipefail

share=/usr/local/share/welfare-exchange-sftp
chroot_base=/srv/sftp/municipalities
host_key=/etc/ssh/host_keys/ssh_host_ed25519_key
config=/etc/ssh/sshd_config.welfare-exchange

if [ ! -s "$host_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C welfare-exchange-sftp -f "$host_key"
fi
chmod 0600 "$host_key"
echo "sftp: host key to pin: $(cut -d' ' -f1,2 "$host_key.pub")"

chmod 0755 /srv /srv/sftp "$chroot_base"
for nis in ${SFTP_MUNICIPALITIES//,/ }; do
  [[ "$nis" =~ ^[0-9]{5}$ ]] || { echo "sftp: a NIS code is 5 digits, got '$nis'" >&2; exit 2; }
  user="wx_$nis"
  uid=$((100000 + 10#$nis))
  if ! id "$user" > /dev/null 2>&1; then
    groupadd --gid "$uid" "$user"
    useradd --uid "$uid" --gid "$uid" --no-create-home --home-dir / --shell /usr/sbin/nologin "$user"
  fi
  # Locked password, but a valid account for public-key login.
  usermod -p '*' "$user"
  install -d -o root -g root -m 0755 "$chroot_base/$nis"
  for dir in inbox received outbox quarantine; do
    install -d -o "$user" -g "$user" -m 0700 "$chroot_base/$nis/$dir"
  done
  [ -f "/etc/ssh/authorized_keys/$user" ] || echo "sftp: warning: no /etc/ssh/authorized_keys/$user: $user cannot log in yet" >&2
done

"$share/render-sshd-config.sh" "$share/sshd_config.template" "$config"
/usr/sbin/sshd -t -f "$config"
mkdir -p /run/sshd
echo "sftp: serving municipalities: ${SFTP_MUNICIPALITIES:-none}"
exec /usr/sbin/sshd -D -e -f "$config"
