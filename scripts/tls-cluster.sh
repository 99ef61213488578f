# Sourced by scripts/test.sh: a second PostgreSQL cluster for the TLS and
# password tests, on 127.0.0.1/localhost port $BACKFILL_TLS_PORT (55433), with
# a certificate for DNS:localhost signed by a CA made here, and a role that
# needs a password (scram-sha-256). Everything lives in one temporary
# directory, removed by stop_tls_cluster.
#
#   BACKFILL_TLS_PORT      the port
#   BACKFILL_TLS_CA        the CA that signed the server certificate
#   BACKFILL_TLS_WRONG_CA  another CA (the server's certificate is not its)
#   BACKFILL_TLS_USER / BACKFILL_TLS_PASSWORD  the role that needs a password

start_tls_cluster() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "no PostgreSQL binaries under /usr/lib/postgresql" >&2; return 1; }
  command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
  export BACKFILL_TLS_PORT="${BACKFILL_TLS_PORT:-55433}"
  TLS_BIN="$bin"
  TLS_DIR=$(mktemp -d /tmp/backfill-tls.XXXXXX)
  chmod 755 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=backfill test CA" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong-ca.key -out wrong-ca.crt -days 2 \
      -subj "/CN=backfill wrong CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -days 2 -extfile server.ext 2>/dev/null
  )
  chown -R postgres:postgres "$TLS_DIR"
  chmod 600 "$TLS_DIR/server.key"
  runuser -u postgres -- "$bin/initdb" -D "$TLS_DIR/data" -A trust -U postgres >/dev/null
  cat >> "$TLS_DIR/data/postgresql.conf" <<CONF
port = $BACKFILL_TLS_PORT
listen_addresses = 'localhost'
unix_socket_directories = '$TLS_DIR'
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
fsync = off
max_connections = 60
CONF
  cat > "$TLS_DIR/data/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all postgres ::1/128 trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
HBA
  runuser -u postgres -- "$bin/pg_ctl" -D "$TLS_DIR/data" -l "$TLS_DIR/server.log" -w start >/dev/null
  export BACKFILL_TLS_USER=backfill_pw
  export BACKFILL_TLS_PASSWORD="pw-$(openssl rand -hex 8)"
  psql -X -q -h 127.0.0.1 -p "$BACKFILL_TLS_PORT" -U postgres -d postgres \
    -c "CREATE ROLE $BACKFILL_TLS_USER LOGIN SUPERUSER PASSWORD '$BACKFILL_TLS_PASSWORD'"
  export BACKFILL_TLS_CA="$TLS_DIR/ca.crt"
  export BACKFILL_TLS_WRONG_CA="$TLS_DIR/wrong-ca.crt"
  echo "TLS cluster on port $BACKFILL_TLS_PORT ($TLS_DIR)" >&2
}

stop_tls_cluster() {
  [ -n "${TLS_DIR:-}" ] || return 0
  runuser -u postgres -- "$TLS_BIN/pg_ctl" -D "$TLS_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$TLS_DIR"
}
