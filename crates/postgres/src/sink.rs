//! The Postgres target: a batch is one transaction — a set-based look-up of
//! existing facts and ledger rows, one `INSERT … SELECT FROM unnest(…)` per
//! table, the `backfill.ledger` rows, and the proof that this process still
//! holds the applier lock — committed together or not at all.
//!
//! Why the sink classifies errors: only it knows Postgres. A lost connection
//! or a timeout is retried here (bounded, with backoff); an error caused by
//! the rows is reported as a refusal, so the engine isolates the keys that
//! carry it; anything about the target as a whole (a privilege, a missing
//! table, a full disk) stops the run instead of failing every key one by one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use backfill_core::{MigrationEvent, TargetRows};
use backfill_engine::{
    classify, Action, ApplyError, ApplyOutcome, Existing, KeyOutcome, OnConflict, Sink, TableCounts,
};
use backfill_journal::{JournalId, RunId};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::copy::CopyData;
use crate::lock::{LockScope, TargetLock};
use crate::timestamp::PgTimestamp;
use crate::{fault, retry_cause, Error, Fault, Result};

/// Bounds on how long a batch may wait: it never queues unbounded behind the
/// application's locks, nor holds its own for long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `lock_timeout` of every batch transaction.
    pub lock: Duration,
    /// `statement_timeout` of every batch transaction.
    pub statement: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            lock: Duration::from_secs(2),
            statement: Duration::from_secs(60),
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// (key, has fact, ledger journal id, ledger content hash).
type ExistingRow = (i64, bool, Option<Uuid>, Option<Vec<u8>>);

/// Why one attempt at a batch failed.
enum Attempt {
    Db(sqlx::Error),
    Lock(Error),
}

impl From<sqlx::Error> for Attempt {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err)
    }
}

/// Writes batches to the target, set-based, one transaction per batch, with
/// one `backfill.ledger` row per key written, under the applier lock.
pub struct PostgresSink {
    pool: PgPool,
    journal_id: JournalId,
    scope: LockScope,
    retries: u32,
    timeouts: Timeouts,
    /// Shared with the sink's forks: one lock for every connection.
    lock: Arc<tokio::sync::Mutex<Option<TargetLock>>>,
    on_retry: Option<RetryNotice>,
    initial_load: bool,
}

