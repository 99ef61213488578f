#!/usr/bin/env bash
# The one test command (README): PostgreSQL up, then fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh
ensure_postgres
echo "DATABASE_URL=$DATABASE_URL"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --workspace --all-features --locked
