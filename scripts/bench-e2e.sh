#!/usr/bin/env bash
# End-to-end benchmark: the tool beside the hand-written SQL reference
# (benches/reference.sql), on copies of one database of generated data, in the
# same run. Prints source rows/s, peak RSS and the ratio tool/SQL, and checks
# that both wrote the same target rows.
#
#   scripts/bench-e2e.sh [RESULTS ...]     default: 16667 166667 (≈100k and ≈1M source rows)
#   BATCH_SIZE=N (default 2000) sets the tool's --batch-size.
#   REPEAT=N (default 1) runs every path N times per size, each round on
#   fresh copies of one seeded database, and adds the median of the rounds'
#   ratios: on this kind of machine one run of the same work varies by
#   ±10 % (decision 77).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh
ensure_postgres
admin="$DATABASE_URL"
export PGOPTIONS='-c client_min_messages=warning'
base="${admin%/*}"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(16667 166667)
rounds="${REPEAT:-1}"
case "$rounds" in
  '' | *[!0-9]* | 0) echo "REPEAT must be a whole number of rounds, 1 or more (got '$rounds')" >&2; exit 2 ;;
esac

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --locked -p backfill-cli >&2
bin=target/release/backfill
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$admin" "$@"; }
# Every timed step starts from the same server state: what the steps before
# it wrote (the seeding, the SQL reference, the online run: gigabytes at 5M
# source rows) is flushed first, untimed, instead of by the checkpoints of
# whichever step comes next (decision 77).
quiesce() { psql_admin -c CHECKPOINT; }

