#!/usr/bin/env bash
# A private certificate authority and the certificates of one deployment, with openssl.
#
#   scripts/make-certs.sh [-o DIR] [-c CLIENT]... [HOST...]
#
# DIR (default deploy/certs, never committed) receives:
#   ca.crt                 the CA certificate: give it to every device and to citywatch
#                          (CW_MQTT_CA_FILE) so that they can verify the broker
#   ca.key                 the CA's private key: keep it offline after this step
#   server.crt, server.key the broker's certificate for HOST... (default: mosquitto
#                          localhost 127.0.0.1) — the names devices and the service dial
#   client-NAME.crt/.key   with -c NAME: a client certificate (CN=NAME) for devices that
#                          can present one; the shipped broker does not require them
#
# The CA is made once and reused: running the script again issues new server/client
# certificates under the same CA (devices keep trusting it). Delete DIR to start over.
set -euo pipefail

usage() { echo "usage: $0 [-o DIR] [-c CLIENT]... [HOST...]" >&2; exit 2; }
dir="$(dirname "$0")/../deploy/certs"
clients=()
while getopts "o:c:h" opt; do
    case "$opt" in
        o) dir="$OPTARG" ;;
        c) [[ "$OPTARG" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "client name must match [A-Za-z0-9_-]{1,64}" >&2; exit 2; }
           clients+=("$OPTARG") ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(mosquitto localhost 127.0.0.1)
days="${CERT_DAYS:-825}"  # what browsers and most TLS stacks accept for a leaf certificate

mkdir -p "$dir"
umask 077
cd "$dir"

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    openssl req -x509 -new -newkey rsa:3072 -nodes -keyout ca.key -out ca.crt -days 3650 -sha256 \
        -subj "/O=citywatch/CN=citywatch private CA $(date -u +%Y%m%d%H%M%S)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    echo "made a new CA: $dir/ca.crt"
fi

san=""
for h in "${hosts[@]}"; do
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done

issue() {  # name, subject CN, extended key usage, subjectAltName (may be empty)
    local name="$1" cn="$2" eku="$3" alt="$4"
    local ext
    ext="$(mktemp)"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        [ -z "$alt" ] || echo "subjectAltName=$alt"
    } > "$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/O=citywatch/CN=$cn" \
        2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days "$days" \
        -sha256 -extfile "$ext" 2>/dev/null
    rm -f "$name.csr" "$ext"
}

issue server "${hosts[0]}" serverAuth "${san%,}"
echo "made $dir/server.crt for ${hosts[*]}"
for c in "${clients[@]}"; do
    issue "client-$c" "$c" clientAuth ""
    echo "made $dir/client-$c.crt"
done
chmod 644 ca.crt server.crt
# The broker in docker-compose.yml runs as uid 1883 (eclipse-mosquitto): it must read the key.
echo "docker: the broker reads server.key as uid 1883: sudo chown 1883 $dir/server.key"