/// Told before a batch is retried: (cause, attempt, of attempts, wait).
pub type RetryNotice = std::sync::Arc<dyn Fn(&str, u32, u32, Duration) + Send + Sync>;

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("journal_id", &self.journal_id)
            .field("scope", &self.scope)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// A sink for the journal `journal_id`, holding the whole target's lock.
    pub fn new(pool: PgPool, journal_id: JournalId) -> Self {
        Self {
            pool,
            journal_id,
            scope: LockScope::Whole,
            retries: 5,
            timeouts: Timeouts::default(),
            lock: Arc::default(),
            on_retry: None,
            initial_load: false,
        }
    }

    /// Loads into empty tables with their constraints deferred (DESIGN §10,
    /// [`crate::initial`]): `begin` refuses unless the tables are empty,
    /// records and drops the constraints; `finish` re-creates them.
    pub fn initial_load(mut self) -> Self {
        self.initial_load = true;
        self
    }

    /// Holds the lock of `scope` instead of the whole target's.
    pub fn with_scope(mut self, scope: LockScope) -> Self {
        self.scope = scope;
        self
    }

    /// How many times a lost connection or a timeout is retried (with
    /// backoff) per batch.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The lock and statement timeouts of every batch.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Tells `notice` before each retry (what the run waits for, and when it
    /// tries again).
    pub fn on_retry(mut self, notice: RetryNotice) -> Self {
        self.on_retry = Some(notice);
        self
    }

    /// Takes the applier lock if not held yet.
    pub async fn lock(&mut self) -> Result<()> {
        let mut lock = self.lock.lock().await;
        if lock.is_none() {
            *lock = Some(TargetLock::acquire(&self.pool, self.scope).await?);
        }
        Ok(())
    }

    /// Releases the applier lock.
    pub async fn unlock(&mut self) {
        let held = self.lock.lock().await.take();
        if let Some(lock) = held {
            lock.release().await;
        }
    }

    async fn try_apply(
        &mut self,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> std::result::Result<ApplyOutcome, Attempt> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true),
                    set_config('backfill.initial_load', $3, true)",
        )
        .bind(millis(self.timeouts.lock))
        .bind(millis(self.timeouts.statement))
        .bind(if self.initial_load { "on" } else { "off" })
        .execute(&mut *tx)
        .await?;
        let keys: Vec<i64> = events.iter().map(|e| e.collector_result_id).collect();
        // During an initial load only this run writes the (guarded,
        // initially empty) tables, and its facts have ledger rows in the
        // same transactions: a ledger row of this run says the fact exists,
        // without a look-up on metric_facts, whose unique index is absent.
        // Ledger rows of earlier runs are stale (the tables were empty when
        // the load began): they prove nothing, and are overwritten. They are
        // read here too (the second column says whether the row is this
        // run's), so that the batch deletes only the rows it found.
        let existing_sql = if self.initial_load {
            "SELECT l.collector_result_id, l.run_id = $2, l.journal_id, l.content_hash
               FROM backfill.ledger l WHERE l.collector_result_id = ANY($1)"
        } else {
            "SELECT k.id, mf.id IS NOT NULL, l.journal_id, l.content_hash
               FROM unnest($1::int8[]) AS k(id)
               LEFT JOIN metric_facts mf ON mf.collector_result_id = k.id
               LEFT JOIN backfill.ledger l ON l.collector_result_id = k.id
              WHERE mf.id IS NOT NULL OR l.collector_result_id IS NOT NULL"
        };
        let mut existing_query = sqlx::query_as(existing_sql).bind(&keys);
        if self.initial_load {
            existing_query = existing_query.bind(run.0);
        }
        let mut existing: Vec<ExistingRow> = existing_query.fetch_all(&mut *tx).await?;
        // The keys that have a ledger row (an initial load's `COPY` of the
        // ledger must delete it first): only this run's say the fact exists.
        let mut in_ledger: HashSet<i64> = HashSet::new();
        if self.initial_load {
            in_ledger = existing.iter().map(|(key, _, _, _)| *key).collect();
            existing.retain(|(_, this_run, _, _)| *this_run);
        }
        let existing: HashMap<i64, Existing> = existing
            .into_iter()
            .map(|(key, has_fact, journal, hash)| {
                let ledger = journal
                    .map(JournalId)
                    .zip(hash.and_then(|h| <[u8; 32]>::try_from(h).ok()));
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
                on_conflict,
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
        // What a replace deletes is journaled by its hash: read it first.
        let mut replaced: HashMap<i64, Option<backfill_core::Digest>> = HashMap::new();
        if !to_replace.is_empty() {
            let ours: Vec<i64> = to_replace
                .iter()
                .copied()
                .filter(|k| {
                    existing
                        .get(k)
                        .and_then(|e| e.ledger)
                        .is_none_or(|(journal, _)| journal != self.journal_id)
                })
                .collect();
            let read = crate::audit::read_back(&mut tx, &ours)
                .await
                .map_err(|e| match e {
                    Error::Database { source, .. } | Error::ConnectionLost { source, .. } => {
                        Attempt::Db(source)
                    }
                    other => Attempt::Lock(other),
                })?;
            for key in ours {
                let hash = read.get(&key).and_then(|r| {
                    r.rows.as_ref().and_then(|rows| {
                        backfill_core::current_content_hash(&backfill_core::Outcome::Migrate(
                            rows.clone(),
                        ))
                        .ok()
                    })
                });
                replaced.insert(key, hash);
            }
            if self.initial_load {
                // The cascading foreign keys are absent: delete the children
                // as they would.
                for child in [
                    "brand_metrics",
                    "brand_sentiment",
                    "competitor_metrics",
                    "competitor_sentiment",
                ] {
                    sqlx::query(&format!(
                        "DELETE FROM {child} WHERE metric_fact_id IN
                           (SELECT id FROM metric_facts WHERE collector_result_id = ANY($1))"
                    ))
                    .bind(&to_replace)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query("DELETE FROM metric_facts WHERE collector_result_id = ANY($1)")
                .bind(&to_replace)
                .execute(&mut *tx)
                .await?;
        }
        if self.initial_load {
            // The foreign keys that would refuse a key are absent: check its
            // references set-based, so that it fails alone.
            let facts: Vec<(i64, Uuid, Uuid)> = to_write
                .iter()
                .filter_map(|e| e.target_rows())
                .map(|r| (r.fact.collector_result_id, r.fact.brand_id, r.fact.query_id))
                .collect();
            let competitors: Vec<(i64, Uuid)> = to_write
                .iter()
                .filter_map(|e| e.target_rows())
                .flat_map(|r| {
                    r.competitors
                        .iter()
                        .map(|c| (r.fact.collector_result_id, c.competitor_id))
                })
                .collect();
            let missing = crate::initial::missing_references(&mut tx, &facts, &competitors).await?;
            if !missing.is_empty() {
                let mut why: BTreeMap<i64, Vec<String>> = BTreeMap::new();
                for (key, text) in missing {
                    why.entry(key).or_default().push(text);
                }
                to_write.retain(|e| !why.contains_key(&e.collector_result_id));
                for (key, texts) in why {
                    outcome.keys.push((
                        key,
                        KeyOutcome::Failed(format!(
                            "a reference is missing in the target: {}",
                            texts.join("; ")
                        )),
                    ));
                }
            }
        }
        let written = if self.initial_load {
            copy_rows(&mut tx, &to_write, &self.lock).await?
        } else {
            write_rows(&mut tx, &to_write).await?
        };
        let mut ledger_keys = Vec::with_capacity(written.len());
        let mut ledger_hashes: Vec<Vec<u8>> = Vec::with_capacity(written.len());
        for event in &to_write {
            let key = event.collector_result_id;
            if written.contains(&key) {
                outcome.keys.push(match replaced.get(&key) {
                    Some(previous) => (
                        key,
                        KeyOutcome::Replaced {
                            previous: *previous,
                        },
                    ),
                    None => (key, KeyOutcome::Applied),
                });
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
        if self.initial_load {
            // The same rows as the upsert below, by COPY (half its cost):
            // a written key's ledger row, if it has one, was read above and
            // is replaced. Usually none has (stale rows of earlier runs:
            // decision 78), and then there is no statement.
            let replaced_rows: Vec<i64> = ledger_keys
                .iter()
                .copied()
                .filter(|key| in_ledger.contains(key))
                .collect();
            if !replaced_rows.is_empty() {
                sqlx::query("DELETE FROM backfill.ledger WHERE collector_result_id = ANY($1)")
                    .bind(&replaced_rows)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut ledger = CopyData::new(4);
            for (key, hash) in ledger_keys.iter().zip(&ledger_hashes) {
                ledger.row();
                ledger.value(key)?;
                ledger.value(hash)?;
                ledger.value(&self.journal_id.0)?;
                ledger.value(&run.0)?;
            }
            ledger
                .send(
                    &mut tx,
                    "COPY backfill.ledger (collector_result_id, content_hash, journal_id, run_id)
                       FROM STDIN (FORMAT binary)",
                )
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO backfill.ledger (collector_result_id, content_hash, journal_id, run_id)
                 SELECT k, h, $3, $4 FROM unnest($1::int8[], $2::bytea[]) AS u(k, h)
                 ON CONFLICT (collector_result_id) DO UPDATE
                   SET content_hash = EXCLUDED.content_hash, journal_id = EXCLUDED.journal_id,
                       run_id = EXCLUDED.run_id, applied_at = now()",
            )
            .bind(&ledger_keys)
            .bind(&ledger_hashes)
            .bind(self.journal_id.0)
            .bind(run.0)
            .execute(&mut *tx)
            .await?;
        }
        // Last, so that the lock is proven held as close to the commit as
        // possible: a batch never commits beside another applier's.
        // The slot is shared with forks: empty means the lock was let go
        // meanwhile, and then this batch must not commit.
        match self.lock.lock().await.as_mut() {
            Some(lock) => lock.check(&mut tx).await.map_err(|e| match e {
                Error::Database { source, .. } | Error::ConnectionLost { source, .. } => {
                    Attempt::Db(source)
                }
                other => Attempt::Lock(other),
            })?,
            None => {
                return Err(Attempt::Lock(Error::LockLost {
                    key: self.scope.exclusive_key(),
                }))
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

impl Sink for PostgresSink {
    async fn begin(&mut self) -> std::result::Result<(), backfill_engine::Error> {
        self.lock().await?;
        if self.initial_load {
            // Anything left by an earlier load first, then the emptiness
            // check on complete tables.
            crate::initial::restore(&self.pool, true).await?;
            crate::initial::require_empty(&self.pool).await?;
            crate::initial::require_fact_ids(&self.pool).await?;
            // (checked again inside, under the guards' table locks)
            crate::initial::defer(&self.pool).await?;
        }
        Ok(())
    }

    /// One transaction; lost connections and timeouts are retried with
    /// backoff, then the run stops (resumable).
    async fn apply(
        &mut self,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> std::result::Result<ApplyOutcome, ApplyError> {
        let stop = |e: Error| ApplyError::Stop(e.into());
        self.lock().await.map_err(stop)?;
        let mut attempt = 0u32;
        let mut retries: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            let err = match self.try_apply(run, events, on_conflict).await {
                Ok(mut outcome) => {
                    outcome.retries = retries;
                    return Ok(outcome);
                }
                Err(Attempt::Lock(err)) => return Err(stop(err)),
                Err(Attempt::Db(err)) => err,
            };
            match fault(&err) {
                Fault::KeyData => return Err(ApplyError::Refused(describe(&err))),
                Fault::Target => {
                    return Err(stop(Error::Database {
                        context: "applying a batch",
                        source: err,
                    }))
                }
                kind @ (Fault::Connection | Fault::Transient) => {
                    attempt += 1;
                    let cause = retry_cause(&err);
                    if attempt > self.retries {
                        let context = "applying a batch";
                        return Err(stop(if kind == Fault::Connection {
                            Error::ConnectionLost {
                                context,
                                attempts: attempt,
                                source: err,
                            }
                        } else {
                            Error::RetriesExhausted {
                                context,
                                attempts: attempt,
                                cause,
                                source: err,
                            }
                        }));
                    }
                    *retries.entry(cause.to_owned()).or_insert(0) += 1;
                    let backoff = Duration::from_millis(200u64 << attempt.min(6));
                    if let Some(notice) = &self.on_retry {
                        notice(cause, attempt, self.retries, backoff);
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    async fn finish(&mut self) -> std::result::Result<(), backfill_engine::Error> {
        let held = self.lock.lock().await.is_some();
        let restored = if self.initial_load && held {
            crate::initial::restore(&self.pool, true).await.err()
        } else {
            None
        };
        self.unlock().await;
        restored.map_or(Ok(()), |e| Err(e.into()))
    }

    fn writes(&self) -> bool {
        true
    }

    /// Another connection from the pool under the same lock (checked in
    /// each of its transactions as in the original's).
    fn fork(&self) -> Option<Self> {
        Some(Self {
            pool: self.pool.clone(),
            journal_id: self.journal_id,
            scope: self.scope,
            retries: self.retries,
            timeouts: self.timeouts,
            lock: Arc::clone(&self.lock),
            on_retry: self.on_retry.clone(),
            initial_load: self.initial_load,
        })
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
         SELECT k, b, c, q, ct, t, ca, m::jsonb, cr
           FROM unnest($1::int8[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                       $7::timestamptz[], $8::text[], $9::timestamptz[]) AS u(k, b, c, q, ct, t, ca, m, cr)
         ON CONFLICT (collector_result_id) DO NOTHING
         RETURNING collector_result_id, id",
    )
    .bind(rows.iter().map(|r| r.fact.collector_result_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.brand_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.customer_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.query_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.collector_type.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fact.topic.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| PgTimestamp(r.fact.collected_at)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| text(r.fact.metadata.as_ref())).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| PgTimestamp(r.fact.created_at)).collect::<Vec<_>>())
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

/// `Numeric52` as sqlx encodes a `numeric` (scale 2, as the columns').
fn numeric(value: backfill_core::Numeric52) -> rust_decimal::Decimal {
    rust_decimal::Decimal::new(i64::from(value.hundredths()), 2)
}

/// The five tables, in the order `copy_rows` takes their id blocks, with
/// the columns it writes after `id`.
const COPIED: [(&str, &str); 5] = [
    (
        "metric_facts",
        "collector_result_id, brand_id, customer_id, query_id, collector_type, topic, collected_at, \
         metadata, created_at",
    ),
    (
        "brand_metrics",
        "metric_fact_id, visibility_index, share_of_answers, total_mentions, product_mentions, \
         first_position, has_presence",
    ),
    (
        "brand_sentiment",
        "metric_fact_id, sentiment_label, sentiment_score, positive_sentences, negative_sentences",
    ),
    (
        "competitor_metrics",
        "metric_fact_id, competitor_id, visibility_index, share_of_answers, total_mentions, \
         product_mentions, first_position, has_presence",
    ),
    (
        "competitor_sentiment",
        "metric_fact_id, competitor_id, sentiment_label, sentiment_score, positive_sentences, \
         negative_sentences",
    ),
];

/// The initial load's writes: binary COPY into the five tables (crate::copy,
/// decision 64). Nothing else writes them (the guard) and their unique
/// constraints are deferred, so every fact is written; its id is taken from
/// the sequence first, so that the children can name it without a
/// `RETURNING`, and so are the children's (decision 74).
async fn copy_rows(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&MigrationEvent],
    serial: &tokio::sync::Mutex<Option<TargetLock>>,
) -> std::result::Result<std::collections::HashSet<i64>, sqlx::Error> {
    let rows: Vec<&TargetRows> = events.iter().filter_map(|e| e.target_rows()).collect();
    if rows.is_empty() {
        return Ok(Default::default());
    }
    // Ids in blocks, one statement for the five tables: a `nextval` per row
    // (the children's column default) was 3 % of the server's work in a
    // load, and once per fact cost 25 ms per batch of 2,000 (as much as the
    // COPY of the facts). `setval` is not atomic with the `nextval` before
    // it, so this process's appliers take turns (the mutex their lock slot
    // is in); no other session writes the five tables during the load (the
    // guard), and the primary keys, validated when the load restores them,
    // would refuse an id given twice. A table whose `id` default is not
    // `nextval` of its own serial sequence with increment 1 gets no block:
    // its column default gives its ids, as online. `metric_facts` needs one
    // (its ids link the children).
    let sentiments = |r: &&TargetRows| {
        r.competitors
            .iter()
            .filter(|c| c.sentiment.is_some())
            .count()
    };
    let counts = [
        rows.len(),
        rows.len(),
        rows.iter().filter(|r| r.brand_sentiment.is_some()).count(),
        rows.iter().map(|r| r.competitors.len()).sum(),
        rows.iter().map(sentiments).sum(),
    ];
    let counts: Vec<i64> = counts
        .iter()
        .map(|&n| i64::try_from(n))
        .collect::<Result<_, _>>()
        .map_err(|_| sqlx::Error::Protocol("a batch of more than 2^63 rows".into()))?;
    let lasts: Vec<(String, Option<i64>)> = {
        let _turn = serial.lock().await;
        sqlx::query_as(&format!(
            "SELECT u.t, CASE WHEN q.own THEN setval(q.s, nextval(q.s) + u.n - 1) END
               FROM unnest($1::text[], $2::int8[]) AS u(t, n)
               {}
              WHERE u.n > 0",
            crate::initial::ID_SEQUENCE
        ))
        .bind(COPIED.map(|(table, _)| table.to_owned()).to_vec())
        .bind(&counts)
        .fetch_all(&mut **tx)
        .await?
    };
    // The next id of each table's block (`None`: the column default).
    let mut next: [Option<i64>; 5] = [None; 5];
    for ((slot, (table, _)), n) in next.iter_mut().zip(COPIED).zip(&counts) {
        if let Some(last) = lasts
            .iter()
            .find(|(t, _)| t == table)
            .and_then(|(_, last)| *last)
        {
            *slot = Some(last - n + 1);
        }
    }
    if next[0].is_none() && counts[0] > 0 {
        // `begin` checked it (`initial::require_fact_ids`); changed since.
        return Err(sqlx::Error::Protocol(
            "metric_facts.id does not take its values from its own sequence (nextval, increment 1), \
             which the initial load needs to link the child rows: load without --initial-load"
                .into(),
        ));
    }
    let has_block = next.map(|n| n.is_some());
    let first_fact = next[0].unwrap_or_default();
    // Writes table `i`'s next id, if it has a block.
    let mut id_of = |data: &mut CopyData, i: usize| -> Result<(), sqlx::Error> {
        if let Some(id) = next[i].as_mut() {
            data.value(&*id)?;
            *id += 1;
        }
        Ok(())
    };
    // Table `i`'s COPY data and statement: `id` first if it has a block.
    let copy = |i: usize| {
        let (table, rest) = COPIED[i];
        let id = if has_block[i] { "id, " } else { "" };
        let fields = rest.split(", ").count() + usize::from(has_block[i]);
        (
            CopyData::new(i16::try_from(fields).unwrap_or(i16::MAX)),
            format!("COPY {table} ({id}{rest}) FROM STDIN (FORMAT binary)"),
        )
    };
    let (mut facts, facts_sql) = copy(0);
    let (mut brand, brand_sql) = copy(1);
    let (mut brand_sentiment, brand_sentiment_sql) = copy(2);
    let (mut competitors, competitors_sql) = copy(3);
    let (mut competitor_sentiment, competitor_sentiment_sql) = copy(4);
    let (mut any_brand_sentiment, mut any_competitor, mut any_competitor_sentiment) =
        (false, false, false);
    let metrics = |data: &mut CopyData, m: &backfill_core::Metrics| {
        data.value(&m.visibility_index.map(numeric))?;
        data.value(&m.share_of_answers.map(numeric))?;
        data.value(&m.total_mentions)?;
        data.value(&m.product_mentions)?;
        data.value(&m.first_position)?;
        data.value(&m.has_presence)
    };
    let sentiment = |data: &mut CopyData, s: &backfill_core::Sentiment| {
        data.value(&s.label.as_str())?;
        data.value(&numeric(s.score))?;
        data.jsonb(Some(s.positive_sentences.as_str()))?;
        data.jsonb(Some(s.negative_sentences.as_str()))
    };
    for (fact_id, r) in (first_fact..).zip(&rows) {
        let id = &fact_id;
        let f = &r.fact;
        facts.row();
        facts.value(id)?;
        facts.value(&f.collector_result_id)?;
        facts.value(&f.brand_id)?;
        facts.value(&f.customer_id)?;
        facts.value(&f.query_id)?;
        facts.value(&f.collector_type.as_str())?;
        facts.value(&f.topic.as_deref())?;
        facts.value(&PgTimestamp(f.collected_at))?;
        facts.jsonb(f.metadata.as_ref().map(|m| m.as_str()))?;
        facts.value(&PgTimestamp(f.created_at))?;

        brand.row();
        id_of(&mut brand, 1)?;
        brand.value(id)?;
        metrics(&mut brand, &r.brand_metrics)?;
        if let Some(s) = &r.brand_sentiment {
            any_brand_sentiment = true;
            brand_sentiment.row();
            id_of(&mut brand_sentiment, 2)?;
            brand_sentiment.value(id)?;
            sentiment(&mut brand_sentiment, s)?;
        }
        for c in &r.competitors {
            any_competitor = true;
            competitors.row();
            id_of(&mut competitors, 3)?;
            competitors.value(id)?;
            competitors.value(&c.competitor_id)?;
            metrics(&mut competitors, &c.metrics)?;
            if let Some(s) = &c.sentiment {
                any_competitor_sentiment = true;
                competitor_sentiment.row();
                id_of(&mut competitor_sentiment, 4)?;
                competitor_sentiment.value(id)?;
                competitor_sentiment.value(&c.competitor_id)?;
                sentiment(&mut competitor_sentiment, s)?;
            }
        }
    }
    facts.send(tx, &facts_sql).await?;
    brand.send(tx, &brand_sql).await?;
    if any_brand_sentiment {
        brand_sentiment.send(tx, &brand_sentiment_sql).await?;
    }
    if any_competitor {
        competitors.send(tx, &competitors_sql).await?;
    }
    if any_competitor_sentiment {
        competitor_sentiment
            .send(tx, &competitor_sentiment_sql)
            .await?;
    }
    Ok(rows.iter().map(|r| r.fact.collector_result_id).collect())
}
