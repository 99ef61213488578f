-- backfill's own bookkeeping, outside public: one row per key this tool wrote,
-- committed in the same transaction as the key's target rows.
CREATE SCHEMA IF NOT EXISTS backfill;
CREATE TABLE IF NOT EXISTS backfill.ledger (
  collector_result_id bigint PRIMARY KEY,
  content_hash        bytea NOT NULL,
  journal_id          uuid NOT NULL,
  run_id              uuid NOT NULL,
  applied_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_journal ON backfill.ledger (journal_id);
