//! Where planned events go. `PostgresSink` writes a batch set-based in one
//! transaction with its ledger rows; `NullSink` writes nothing and is what a
//! dry run uses, so that a dry run is the real run minus the writes.

use std::future::Future;

use backfill_core::{MigrationEvent, TargetRows};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{is_connection_error, Error, Result};

/// How to treat a fact already in the target without our ledger row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Leave it (it belongs to the live writer): `skipped`/`existing_in_target`.
    #[default]
    Skip,
    /// Delete it (and its children) and write ours.
    Replace,
}

/// What happened to one key of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Written now.
    Applied,
    /// Already in the target with our ledger row and hash (a previous run
    /// committed it but the journal did not hear): nothing written.
    AlreadyApplied,
    /// A fact that is not ours is there; left alone.
    ExistingInTarget,
    /// The database refused this key; its error.
    Failed(String),
}

/// Rows written per target table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct TableCounts {
    pub metric_facts: u64,
    pub brand_metrics: u64,
    pub brand_sentiment: u64,
    pub competitor_metrics: u64,
    pub competitor_sentiment: u64,
}

impl TableCounts {
    /// The rows one event writes.
    pub fn of(rows: &TargetRows) -> Self {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        Self {
            metric_facts: 1,
            brand_metrics: 1,
            brand_sentiment: u64::from(rows.brand_sentiment.is_some()),
            competitor_metrics: n(rows.competitors.len()),
            competitor_sentiment: n(rows
                .competitors
                .iter()
                .filter(|c| c.sentiment.is_some())
                .count()),
        }
    }

    /// Adds another count.
    pub fn add(&mut self, other: &TableCounts) {
        self.metric_facts += other.metric_facts;
        self.brand_metrics += other.brand_metrics;
        self.brand_sentiment += other.brand_sentiment;
        self.competitor_metrics += other.competitor_metrics;
        self.competitor_sentiment += other.competitor_sentiment;
    }
}

/// The outcome of applying a batch.
#[derive(Clone, Debug, Default)]
pub struct ApplyOutcome {
    /// Per key, in the batch's order.
    pub keys: Vec<(i64, KeyOutcome)>,
    /// Rows written.
    pub tables: TableCounts,
}

/// A destination for planned events.
pub trait Sink {
    /// Applies the `Migrate` events of a batch; every key gets an outcome.
    fn apply(
        &mut self,
        run: Uuid,
        events: &[MigrationEvent],
    ) -> impl Future<Output = Result<ApplyOutcome>> + Send;

    /// True if outcomes are real (recorded in the journal); false for a dry run.
    fn writes(&self) -> bool;
}

/// Writes nothing; reports what a real sink would write if nothing conflicted.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    async fn apply(&mut self, _run: Uuid, events: &[MigrationEvent]) -> Result<ApplyOutcome> {
        let mut outcome = ApplyOutcome::default();
        for event in events {
            if let Some(rows) = event.target_rows() {
                outcome.tables.add(&TableCounts::of(rows));
                outcome
                    .keys
                    .push((event.collector_result_id, KeyOutcome::Applied));
            }
        }
        Ok(outcome)
    }

    fn writes(&self) -> bool {
        false
    }
}

/// What to do with one key, given what the target holds. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Insert its rows.
    Write,
    /// Delete the existing fact (cascade), then insert.
    Replace,
    /// Ours, same hash, already there.
    AlreadyApplied,
    /// Someone else's; leave it.
    ExistingInTarget,
}

/// What the target holds for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Existing {
    /// A `metric_facts` row exists.
    pub has_fact: bool,
    /// The ledger row, if any: (journal id, content hash).
    pub ledger: Option<(Uuid, [u8; 32])>,
}

/// Decides what to do with a key. A fact with our ledger row and our hash is
/// already applied (exactly once, whatever the journal says); any other fact
/// is the live writer's (or another journal's) and is left unless `replace`.
pub fn classify(
    existing: Option<Existing>,
    journal_id: Uuid,
    content_hash: &[u8; 32],
    on_conflict: OnConflict,
) -> Action {
    match existing {
        None
        | Some(Existing {
            has_fact: false, ..
        }) => Action::Write,
        Some(Existing {
            ledger: Some((journal, hash)),
            ..
        }) if journal == journal_id && &hash == content_hash => Action::AlreadyApplied,
        Some(_) if on_conflict == OnConflict::Replace => Action::Replace,
        Some(_) => Action::ExistingInTarget,
    }
}

/// (key, has fact, ledger journal id, ledger content hash).
type ExistingRow = (i64, bool, Option<Uuid>, Option<Vec<u8>>);

