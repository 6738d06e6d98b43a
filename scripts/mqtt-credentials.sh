#!/usr/bin/env bash
# The one way to create MQTT credentials for the shipped broker (deploy/mosquitto/):
# adds or updates one user with a fresh random password, hashed by mosquitto_passwd, and
# prints the password once, to hand to the device or to put in .env.
#
#   scripts/mqtt-credentials.sh citywatch       the service: deploy/mosquitto/passwd-service
#                                               (listener 8884, any client id it chooses)
#   scripts/mqtt-credentials.sh safety-office   the safety office's read-only user
#   scripts/mqtt-credentials.sh D00001          a device: its username is its device id
#
# Everyone but the service goes into deploy/mosquitto/passwd (listener 8883), where the
# broker makes the username the client id. Names starting with "citywatch" are reserved
# for the service's client ids (citywatch-ingest, citywatch-ingest-alerts, ...): a device
# with such a name would share a client id, and so a session, with the service.
# MQTT_PASSWD_DIR overrides the folder (tests).
set -euo pipefail
user="${1:?usage: scripts/mqtt-credentials.sh USERNAME   (citywatch, safety-office, or a device id)}"
[[ "$user" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "username must match [A-Za-z0-9_-]{1,64}" >&2; exit 2; }
dir="${MQTT_PASSWD_DIR:-$(dirname "$0")/../deploy/mosquitto}"
shopt -s nocasematch
if [ "$user" = citywatch ]; then
    file="$dir/passwd-service"; other="$dir/passwd"
elif [[ "$user" == citywatch* ]]; then
    echo "names starting with 'citywatch' are reserved for the service's client ids; the service's user is 'citywatch'" >&2
    exit 2
else
    file="$dir/passwd"; other="$dir/passwd-service"
fi
shopt -u nocasematch
pass="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
umask 077
[ -f "$file" ] || touch "$file"
# One user, one file: a name left in the other file would open the other listener too.
if [ -f "$other" ] && grep -q "^$user:" "$other"; then
    mosquitto_passwd -D "$other" "$user" >/dev/null
fi
mosquitto_passwd -b "$file" "$user" "$pass"
echo "$user: $pass"
