#!/usr/bin/env bash
# One-shot init step (docker-compose.yml, service influxdb-init): give citywatch an InfluxDB
# token that can read and write its own bucket and nothing else, in $CITYWATCH_TOKEN_FILE
# (a volume that only this step and citywatch mount). It runs with the admin token, which
# citywatch never receives. Idempotent: a token file whose token still exists is kept, so
# running `docker compose up` again does not revoke the token a running citywatch holds.
set -euo pipefail
: "${INFLUX_HOST:?}" "${INFLUX_TOKEN:?admin token}" "${INFLUX_ORG:?}" "${CITYWATCH_BUCKET:?}"
: "${CITYWATCH_TOKEN_FILE:?}" "${CITYWATCH_UID:?the uid citywatch runs as}"
export INFLUX_HOST INFLUX_TOKEN INFLUX_ORG  # read by the influx CLI

# The CLI exits non-zero (after its own message) when the bucket does not exist.
listing="$(influx bucket list --org "$INFLUX_ORG" --name "$CITYWATCH_BUCKET" --hide-headers)" || listing=""
bucket_id="$(printf '%s\n' "$listing" | head -n 1 | cut -f1)"
if [ -z "$bucket_id" ]; then
    echo "influxdb-init: bucket $CITYWATCH_BUCKET not found in organisation $INFLUX_ORG" >&2
    exit 1
fi

if [ -s "$CITYWATCH_TOKEN_FILE" ] && influx auth list --hide-headers | grep -qF -- "$(cat "$CITYWATCH_TOKEN_FILE")"; then
    echo "influxdb-init: citywatch's token for bucket $CITYWATCH_BUCKET exists; kept"
    exit 0
fi

# Exactly two permissions: read and write on this bucket. Not --all-access, --operator,
# --write-buckets (all buckets), --write-orgs, --write-users, ... (tests/test_deploy.py
# checks this line).
created="$(influx auth create --org "$INFLUX_ORG" --read-bucket "$bucket_id" --write-bucket "$bucket_id" \
    --description "citywatch: read/write bucket $CITYWATCH_BUCKET only" --json)"
token="$(printf '%s\n' "$created" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')"
if [ -z "$token" ]; then
    echo "influxdb-init: influx auth create printed no token" >&2
    exit 1
fi
umask 077
tmp="$CITYWATCH_TOKEN_FILE.tmp"
printf '%s\n' "$token" > "$tmp"
chown "$CITYWATCH_UID" "$tmp"
chmod 0400 "$tmp"
mv -f "$tmp" "$CITYWATCH_TOKEN_FILE"
echo "influxdb-init: made citywatch's token (read/write bucket $CITYWATCH_BUCKET, id $bucket_id)"