/// Writes batches to the target, set-based, one transaction per batch, with
/// one `backfill.ledger` row per key written.
#[derive(Clone, Debug)]
pub struct PostgresSink {
    pool: PgPool,
    journal_id: Uuid,
    on_conflict: OnConflict,
    retries: u32,
}

impl PostgresSink {
    /// A sink for the journal `journal_id`.
    pub fn new(pool: PgPool, journal_id: Uuid, on_conflict: OnConflict) -> Self {
        Self {
            pool,
            journal_id,
            on_conflict,
            retries: 5,
        }
    }

    /// How many times a lost connection is retried (with backoff) per batch.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    async fn try_apply(
        &self,
        run: Uuid,
        events: &[&MigrationEvent],
    ) -> std::result::Result<ApplyOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let keys: Vec<i64> = events.iter().map(|e| e.collector_result_id).collect();
        let existing: Vec<ExistingRow> = sqlx::query_as(
            "SELECT k.id, mf.id IS NOT NULL, l.journal_id, l.content_hash
               FROM unnest($1::int8[]) AS k(id)
               LEFT JOIN metric_facts mf ON mf.collector_result_id = k.id
               LEFT JOIN backfill.ledger l ON l.collector_result_id = k.id
              WHERE mf.id IS NOT NULL OR l.collector_result_id IS NOT NULL",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        let existing: std::collections::HashMap<i64, Existing> = existing
            .into_iter()
            .map(|(key, has_fact, journal, hash)| {
                let ledger = journal.zip(hash.and_then(|h| <[u8; 32]>::try_from(h).ok()));
                (key, Existing { has_fact, ledger })
            })
            .collect();

        let mut outcome = ApplyOutcome::default();
        let mut to_write: Vec<&MigrationEvent> = Vec::with_capacity(events.len());
        let mut to_replace: Vec<i64> = Vec::new();
        for event in events {
            let key = event.collector_result_id;
            match classify(
                existing.get(&key).copied(),
                self.journal_id,
                event.content_hash.as_bytes(),
                self.on_conflict,
            ) {
                Action::Write => to_write.push(event),
                Action::Replace => {
                    to_replace.push(key);
                    to_write.push(event);
                }
                Action::AlreadyApplied => outcome.keys.push((key, KeyOutcome::AlreadyApplied)),
                Action::ExistingInTarget => outcome.keys.push((key, KeyOutcome::ExistingInTarget)),
            }
        }
        if !to_replace.is_empty() {
            sqlx::query("DELETE FROM metric_facts WHERE collector_result_id = ANY($1)")
                .bind(&to_replace)
                .execute(&mut *tx)
                .await?;
        }
        let written = write_rows(&mut tx, &to_write).await?;
        let mut ledger_keys = Vec::with_capacity(written.len());
        let mut ledger_hashes: Vec<Vec<u8>> = Vec::with_capacity(written.len());
        for event in &to_write {
            let key = event.collector_result_id;
            if written.contains(&key) {
                outcome.keys.push((key, KeyOutcome::Applied));
                if let Some(rows) = event.target_rows() {
                    outcome.tables.add(&TableCounts::of(rows));
                }
                ledger_keys.push(key);
                ledger_hashes.push(event.content_hash.as_bytes().to_vec());
            } else {
                // A live writer inserted it between our check and our insert.
                outcome.keys.push((key, KeyOutcome::ExistingInTarget));
            }
        }
        sqlx::query(
            "INSERT INTO backfill.ledger (collector_result_id, content_hash, journal_id, run_id)
             SELECT k, h, $3, $4 FROM unnest($1::int8[], $2::bytea[]) AS u(k, h)
             ON CONFLICT (collector_result_id) DO UPDATE
               SET content_hash = EXCLUDED.content_hash, journal_id = EXCLUDED.journal_id,
                   run_id = EXCLUDED.run_id, applied_at = now()",
        )
        .bind(&ledger_keys)
        .bind(&ledger_hashes)
        .bind(self.journal_id)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn apply_with_retries(
        &self,
        run: Uuid,
        events: &[&MigrationEvent],
    ) -> Result<std::result::Result<ApplyOutcome, sqlx::Error>> {
        let mut attempt = 0u32;
        loop {
            match self.try_apply(run, events).await {
                Ok(outcome) => return Ok(Ok(outcome)),
                Err(err) if is_connection_error(&err) => {
                    attempt += 1;
                    if attempt > self.retries {
                        return Err(Error::ConnectionLost {
                            context: "applying a batch",
                            attempts: attempt,
                            source: err,
                        });
                    }
                    let backoff = std::time::Duration::from_millis(200u64 << attempt.min(6));
                    tokio::time::sleep(backoff).await;
                }
                Err(err) => return Ok(Err(err)),
            }
        }
    }
}

