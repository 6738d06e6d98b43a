#!/usr/bin/env bash
# Add or update one MQTT user in deploy/mosquitto/passwd with a fresh random password,
# hashed by mosquitto_passwd. The password is printed once, to hand to the device.
set -euo pipefail
user="${1:?usage: scripts/mqtt-credentials.sh USERNAME   (a device id, citywatch, or safety-office)}"
[[ "$user" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "username must match [A-Za-z0-9_-]{1,64}" >&2; exit 2; }
file="$(dirname "$0")/../deploy/mosquitto/passwd"
pass="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
[ -f "$file" ] || { touch "$file"; chmod 600 "$file"; }
mosquitto_passwd -b "$file" "$user" "$pass"
echo "$user: $pass"
