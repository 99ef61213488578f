#!/usr/bin/env bash
# The demo on a fresh machine: builds in release, starts PostgreSQL if needed,
# then seeds a scratch database (backfill_demo), runs the backfill with its
# progress display, prints the summary and the status.
#
#   scripts/demo.sh [--results N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh
ensure_postgres
cargo build --release --locked -p backfill-cli
journal=./backfill-demo-journal
target/release/backfill --journal "$journal" demo "$@"
echo
target/release/backfill --journal "$journal" status