impl Sink for PostgresSink {
    /// Applies the batch; if the database refuses it, splits it in halves
    /// until the refused keys are alone, marks only those failed, and commits
    /// the rest.
    async fn apply(&mut self, run: Uuid, events: &[MigrationEvent]) -> Result<ApplyOutcome> {
        let migrating: Vec<&MigrationEvent> = events
            .iter()
            .filter(|e| e.target_rows().is_some())
            .collect();
        let mut outcome = ApplyOutcome::default();
        let mut work: Vec<&[&MigrationEvent]> = vec![&migrating];
        while let Some(part) = work.pop() {
            if part.is_empty() {
                continue;
            }
            match self.apply_with_retries(run, part).await? {
                Ok(done) => {
                    outcome.keys.extend(done.keys);
                    outcome.tables.add(&done.tables);
                }
                Err(err) if part.len() == 1 => {
                    outcome.keys.push((
                        part[0].collector_result_id,
                        KeyOutcome::Failed(describe(&err)),
                    ));
                }
                Err(_) => {
                    let (left, right) = part.split_at(part.len() / 2);
                    work.push(right);
                    work.push(left);
                }
            }
        }
        Ok(outcome)
    }

    fn writes(&self) -> bool {
        true
    }
}

/// The database's error as an operator needs it: message, code, constraint.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => {
            let mut text = db.message().to_owned();
            if let Some(code) = db.code() {
                text.push_str(&format!(" (SQLSTATE {code}"));
                if let Some(constraint) = db.constraint() {
                    text.push_str(&format!(", constraint {constraint}"));
                }
                text.push(')');
            }
            text
        }
        other => other.to_string(),
    }
}

fn text<T: ToString>(value: Option<T>) -> Option<String> {
    value.map(|v| v.to_string())
}

