#!/bin/sh
# Makes ./secrets for the Compose stack (idempotent: existing files are kept).
#
#   ./init-secrets.sh                   # SONAE=<command> to use another `sonae` than the checkout's
#
# secrets/db_password, secrets/grafana_admin_password       random passwords
# secrets/mosquitto/passwd, secrets/mosquitto/acl            broker users (sonae devices add)
# secrets/sonae-ingest.toml, secrets/sonae-api.toml          Sonae's database and broker URLs
# secrets/tls/server.crt, secrets/tls/server.key             a self-signed certificate for PUBLIC_HOST
#                                                            (replace with a real one)
# Devices are added later with:
#   ../../manage devices add <device-id> --municipality <団体コード> --station <station> --dir secrets/mosquitto
#   docker compose kill -s HUP mosquitto
set -eu
cd "$(dirname "$0")"
SONAE=${SONAE:-../../manage}
# every value written into a generated file passes sonae's one check (sonae/config_values.py):
# control characters and line breaks are refused, and the script stops
PUBLIC_HOST=$(printf '%s' "${PUBLIC_HOST:-localhost}" | $SONAE secrets check PUBLIC_HOST --kind host)
S=secrets
umask 077
mkdir -p "$S/mosquitto" "$S/tls"

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
password_of() {  # password_of USER ROLE: create the broker user once, print its password
    if [ ! -f "$S/.mqtt-$1" ]; then
        $SONAE devices add "$1" --role "$2" --dir "$S/mosquitto" --format json --replace \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["password"])' > "$S/.mqtt-$1"
    fi
    cat "$S/.mqtt-$1"
}

[ -f "$S/db_password" ] || random > "$S/db_password"
[ -f "$S/grafana_admin_password" ] || random > "$S/grafana_admin_password"
# a hand-placed db_password is checked too (it ends up in a TOML string inside a URL)
DB_PASSWORD=$($SONAE secrets check db_password < "$S/db_password")
INGEST_PASSWORD=$(password_of sonae-ingest ingest)
ALERTS_PASSWORD=$(password_of sonae-alerts alerts)

service_toml() {  # service_toml FILE MQTT_USER MQTT_PASSWORD: checked, percent-encoded, TOML-escaped
    [ -f "$1" ] && return 0
    SONAE_SECRET_DB_PASSWORD=$DB_PASSWORD SONAE_SECRET_MQTT_PASSWORD=$3 \
        $SONAE secrets service-toml --out "$1" --db-user sonae --db-host timescaledb --db-name sonae \
            --mqtt-user "$2" --mqtt-host mosquitto
}
service_toml "$S/sonae-ingest.toml" sonae-ingest "$INGEST_PASSWORD"
service_toml "$S/sonae-api.toml" sonae-alerts "$ALERTS_PASSWORD"
if [ ! -f "$S/tls/server.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=${PUBLIC_HOST}" \
        -addext "subjectAltName=DNS:${PUBLIC_HOST}" \
        -keyout "$S/tls/server.key" -out "$S/tls/server.crt" 2>/dev/null
fi

# Containers read these as their own users: sonae 10001, mosquitto 1883, grafana 472.
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$S/sonae-ingest.toml" "$S/sonae-api.toml"
    chown -R 1883:1883 "$S/mosquitto"
    chown 472 "$S/grafana_admin_password"
    chmod 0755 "$S/tls"; chmod 0644 "$S/tls/server.crt"
    chown 1883 "$S/tls/server.key"; chmod 0640 "$S/tls/server.key"   # nginx reads it as root
else
    echo "not root: making secrets readable by the containers' users (mode 0644); keep $S private" >&2
    chmod 0755 "$S" "$S/mosquitto" "$S/tls"
    chmod 0644 "$S/sonae-ingest.toml" "$S/sonae-api.toml" "$S/grafana_admin_password" \
        "$S/mosquitto/passwd" "$S/mosquitto/acl" "$S/tls/server.crt" "$S/tls/server.key"
fi
echo "secrets ready in $(pwd)/$S"