seed=backfill_bench_seed
copies=(backfill_bench_sql backfill_bench_tool backfill_bench_initial)
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '%-10s %-12s %5s %10s %12s %10s %12s %8s %11s %9s %8s  %s\n' results source_rows round "sql s" "sql rows/s" "tool s" "tool rows/s" ratio "journal MB" "verify s" "run/ver" "tool peak RSS (verify's)"
for n in "${sizes[@]}"; do
  # One seeded database per size; every path of every round gets a copy of
  # it, so all of them read the same bytes.
  psql_admin -c "DROP DATABASE IF EXISTS $seed WITH (FORCE)" -c "CREATE DATABASE $seed"
  DATABASE_URL="$base/$seed" "$bin" --quiet schema apply
  DATABASE_URL="$base/$seed" "$bin" --quiet seed --results "$n"
  psql -X -q "$base/$seed" -c "VACUUM ANALYZE"
  rows=$(psql -X -At "$base/$seed" -c "SELECT count(*) FROM extracted_positions")
  : > "$work/rounds"
  for round in $(seq 1 "$rounds"); do
    for db in "${copies[@]}"; do
      psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db TEMPLATE $seed"
    done

    quiesce
    start=$(date +%s.%N)
    psql -X -q "$base/backfill_bench_sql" -f benches/reference.sql
    sql_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')

    rm -rf "$work/journal"
    quiesce
    /usr/bin/time -f '%e %M' -o "$work/time" \
      env DATABASE_URL="$base/backfill_bench_tool" "$bin" --quiet --journal "$work/journal" \
      run --batch-size "${BATCH_SIZE:-2000}" --no-refresh > "$work/summary" || code=$?
    if [ "${code:-0}" -gt 1 ]; then cat "$work/summary" "$work/time" >&2; exit 1; fi
    read -r tool_s rss_kb < <(tail -n 1 "$work/time")
    journal_mb=$(du -sm "$work/journal" | cut -f1)
    # The auditor's check of what the run wrote (DESIGN §6: at least 3x faster).
    quiesce
    /usr/bin/time -f '%e %M' -o "$work/verify-time" \
      env DATABASE_URL="$base/backfill_bench_tool" "$bin" --quiet --journal "$work/journal" \
      journal verify > "$work/verify" || { cat "$work/verify" >&2; exit 1; }
    read -r verify_s verify_rss_kb < <(tail -n 1 "$work/verify-time")

    # The initial-load path (DESIGN §10) on its own copy.
    rm -rf "$work/journal-initial"
    quiesce
    /usr/bin/time -f '%e %M' -o "$work/initial-time" \
      env DATABASE_URL="$base/backfill_bench_initial" "$bin" --quiet --journal "$work/journal-initial" \
      run --initial-load --batch-size "${BATCH_SIZE:-2000}" --no-refresh > "$work/initial-summary" || code=$?
    if [ "${code:-0}" -gt 1 ]; then cat "$work/initial-summary" "$work/initial-time" >&2; exit 1; fi
    read -r initial_s initial_rss_kb < <(tail -n 1 "$work/initial-time")

    a=$(psql -X -At "$base/backfill_bench_sql" -f benches/dump.sql)
    c=$(psql -X -At "$base/backfill_bench_initial" -f benches/dump.sql)
    same_initial=$([ "$a" = "$c" ] && echo "same target rows" || echo "TARGETS DIFFER")
    b=$(psql -X -At "$base/backfill_bench_tool" -f benches/dump.sql)
    same=$([ "$a" = "$b" ] && echo "same target rows" || echo "TARGETS DIFFER")
    awk -v n="$n" -v rows="$rows" -v r="$round" -v s="$sql_s" -v t="$tool_s" -v rss="$rss_kb" -v same="$same" -v jmb="$journal_mb" \
      -v v="$verify_s" -v vrss="$verify_rss_kb" \
      'BEGIN { printf "%-10s %-12s %5s %10.2f %12.0f %10.2f %12.0f %8.2f %11d %9.2f %8.2f  %d MB (%d MB) (%s)\n", n, rows, r, s, rows / s, t, rows / t, t / s, jmb, v, t / v, rss / 1024, vrss / 1024, same }'
    # The initial load's ratio to three places: its goal is 0.3, and 0.296
    # printed as 0.30 (decision 78).
    awk -v n="$n" -v rows="$rows" -v r="$round" -v s="$sql_s" -v t="$initial_s" -v rss="$initial_rss_kb" -v same="$same_initial" \
      'BEGIN { printf "%-10s %-12s %5s %10s %12s %10.2f %12.0f %8.3f %11s %9s %8s  %d MB (%s) <- run --initial-load\n", n, rows, r, "", "", t, rows / t, t / s, "", "", "", rss / 1024, same }'
    if [ "$a" != "$c" ]; then echo "initial load:"; echo "$c"; fi
    if [ "$a" != "$b" ]; then
      echo "reference:"; echo "$a"; echo "tool:"; echo "$b"
    fi
    echo "$sql_s $tool_s $verify_s $initial_s $rss_kb $verify_rss_kb $initial_rss_kb" >> "$work/rounds"
  done
  if [ "$rounds" -gt 1 ]; then
    # Each round's SQL reference and tool ran minutes apart on the same
    # machine: the median of the rounds' ratios, not a ratio of medians.
    col() { awk -v f="$1" '{ print $f }' "$work/rounds" | median; }
    ratio() { awk -v a="$1" -v b="$2" '{ print $a / $b }' "$work/rounds" | median; }
    max() { awk -v f="$1" 'BEGIN { m = 0 } $f > m { m = $f } END { printf "%d", m / 1024 }' "$work/rounds"; }
    printf '%-10s %-12s %5s %10.2f %12s %10.2f %12s %8.2f %11s %9.2f %8.2f  %d MB (%d MB) <- median of %d rounds (max RSS)\n' \
      "$n" "$rows" med "$(col 1)" "" "$(col 2)" "" "$(ratio 2 1)" "" "$(col 3)" "$(ratio 2 3)" "$(max 5)" "$(max 6)" "$rounds"
    printf '%-10s %-12s %5s %10s %12s %10.2f %12s %8.3f %11s %9s %8s  %d MB <- run --initial-load, median of %d rounds (max RSS)\n' \
      "$n" "$rows" med "" "" "$(col 4)" "" "$(ratio 4 1)" "" "" "" "$(max 7)" "$rounds"
  fi
done
for db in "$seed" "${copies[@]}"; do
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done
