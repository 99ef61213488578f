# Sourced by scripts/test.sh: PgBouncer in transaction mode in front of the
# main cluster, on 127.0.0.1:$BACKFILL_POOLER_PORT (56432), for the test that
# the backfill refuses a transaction-mode pooler (session advisory locks and
# prepared statements do not survive one). Installed with apt if missing;
# removed by stop_pooler.

start_pooler() {
  if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "installing pgbouncer with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    # The package starts a service of its own on 6432: not ours.
    service pgbouncer stop >/dev/null 2>&1 || true
  fi
  local bin
  bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  export BACKFILL_POOLER_PORT="${BACKFILL_POOLER_PORT:-56432}"
  POOLER_DIR=$(mktemp -d /tmp/backfill-pooler.XXXXXX)
  cat > "$POOLER_DIR/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BACKFILL_POOLER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $POOLER_DIR/userlist.txt
pool_mode = transaction
default_pool_size = 4
ignore_startup_parameters = extra_float_digits,search_path
pidfile = $POOLER_DIR/pgbouncer.pid
logfile = $POOLER_DIR/pgbouncer.log
INI
  echo '"postgres" ""' > "$POOLER_DIR/userlist.txt"
  chown -R postgres:postgres "$POOLER_DIR"
  runuser -u postgres -- "$bin" -d "$POOLER_DIR/pgbouncer.ini"
  for _ in $(seq 1 20); do
    pg_isready -q -h 127.0.0.1 -p "$BACKFILL_POOLER_PORT" && break
    sleep 0.2
  done
  echo "PgBouncer (transaction mode) on port $BACKFILL_POOLER_PORT" >&2
}

stop_pooler() {
  [ -n "${POOLER_DIR:-}" ] || return 0
  [ -f "$POOLER_DIR/pgbouncer.pid" ] && kill "$(cat "$POOLER_DIR/pgbouncer.pid")" 2>/dev/null || true
  rm -rf "$POOLER_DIR"
}
