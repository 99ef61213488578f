//! Reading the target back: `journal verify` proves, key by key, that what
//! the journal says was written is what the target holds (and what the ledger
//! says); `rollback` removes exactly what this journal wrote and still hashes
//! as written.
//!
//! The journal, the ledger and the target are three independent records;
//! each check compares two of them, so that no single edited record can make
//! the others agree with it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use backfill_core::{
    current_content_hash, CompetitorRows, Digest, Fact, Json, Metrics, Numeric52, Outcome,
    Sentiment, SentimentLabel, TargetRows, Timestamp,
};
use backfill_journal::{Batch, Journal, JournalId, Record, RunId, State};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::ranges::id_ranges;
use crate::{db, Result};

/// What the target holds for one key.
#[derive(Clone, Debug)]
pub struct ReadBack {
    /// `metric_facts.id`.
    pub fact_id: i64,
    /// The rows rebuilt in canonical form (`None` if a required row, such as
    /// brand_metrics, is gone or a value cannot be read).
    pub rows: Option<TargetRows>,
    /// Why `rows` is `None`.
    pub problem: Option<String>,
}

/// A ledger row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Which journal wrote the key.
    pub journal_id: JournalId,
    /// The content hash it recorded.
    pub content_hash: Option<Digest>,
}

fn micros(column: &str) -> String {
    format!("(extract(epoch from {column}) * 1000000)::int8")
}

fn numeric(text: Option<String>, what: &str) -> std::result::Result<Option<Numeric52>, String> {
    text.map(|t| {
        t.parse::<Numeric52>()
            .map_err(|_| format!("{what} = {t} is not numeric(5,2)"))
    })
    .transpose()
}

fn label(text: Option<String>, what: &str) -> std::result::Result<SentimentLabel, String> {
    let text = text.ok_or_else(|| format!("{what} is NULL"))?;
    SentimentLabel::normalize(&text)
        .filter(|l| l.as_str() == text)
        .ok_or_else(|| format!("{what} = {text:?}"))
}

fn sentiment(row: &sqlx::postgres::PgRow, table: &str) -> std::result::Result<Sentiment, String> {
    let get = |i: usize| -> std::result::Result<Option<String>, String> {
        row.try_get(i).map_err(|e| e.to_string())
    };
    Ok(Sentiment {
        label: label(get(2)?, &format!("{table}.sentiment_label"))?,
        score: numeric(get(3)?, &format!("{table}.sentiment_score"))?
            .ok_or_else(|| format!("{table}.sentiment_score is NULL"))?,
        positive_sentences: Json(get(4)?.unwrap_or_else(|| "null".into())),
        negative_sentences: Json(get(5)?.unwrap_or_else(|| "null".into())),
    })
}

fn metrics(
    row: &sqlx::postgres::PgRow,
    first: usize,
    table: &str,
) -> std::result::Result<Metrics, String> {
    let e = |e: sqlx::Error| e.to_string();
    Ok(Metrics {
        visibility_index: numeric(
            row.try_get(first).map_err(e)?,
            &format!("{table}.visibility_index"),
        )?,
        share_of_answers: numeric(
            row.try_get(first + 1).map_err(e)?,
            &format!("{table}.share_of_answers"),
        )?,
        total_mentions: row.try_get(first + 2).map_err(e)?,
        product_mentions: row.try_get(first + 3).map_err(e)?,
        first_position: row.try_get(first + 4).map_err(e)?,
        has_presence: row.try_get(first + 5).map_err(e)?,
    })
}