/// Inserts the rows of `events` (set-based: one statement per table) and
/// returns the keys whose fact was inserted (a fact that appeared meanwhile
/// is left alone, with no children written for it).
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&MigrationEvent],
) -> std::result::Result<std::collections::HashSet<i64>, sqlx::Error> {
    let rows: Vec<&TargetRows> = events.iter().filter_map(|e| e.target_rows()).collect();
    if rows.is_empty() {
        return Ok(Default::default());
    }
    let facts: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type,
                                   topic, collected_at, metadata, created_at)
         SELECT k, b, c, q, ct, t, 'epoch'::timestamptz + ca * interval '1 microsecond', m::jsonb,
                'epoch'::timestamptz + cr * interval '1 microsecond'
           FROM unnest($1::int8[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                       $7::int8[], $8::text[], $9::int8[]) AS u(k, b, c, q, ct, t, ca, m, cr)
         ON CONFLICT (collector_result_id) DO NOTHING
         RETURNING collector_result_id, id",
    )
    .bind(rows.iter().map(|r| r.fact.collector_result_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.brand_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.customer_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.query_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.collector_type.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.topic.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.collected_at.micros()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| text(r.fact.metadata.as_ref())).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.created_at.micros()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let ids: std::collections::HashMap<i64, i64> = facts.into_iter().collect();
    let written: Vec<(i64, &TargetRows)> = rows
        .iter()
        .filter_map(|r| ids.get(&r.fact.collector_result_id).map(|id| (*id, *r)))
        .collect();

    sqlx::query(
        "INSERT INTO brand_metrics (metric_fact_id, visibility_index, share_of_answers, total_mentions,
                                    product_mentions, first_position, has_presence)
         SELECT f, v::numeric(5,2), s::numeric(5,2), tm, pm, fp, hp
           FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int4[], $7::bool[])
             AS u(f, v, s, tm, pm, fp, hp)",
    )
    .bind(written.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| text(r.brand_metrics.visibility_index)).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| text(r.brand_metrics.share_of_answers)).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| r.brand_metrics.total_mentions).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| r.brand_metrics.product_mentions).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| r.brand_metrics.first_position).collect::<Vec<_>>())
    .bind(written.iter().map(|(_, r)| r.brand_metrics.has_presence).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;

    let sentiments: Vec<(i64, &backfill_core::Sentiment)> = written
        .iter()
        .filter_map(|(id, r)| r.brand_sentiment.as_ref().map(|s| (*id, s)))
        .collect();
    if !sentiments.is_empty() {
        sqlx::query(
            "INSERT INTO brand_sentiment (metric_fact_id, sentiment_label, sentiment_score,
                                          positive_sentences, negative_sentences)
             SELECT f, l, s::numeric(5,2), p::jsonb, n::jsonb
               FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(f, l, s, p, n)",
        )
        .bind(sentiments.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(sentiments.iter().map(|(_, s)| s.label.as_str()).collect::<Vec<_>>())
        .bind(sentiments.iter().map(|(_, s)| s.score.to_string()).collect::<Vec<_>>())
        .bind(sentiments.iter().map(|(_, s)| s.positive_sentences.as_str()).collect::<Vec<_>>())
        .bind(sentiments.iter().map(|(_, s)| s.negative_sentences.as_str()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }

    let competitors: Vec<(i64, &backfill_core::CompetitorRows)> = written
        .iter()
        .flat_map(|(id, r)| r.competitors.iter().map(move |c| (*id, c)))
        .collect();
    if !competitors.is_empty() {
        sqlx::query(
            "INSERT INTO competitor_metrics (metric_fact_id, competitor_id, visibility_index, share_of_answers,
                                             total_mentions, product_mentions, first_position, has_presence)
             SELECT f, c, v::numeric(5,2), s::numeric(5,2), tm, pm, fp, hp
               FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::int4[], $6::int4[],
                           $7::int4[], $8::bool[]) AS u(f, c, v, s, tm, pm, fp, hp)",
        )
        .bind(competitors.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| c.competitor_id).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| text(c.metrics.visibility_index)).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| text(c.metrics.share_of_answers)).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| c.metrics.total_mentions).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| c.metrics.product_mentions).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| c.metrics.first_position).collect::<Vec<_>>())
        .bind(competitors.iter().map(|(_, c)| c.metrics.has_presence).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        let with_sentiment: Vec<(i64, Uuid, &backfill_core::Sentiment)> = competitors
            .iter()
            .filter_map(|(id, c)| c.sentiment.as_ref().map(|s| (*id, c.competitor_id, s)))
            .collect();
        if !with_sentiment.is_empty() {
            sqlx::query(
                "INSERT INTO competitor_sentiment (metric_fact_id, competitor_id, sentiment_label, sentiment_score,
                                                   positive_sentences, negative_sentences)
                 SELECT f, c, l, s::numeric(5,2), p::jsonb, n::jsonb
                   FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                     AS u(f, c, l, s, p, n)",
            )
            .bind(with_sentiment.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
            .bind(with_sentiment.iter().map(|(_, c, _)| *c).collect::<Vec<_>>())
            .bind(with_sentiment.iter().map(|(_, _, s)| s.label.as_str()).collect::<Vec<_>>())
            .bind(with_sentiment.iter().map(|(_, _, s)| s.score.to_string()).collect::<Vec<_>>())
            .bind(with_sentiment.iter().map(|(_, _, s)| s.positive_sentences.as_str()).collect::<Vec<_>>())
            .bind(with_sentiment.iter().map(|(_, _, s)| s.negative_sentences.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(ids.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Uuid = Uuid::from_u128(1);
    const HASH: [u8; 32] = [7; 32];

    #[test]
    fn classify_writes_when_nothing_is_there() {
        assert_eq!(classify(None, OURS, &HASH, OnConflict::Skip), Action::Write);
        let stale_ledger = Existing {
            has_fact: false,
            ledger: Some((OURS, HASH)),
        };
        assert_eq!(
            classify(Some(stale_ledger), OURS, &HASH, OnConflict::Skip),
            Action::Write
        );
    }

    #[test]
    fn classify_our_ledger_row_with_our_hash_is_already_applied() {
        let ours = Existing {
            has_fact: true,
            ledger: Some((OURS, HASH)),
        };
        assert_eq!(
            classify(Some(ours), OURS, &HASH, OnConflict::Skip),
            Action::AlreadyApplied
        );
        assert_eq!(
            classify(Some(ours), OURS, &HASH, OnConflict::Replace),
            Action::AlreadyApplied
        );
    }

    #[test]
    fn classify_someone_elses_fact_is_left_unless_replace() {
        for other in [
            Existing {
                has_fact: true,
                ledger: None,
            },
            Existing {
                has_fact: true,
                ledger: Some((Uuid::from_u128(2), HASH)),
            },
            Existing {
                has_fact: true,
                ledger: Some((OURS, [8; 32])),
            },
        ] {
            assert_eq!(
                classify(Some(other), OURS, &HASH, OnConflict::Skip),
                Action::ExistingInTarget
            );
            assert_eq!(
                classify(Some(other), OURS, &HASH, OnConflict::Replace),
                Action::Replace
            );
        }
    }
}
