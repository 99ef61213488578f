#!/usr/bin/env bash
# The one test command (README): PostgreSQL up, then fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh
. scripts/tls-cluster.sh
. scripts/pooler.sh
ensure_postgres
echo "DATABASE_URL=$DATABASE_URL"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# A second cluster with TLS and password authentication, and PgBouncer in
# transaction mode, for the connection tests (both removed on exit).
log=$(mktemp)
trap 'stop_tls_cluster; stop_pooler; rm -f "$log"' EXIT
start_tls_cluster
start_pooler
status=0
cargo test --workspace --all-features --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