/// Reads the target rows of `keys` back (five set-based queries over
/// [`id_ranges`](crate::ranges::id_ranges)) and rebuilds them in canonical form. Keys without a fact
/// are absent.
pub async fn read_back(
    conn: &mut sqlx::PgConnection,
    keys: &[i64],
) -> Result<HashMap<i64, ReadBack>> {
    let sql = format!(
        "SELECT m.id, m.collector_result_id, m.brand_id, m.customer_id, m.query_id, m.collector_type, m.topic,
                {}, m.metadata::text, {}
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN metric_facts m ON m.collector_result_id BETWEEN r.lo AND r.hi",
        micros("m.collected_at"),
        micros("m.created_at")
    );
    let wanted: std::collections::HashSet<i64> = keys.iter().copied().collect();
    let (lows, highs) = id_ranges(keys.iter().copied());
    let facts = sqlx::query(&sql)
        .bind(&lows)
        .bind(&highs)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("reading metric_facts back"))?;
    let mut by_fact: HashMap<i64, (i64, Fact)> = HashMap::new();
    for row in &facts {
        let key: i64 = row.try_get(1).map_err(db("decoding metric_facts"))?;
        if !wanted.contains(&key) {
            continue;
        }
        let e = db("decoding metric_facts");
        let fact_id: i64 = row.try_get(0).map_err(db("decoding metric_facts"))?;
        let fact = Fact {
            collector_result_id: row.try_get(1).map_err(db("decoding metric_facts"))?,
            brand_id: row.try_get(2).map_err(db("decoding metric_facts"))?,
            customer_id: row.try_get(3).map_err(db("decoding metric_facts"))?,
            query_id: row.try_get(4).map_err(db("decoding metric_facts"))?,
            collector_type: row.try_get(5).map_err(db("decoding metric_facts"))?,
            topic: row.try_get(6).map_err(db("decoding metric_facts"))?,
            collected_at: Timestamp(row.try_get(7).map_err(db("decoding metric_facts"))?),
            metadata: row
                .try_get::<Option<String>, _>(8)
                .map_err(db("decoding metric_facts"))?
                .map(Json),
            created_at: Timestamp(row.try_get(9).map_err(e)?),
        };
        by_fact.insert(fact_id, (fact.collector_result_id, fact));
    }
    let (lows, highs) = id_ranges(by_fact.keys().copied());
    // A child row of a fact outside this chunk (inside a range's gap).
    let other = |id: &i64| !by_fact.contains_key(id);

    let mut brand_metrics: HashMap<i64, std::result::Result<Metrics, String>> = HashMap::new();
    for row in sqlx::query(
        "SELECT c.metric_fact_id, c.visibility_index::text, c.share_of_answers::text, c.total_mentions,
                c.product_mentions, c.first_position, c.has_presence
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN brand_metrics c ON c.metric_fact_id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading brand_metrics back"))?
    {
        let id: i64 = row.try_get(0).map_err(db("decoding brand_metrics"))?;
        if other(&id) {
            continue;
        }
        brand_metrics.insert(id, metrics(&row, 1, "brand_metrics"));
    }
    let mut brand_sentiment: HashMap<i64, std::result::Result<Sentiment, String>> = HashMap::new();
    for row in sqlx::query(
        "SELECT c.metric_fact_id, NULL::uuid, c.sentiment_label, c.sentiment_score::text,
                c.positive_sentences::text, c.negative_sentences::text
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN brand_sentiment c ON c.metric_fact_id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading brand_sentiment back"))?
    {
        let id: i64 = row.try_get(0).map_err(db("decoding brand_sentiment"))?;
        if other(&id) {
            continue;
        }
        brand_sentiment.insert(id, sentiment(&row, "brand_sentiment"));
    }
    let mut competitors: HashMap<i64, BTreeMap<Uuid, std::result::Result<CompetitorRows, String>>> =
        HashMap::new();
    for row in sqlx::query(
        "SELECT c.metric_fact_id, c.competitor_id, c.visibility_index::text, c.share_of_answers::text,
                c.total_mentions, c.product_mentions, c.first_position, c.has_presence
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN competitor_metrics c ON c.metric_fact_id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading competitor_metrics back"))?
    {
        let id: i64 = row.try_get(0).map_err(db("decoding competitor_metrics"))?;
        if other(&id) {
            continue;
        }
        let competitor_id: Uuid = row.try_get(1).map_err(db("decoding competitor_metrics"))?;
        let rows = metrics(&row, 2, "competitor_metrics").map(|metrics| CompetitorRows {
            competitor_id,
            metrics,
            sentiment: None,
        });
        competitors.entry(id).or_default().insert(competitor_id, rows);
    }
    let mut orphan_sentiments: HashMap<i64, String> = HashMap::new();
    for row in sqlx::query(
        "SELECT c.metric_fact_id, c.competitor_id, c.sentiment_label, c.sentiment_score::text,
                c.positive_sentences::text, c.negative_sentences::text
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN competitor_sentiment c ON c.metric_fact_id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading competitor_sentiment back"))?
    {
        let id: i64 = row
            .try_get(0)
            .map_err(db("decoding competitor_sentiment"))?;
        if other(&id) {
            continue;
        }
        let competitor_id: Uuid = row
            .try_get(1)
            .map_err(db("decoding competitor_sentiment"))?;
        let parsed = sentiment(&row, "competitor_sentiment");
        match competitors
            .get_mut(&id)
            .and_then(|m| m.get_mut(&competitor_id))
        {
            Some(Ok(rows)) => match parsed {
                Ok(s) => rows.sentiment = Some(s),
                Err(problem) => {
                    orphan_sentiments.insert(id, problem);
                }
            },
            Some(Err(_)) => {}
            None => {
                orphan_sentiments.insert(
                    id,
                    format!("competitor_sentiment for {competitor_id} without competitor_metrics"),
                );
            }
        }
    }

    let mut out = HashMap::with_capacity(by_fact.len());
    for (fact_id, (key, fact)) in by_fact {
        let built = (|| -> std::result::Result<TargetRows, String> {
            let brand_metrics = brand_metrics
                .remove(&fact_id)
                .unwrap_or_else(|| Err("brand_metrics row is missing".into()))?;
            let brand_sentiment = brand_sentiment.remove(&fact_id).transpose()?;
            if let Some(problem) = orphan_sentiments.remove(&fact_id) {
                return Err(problem);
            }
            let competitors = competitors
                .remove(&fact_id)
                .unwrap_or_default()
                .into_values()
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(TargetRows {
                fact,
                brand_metrics,
                brand_sentiment,
                competitors,
            })
        })();
        let (rows, problem) = match built {
            Ok(rows) => (Some(rows), None),
            Err(problem) => (None, Some(problem)),
        };
        out.insert(
            key,
            ReadBack {
                fact_id,
                rows,
                problem,
            },
        );
    }
    Ok(out)
}

/// The ledger rows of `keys`.
pub async fn ledger(pool: &PgPool, keys: &[i64]) -> Result<HashMap<i64, LedgerRow>> {
    let (lows, highs) = id_ranges(keys.iter().copied());
    let rows: Vec<(i64, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT l.collector_result_id, l.journal_id, l.content_hash
           FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN backfill.ledger l ON l.collector_result_id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(pool)
    .await
    .map_err(db("reading backfill.ledger"))?;
    let wanted: std::collections::HashSet<i64> = keys.iter().copied().collect();
    Ok(rows
        .into_iter()
        .filter(|(key, ..)| wanted.contains(key))
        .map(|(key, journal_id, hash)| {
            let content_hash = <[u8; 32]>::try_from(hash).ok().map(Digest);
            (
                key,
                LedgerRow {
                    journal_id: JournalId(journal_id),
                    content_hash,
                },
            )
        })
        .collect())
}

/// One finding of `journal verify`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The journal says applied; the fact is gone.
    Missing {
        /// The key.
        collector_result_id: i64,
    },
    /// The target's rows no longer hash as written.
    Changed {
        /// The key.
        collector_result_id: i64,
        /// `table.column`s that differ (or the table whose row is missing).
        differs: Vec<String>,
        /// The hash of the rows as they are now.
        actual_hash: Option<Digest>,
        /// The journal's hash.
        journal_hash: Digest,
    },
    /// The ledger disagrees with the journal (missing row, other journal,
    /// other hash).
    LedgerMismatch {
        /// The key.
        collector_result_id: i64,
        /// What the ledger holds.
        ledger_journal_id: Option<JournalId>,
        /// Its hash.
        ledger_hash: Option<Digest>,
        /// The journal's hash.
        journal_hash: Digest,
    },
    /// A ledger row naming this journal for a key the journal does not hold
    /// as applied.
    UnknownLedgerRow {
        /// The key.
        collector_result_id: i64,
        /// The journal's state for it, if any.
        journal_state: Option<String>,
    },
}

impl Finding {
    /// The key.
    pub fn key(&self) -> i64 {
        match self {
            Finding::Missing {
                collector_result_id,
            }
            | Finding::Changed {
                collector_result_id,
                ..
            }
            | Finding::LedgerMismatch {
                collector_result_id,
                ..
            }
            | Finding::UnknownLedgerRow {
                collector_result_id,
                ..
            } => *collector_result_id,
        }
    }
}

/// The result of `journal verify`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Applied keys checked.
    pub keys_checked: u64,
    /// Keys that matched in all three records.
    pub keys_matching: u64,
    /// Every difference, in key order.
    pub findings: Vec<Finding>,
    /// The journal's own chain: `None` if intact, else the problem.
    pub chain_problem: Option<String>,
    /// Log entries checked.
    pub chain_entries: u64,
}

impl VerifyReport {
    /// True when journal, ledger and target agree and the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty() && self.chain_problem.is_none()
    }
}

/// Compares one key's three records. Pure.
pub fn check_key(
    key: i64,
    journal_rows: &TargetRows,
    journal_hash: Digest,
    target: Option<&ReadBack>,
    ledger: Option<&LedgerRow>,
    journal_id: JournalId,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    match target {
        None => findings.push(Finding::Missing {
            collector_result_id: key,
        }),
        Some(read) => {
            let actual_hash = read
                .rows
                .as_ref()
                .and_then(|rows| current_content_hash(&Outcome::Migrate(rows.clone())).ok());
            if actual_hash != Some(journal_hash) {
                let differs = match (&read.rows, &read.problem) {
                    (Some(rows), _) => journal_rows
                        .diff(rows)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    (None, Some(problem)) => vec![problem.clone()],
                    (None, None) => Vec::new(),
                };
                findings.push(Finding::Changed {
                    collector_result_id: key,
                    differs,
                    actual_hash,
                    journal_hash,
                });
            }
        }
    }
    let matches =
        ledger.is_some_and(|l| l.journal_id == journal_id && l.content_hash == Some(journal_hash));
    if !matches {
        findings.push(Finding::LedgerMismatch {
            collector_result_id: key,
            ledger_journal_id: ledger.map(|l| l.journal_id),
            ledger_hash: ledger.and_then(|l| l.content_hash),
            journal_hash,
        });
    }
    findings
}

/// Keys, their target rows as read back, and their ledger rows.
type Chunk = (Vec<i64>, HashMap<i64, ReadBack>, HashMap<i64, LedgerRow>);

async fn read_chunk(pool: PgPool, keys: Vec<i64>) -> Result<Chunk> {
    let target = {
        let mut conn = pool
            .acquire()
            .await
            .map_err(db("connecting to read the target back"))?;
        read_back(&mut conn, &keys).await?
    };
    let ledger_rows = ledger(&pool, &keys).await?;
    Ok((keys, target, ledger_rows))
}

/// Ends the chain walk when `verify` returns early (an error of the key
/// checks): a blocking task cannot be cancelled, and the runtime waits for it
/// before the process exits.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Verifies every applied key, in batches of `batch_size`, plus the ledger
/// rows naming this journal and the journal's hash chain.
pub async fn verify(
    journal: &Arc<Journal>,
    pool: &PgPool,
    batch_size: usize,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // The walk of the hash chain reads the whole log on one core; the keys'
    // checks need the other core only in part (they wait on the target), so
    // the walk runs beside them rather than first (decision 71).
    let stop = StopOnDrop(Arc::default());
    let chain = {
        let journal = Arc::clone(journal);
        let stop = Arc::clone(&stop.0);
        tokio::task::spawn_blocking(move || journal.verify_chain_until(&stop))
    };
    let chunk = batch_size.max(1);
    let mut from = None;
    let mut exhausted = false;
    // The target is read two chunks ahead, on their own connections, while
    // the client decodes and compares the chunk before: the server's
    // read-back and the client's checks overlap (decision 61).
    let mut reads: VecDeque<tokio::task::JoinHandle<Result<Chunk>>> = VecDeque::new();
    loop {
        while !exhausted && reads.len() < 2 {
            let keys: Vec<i64> = journal
                .keys_in_state(State::Applied, from)
                .take(chunk)
                .collect::<std::result::Result<_, _>>()?;
            let Some(&last) = keys.last() else {
                exhausted = true;
                break;
            };
            match last.checked_add(1) {
                Some(next) => from = Some(next),
                None => exhausted = true,
            }
            reads.push_back(tokio::spawn(read_chunk(pool.clone(), keys)));
        }
        let Some(read) = reads.pop_front() else { break };
        let (keys, target, ledger_rows) = match read.await {
            Ok(chunk) => chunk?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let events = journal.events(&keys)?;
        for key in &keys {
            report.keys_checked += 1;
            let Some(event) = events.get(key) else {
                continue;
            };
            let Some(rows) = event.target_rows() else {
                continue;
            };
            let findings = check_key(
                *key,
                rows,
                event.content_hash,
                target.get(key),
                ledger_rows.get(key),
                journal.id(),
            );
            if findings.is_empty() {
                report.keys_matching += 1;
            }
            report.findings.extend(findings);
        }
    }
    let ours: Vec<i64> = sqlx::query_scalar(
        "SELECT collector_result_id FROM backfill.ledger WHERE journal_id = $1 ORDER BY 1",
    )
    .bind(journal.id().0)
    .fetch_all(pool)
    .await
    .map_err(db("reading backfill.ledger"))?;
    for chunk in ours.chunks(batch_size.max(1)) {
        let statuses = journal.statuses(chunk)?;
        for key in chunk {
            let state = statuses.get(key).map(|s| s.state);
            if state != Some(State::Applied) {
                report.findings.push(Finding::UnknownLedgerRow {
                    collector_result_id: *key,
                    journal_state: state.map(|s| s.to_string()),
                });
            }
        }
    }
    match chain.await {
        Ok(Ok(Some(chain))) => report.chain_entries = chain.entries,
        Ok(Ok(None)) => unreachable!("the walk is stopped only once verify has given up"),
        Ok(Err(err)) => report.chain_problem = Some(err.to_string()),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
    drop(stop);
    report.findings.sort_by_key(Finding::key);
    Ok(report)
}

/// The result of `rollback`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RollbackReport {
    /// Keys removed (or, without `--yes`, that would be).
    pub removed: Vec<i64>,
    /// Keys refused because the target changed since (unless `force`).
    pub refused: Vec<(i64, Vec<String>)>,
    /// Keys whose fact was already gone (ledger row removed, marked rolled back).
    pub already_gone: Vec<i64>,
    /// Whether anything was changed.
    pub executed: bool,
}

/// What a rollback covers and whether it acts.
#[derive(Clone, Copy, Debug)]
pub struct RollbackOptions {
    /// Only keys last applied by this run.
    pub only_run: Option<RunId>,
    /// Also remove keys whose rows changed since they were written.
    pub force: bool,
    /// Act; without it, report what would be removed and change nothing.
    pub execute: bool,
    /// Keys per batch.
    pub batch_size: usize,
}

/// Removes exactly the facts (and children, by cascade) this journal wrote
/// and that still hash as written (see [`RollbackOptions`]); the keys are
/// recorded rolled back by `rollback_run`.
pub async fn rollback(
    journal: &Journal,
    pool: &PgPool,
    options: RollbackOptions,
    rollback_run: RunId,
) -> Result<RollbackReport> {
    let RollbackOptions {
        only_run,
        force,
        execute,
        batch_size,
    } = options;
    let mut report = RollbackReport {
        executed: execute,
        ..RollbackReport::default()
    };
    let mut applied: Vec<i64> = Vec::new();
    // Drifted keys are applied keys whose source changed since: their rows
    // in the target are still this journal's (as of the current event).
    let written = journal
        .keys_in_state(State::Applied, None)
        .chain(journal.keys_in_state(State::Drifted, None));
    for key in written {
        let key = key?;
        if let Some(run) = only_run {
            let last_applied =
                journal
                    .history(key)?
                    .into_iter()
                    .rev()
                    .find_map(|l| match l.record {
                        Record::Applied { run, .. } => Some(run),
                        _ => None,
                    });
            if last_applied != Some(run) {
                continue;
            }
        }
        applied.push(key);
    }
    for keys in applied.chunks(batch_size.max(1)) {
        let target = {
            let mut conn = pool
                .acquire()
                .await
                .map_err(db("connecting to read the target back"))?;
            read_back(&mut conn, keys).await?
        };
        let ledger_rows = ledger(pool, keys).await?;
        let mut delete: Vec<i64> = Vec::new();
        let mut gone: Vec<i64> = Vec::new();
        let events = journal.events(keys)?;
        for key in keys {
            let Some(event) = events.get(key) else {
                continue;
            };
            let Some(rows) = event.target_rows() else {
                continue;
            };
            let ours = ledger_rows
                .get(key)
                .is_some_and(|l| l.journal_id == journal.id());
            match target.get(key) {
                None => gone.push(*key),
                Some(read) => {
                    let findings = check_key(
                        *key,
                        rows,
                        event.content_hash,
                        Some(read),
                        ledger_rows.get(key),
                        journal.id(),
                    );
                    let changed: Vec<String> = findings
                        .iter()
                        .filter_map(|f| match f {
                            Finding::Changed { differs, .. } => Some(differs.clone()),
                            _ => None,
                        })
                        .flatten()
                        .collect();
                    if !ours {
                        // Not (or no longer) ours in the ledger: never touched.
                        report
                            .refused
                            .push((*key, vec!["backfill.ledger: not this journal's row".into()]));
                    } else if changed.is_empty() || force {
                        delete.push(*key);
                    } else {
                        report.refused.push((*key, changed));
                    }
                }
            }
        }
        report.removed.extend(&delete);
        report.already_gone.extend(&gone);
        if !execute {
            continue;
        }
        let mut tx = pool
            .begin()
            .await
            .map_err(db("starting the rollback transaction"))?;
        let both: Vec<i64> = delete.iter().chain(&gone).copied().collect();
        sqlx::query(
            "DELETE FROM metric_facts f USING backfill.ledger l
              WHERE f.collector_result_id = ANY($1) AND l.collector_result_id = f.collector_result_id
                AND l.journal_id = $2",
        )
        .bind(&delete)
        .bind(journal.id().0)
        .execute(&mut *tx)
        .await
        .map_err(db("deleting this journal's facts"))?;
        sqlx::query(
            "DELETE FROM backfill.ledger WHERE collector_result_id = ANY($1) AND journal_id = $2",
        )
        .bind(&both)
        .bind(journal.id().0)
        .execute(&mut *tx)
        .await
        .map_err(db("deleting this journal's ledger rows"))?;
        tx.commit().await.map_err(db("committing the rollback"))?;
        let mut records = Batch::for_run(rollback_run);
        for key in both {
            records.record(key, Record::RolledBack { run: rollback_run });
        }
        journal.commit(records)?;
    }
    Ok(report)
}
