#!/usr/bin/env bash
# Mutation testing (issue 13): not part of CI; hours on two cores for the sink.
#
#   scripts/mutants.sh core   # crates/core, its own tests (pure, no database)
#   scripts/mutants.sh sink   # crates/postgres/src/sink.rs, the Postgres suite
#
# Installs cargo-mutants (crates.io) if missing. Results land in
# target/mutants-<part>/mutants.out (caught.txt, missed.txt, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
version=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -q "$version"; then
  cargo install --locked cargo-mutants --version "$version"
fi
mkdir -p target/mutants-core target/mutants-sink
part=${1:-core}
shift || true
case "$part" in
  core)
    # The core's own tests pin every rule; the cross-crate suite is not needed.
    exec cargo mutants --package backfill-core --test-package backfill-core \
      --exclude crates/core/src/testing.rs \
      --features backfill-core/testing --timeout 120 \
      --output "target/mutants-core" "$@"
    ;;
  sink)
    . scripts/pg.sh
    ensure_postgres
    # The sink is exercised by the Postgres engine tests of the root package
    # (tests/backfill); the whole workspace is selected, that one test binary run.
    # cargo-mutants' baseline tests only the mutated package, which has no
    # such test binary: the baseline is this same command, run first.
    cargo test --workspace --all-features --test backfill
    exec cargo mutants --workspace --file crates/postgres/src/sink.rs --baseline skip \
      --test-workspace=true --all-features --timeout 60 \
      --cargo-test-arg=--test --cargo-test-arg=backfill \
      --output "target/mutants-sink" "$@"
    ;;
  *) echo "usage: scripts/mutants.sh core|sink [cargo-mutants options]" >&2; exit 2 ;;
esac
