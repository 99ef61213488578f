# Sourced by the scripts: makes sure a PostgreSQL server answers on
# 127.0.0.1:5432 (trust auth for user postgres) and exports DATABASE_URL.
# Starts the local cluster if it is stopped; installs PostgreSQL with apt if
# there is none.

ensure_postgres() {
  local host=127.0.0.1 port=5432
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$host" -p "$port"; then
    :
  else
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      echo "PostgreSQL is not installed: installing it with apt-get" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ -z "$(ls /etc/postgresql/"$version" 2>/dev/null)" ]; then
      pg_createcluster "$version" main >/dev/null
    fi
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
    fi
    echo "Starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
      pg_isready -q -h "$host" -p "$port" && break
      sleep 1
    done
    pg_isready -h "$host" -p "$port" >/dev/null || { echo "PostgreSQL did not start on $host:$port" >&2; return 1; }
  fi
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@$host:$port/postgres}"
}
