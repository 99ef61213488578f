//! The initial load (DESIGN §10): into empty target tables, with their
//! foreign keys and unique constraints dropped while loading and re-created
//! (validated) afterwards.
//!
//! Why: with the constraints in place, per-row foreign-key checks and
//! unique-index upkeep are most of the cost of filling empty tables; checking
//! the references set-based per batch and validating each constraint once at
//! the end does the same work in bulk.
//!
//! Why it is safe:
//! - the constraints are recorded in `backfill.deferred_constraints` (and in
//!   the run's options in the journal) in the same transaction that drops
//!   them, so they can always be re-created from what the database itself
//!   says;
//! - while they are absent, a statement trigger on each of the five tables
//!   refuses every write except the loader's (which sets
//!   `backfill.initial_load` in its transactions), so nothing can slip in
//!   rows the constraints would refuse;
//! - [`restore`] runs at the start of every command that connects to the
//!   target (unless a live applier holds the target's lock), so a crash or a
//!   kill at any point ends with the constraints back, validated.
//!
//! The definitions come from `pg_get_constraintdef`: they are DDL written by
//! the database and are executed as such (the identifiers are quoted).

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use crate::lock::LOCK_KEY;
use crate::{Error, Result};

/// The five tables the initial load fills.
pub const TABLES: [&str; 5] = [
    "metric_facts",
    "brand_metrics",
    "brand_sentiment",
    "competitor_metrics",
    "competitor_sentiment",
];

/// The session setting that lets the loader's own writes past the guard.
pub const LOADER_SETTING: &str = "backfill.initial_load";

/// One deferred constraint, as the database defines it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferred {
    /// The table.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// `pg_get_constraintdef` of it.
    pub definition: String,
    /// `f` (foreign key) or `u` (unique).
    pub kind: String,
}

impl From<(String, String, String, String)> for Deferred {
    /// A row (table, name, definition, kind), as the catalog and
    /// `backfill.deferred_constraints` are read.
    fn from((table, name, definition, kind): (String, String, String, String)) -> Self {
        Self {
            table,
            name,
            definition,
            kind,
        }
    }
}

const SETUP_SQL: &str = r"
CREATE TABLE IF NOT EXISTS backfill.deferred_constraints (
  table_name      text NOT NULL,
  constraint_name text NOT NULL,
  definition      text NOT NULL,
  kind            text NOT NULL CHECK (kind IN ('f', 'u')),
  deferred_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, constraint_name)
);
CREATE OR REPLACE FUNCTION backfill.refuse_during_initial_load() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('backfill.initial_load', true) IS DISTINCT FROM 'on' THEN
    RAISE EXCEPTION 'backfill run --initial-load is loading %, whose constraints are absent until it ends; any backfill command against this database restores them', TG_TABLE_NAME
      USING ERRCODE = '55006';
  END IF;
  RETURN NULL;
END $$;
";

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { context, source }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Refuses unless the five tables are empty, naming the first that is not.
pub async fn require_empty(pool: &PgPool) -> Result<()> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db("checking that the target tables are empty"))?;
    require_empty_in(&mut tx).await
}

async fn require_empty_in(tx: &mut Transaction<'_, Postgres>) -> Result<()> {
    for table in TABLES {
        let any: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {})", quote(table)))
                .fetch_one(&mut **tx)
                .await
                .map_err(db("checking that the target tables are empty"))?;
        if any {
            return Err(Error::TargetNotEmpty {
                table: table.to_owned(),
            });
        }
    }
    Ok(())
}

/// The foreign keys and unique constraints of the five tables (primary keys
/// stay: the children's foreign keys need `metric_facts`' one).
pub async fn constraints(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<Deferred>> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT t.name, c.conname::text, pg_get_constraintdef(c.oid), c.contype::text
           FROM unnest($1::text[]) AS t(name)
           JOIN pg_constraint c ON c.conrelid = to_regclass(t.name)
          WHERE c.contype IN ('f', 'u')
          ORDER BY c.contype, t.name, c.conname",
    )
    .bind(TABLES.map(str::to_owned).to_vec())
    .fetch_all(&mut **tx)
    .await
    .map_err(db("reading the target's constraints"))?;
    Ok(rows.into_iter().map(Deferred::from).collect())
}

/// The constraints an initial load would defer now (for the journal's
/// record of the run, written before they are dropped).
pub async fn deferrable(pool: &PgPool) -> Result<Vec<Deferred>> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db("reading the target's constraints"))?;
    let list = constraints(&mut tx).await?;
    tx.rollback()
        .await
        .map_err(db("reading the target's constraints"))?;
    Ok(list)
}

/// Records the constraints, guards the five tables and drops the
/// constraints, in one transaction. Returns what was deferred.
pub async fn defer(pool: &PgPool) -> Result<Vec<Deferred>> {
    crate::schema::ensure_ledger(pool).await?;
    sqlx::raw_sql(SETUP_SQL)
        .execute(pool)
        .await
        .map_err(db("creating backfill.deferred_constraints"))?;
    let mut tx = pool.begin().await.map_err(db("deferring constraints"))?;
    let deferred = constraints(&mut tx).await?;
    for d in &deferred {
        sqlx::query(
            "INSERT INTO backfill.deferred_constraints (table_name, constraint_name, definition, kind)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&d.table)
        .bind(&d.name)
        .bind(&d.definition)
        .bind(&d.kind)
        .execute(&mut *tx)
        .await
        .map_err(db("recording a deferred constraint"))?;
    }
    for table in TABLES {
        sqlx::query(&format!(
            "CREATE TRIGGER backfill_initial_load_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {}
               FOR EACH STATEMENT EXECUTE FUNCTION backfill.refuse_during_initial_load()",
            quote(table)
        ))
        .execute(&mut *tx)
        .await
        .map_err(db("guarding a target table"))?;
    }
    // Empty, checked again now that the triggers' locks (SHARE ROW
    // EXCLUSIVE, held until commit) keep every writer out: a row committed
    // since the first check refuses the load and rolls all this back.
    require_empty_in(&mut tx).await?;
    // Foreign keys first: a unique constraint may be what one references.
    for d in deferred.iter().filter(|d| d.kind == "f") {
        drop_constraint(&mut tx, d).await?;
    }
    for d in deferred.iter().filter(|d| d.kind == "u") {
        drop_constraint(&mut tx, d).await?;
    }
    tx.commit().await.map_err(db("deferring constraints"))?;
    Ok(deferred)
}

async fn drop_constraint(tx: &mut Transaction<'_, Postgres>, d: &Deferred) -> Result<()> {
    sqlx::query(&format!(
        "ALTER TABLE {} DROP CONSTRAINT {}",
        quote(&d.table),
        quote(&d.name)
    ))
    .execute(&mut **tx)
    .await
    .map_err(db("dropping a deferred constraint"))?;
    Ok(())
}

/// The constraints recorded as deferred (none when no load is unfinished).
pub async fn recorded(pool: &PgPool) -> Result<Vec<Deferred>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('backfill.deferred_constraints') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(db("looking up backfill.deferred_constraints"))?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name, constraint_name, definition, kind FROM backfill.deferred_constraints
          ORDER BY kind DESC, table_name, constraint_name",
    )
    .fetch_all(pool)
    .await
    .map_err(db("reading backfill.deferred_constraints"))?;
    Ok(rows.into_iter().map(Deferred::from).collect())
}

/// What [`restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Restored {
    /// No load was unfinished.
    #[default]
    Nothing,
    /// A live applier holds the target: its load is not unfinished.
    LoadRunning,
    /// These constraints were re-created and validated.
    Constraints(Vec<Deferred>),
}

/// How long a restore waits for the applier lock of a load that may have
/// just been killed.
const DYING_HOLDER_WAIT: Duration = Duration::from_secs(3);

/// Re-creates and validates the recorded constraints, removes the guard and
/// the records, in one transaction — unless another session holds the
/// applier lock (a load in progress) for more than a few seconds.
/// `holding_lock`: the caller holds it.
pub async fn restore(pool: &PgPool, holding_lock: bool) -> Result<Restored> {
    if recorded(pool).await?.is_empty() {
        return Ok(Restored::Nothing);
    }
    let mut tx = pool.begin().await.map_err(db("restoring constraints"))?;
    // Adding a foreign key locks the referenced table against writes while
    // it validates: never queue without bound behind the application.
    sqlx::query("SELECT set_config('lock_timeout', '10s', true)")
        .execute(&mut *tx)
        .await
        .map_err(db("restoring constraints"))?;
    if !holding_lock {
        // Held until this transaction ends; refused while an applier (the
        // load itself) holds the target's lock. The backend of a load killed
        // a moment ago holds it until the server notices its client is gone
        // (milliseconds, rarely more): that is waited for, a live load (which
        // holds it for the whole load) is not.
        let mut waited = Duration::ZERO;
        loop {
            let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("taking the applier lock to restore constraints"))?;
            if free {
                break;
            }
            if waited >= DYING_HOLDER_WAIT {
                return Ok(Restored::LoadRunning);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    }
    // Read again under the lock: another process may have restored them.
    let deferred: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name, constraint_name, definition, kind FROM backfill.deferred_constraints
          ORDER BY kind DESC, table_name, constraint_name FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("reading backfill.deferred_constraints"))?;
    let deferred: Vec<Deferred> = deferred.into_iter().map(Deferred::from).collect();
    if deferred.is_empty() {
        return Ok(Restored::Nothing);
    }
    // Unique constraints first ('u' sorts before 'f' descending).
    for d in &deferred {
        let present: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
        )
        .bind(&d.table)
        .bind(&d.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("looking up a constraint"))?;
        // Only what `defer` records is executed: a foreign key or a unique
        // constraint, as `pg_get_constraintdef` writes them.
        let shape = if d.kind == "f" {
            "FOREIGN KEY ("
        } else {
            "UNIQUE ("
        };
        if !d.definition.starts_with(shape) || d.definition.contains(';') {
            return Err(Error::DeferredRecord {
                table: d.table.clone(),
                name: d.name.clone(),
                definition: d.definition.clone(),
            });
        }
        if !present {
            sqlx::query(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}",
                quote(&d.table),
                quote(&d.name),
                d.definition
            ))
            .execute(&mut *tx)
            .await
            .map_err(|source| Error::RestoreConstraint {
                table: d.table.clone(),
                name: d.name.clone(),
                source,
            })?;
        }
    }
    for table in TABLES {
        sqlx::query(&format!(
            "DROP TRIGGER IF EXISTS backfill_initial_load_guard ON {}",
            quote(table)
        ))
        .execute(&mut *tx)
        .await
        .map_err(db("removing the initial load's guard"))?;
    }
    sqlx::query("DELETE FROM backfill.deferred_constraints")
        .execute(&mut *tx)
        .await
        .map_err(db("clearing backfill.deferred_constraints"))?;
    tx.commit().await.map_err(db("restoring constraints"))?;
    Ok(Restored::Constraints(deferred))
}

/// Keys whose references (collector result, brand, query, competitors) are
/// missing from the target, each with what is missing: checked set-based,
/// because the foreign keys that would refuse them are absent.
pub async fn missing_references(
    tx: &mut Transaction<'_, Postgres>,
    facts: &[(i64, uuid::Uuid, uuid::Uuid)],
    competitors: &[(i64, uuid::Uuid)],
) -> std::result::Result<Vec<(i64, String)>, sqlx::Error> {
    // The parents stay until this batch commits (what the absent foreign
    // keys would have ensured for the length of the transaction).
    let lock_parents = [
        "SELECT 1 FROM brands WHERE id = ANY($1) FOR KEY SHARE",
        "SELECT 1 FROM generated_queries WHERE id = ANY($1) FOR KEY SHARE",
    ];
    sqlx::query("SELECT 1 FROM collector_results WHERE id = ANY($1) FOR KEY SHARE")
        .bind(facts.iter().map(|f| f.0).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    for (i, sql) in lock_parents.into_iter().enumerate() {
        sqlx::query(sql)
            .bind(
                facts
                    .iter()
                    .map(|f| if i == 0 { f.1 } else { f.2 })
                    .collect::<Vec<_>>(),
            )
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("SELECT 1 FROM brand_competitors WHERE id = ANY($1) FOR KEY SHARE")
        .bind(competitors.iter().map(|c| c.1).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    let mut out: Vec<(i64, String)> = sqlx::query_as(
        "SELECT k, concat_ws('; ',
                  CASE WHEN NOT EXISTS (SELECT 1 FROM collector_results c WHERE c.id = k)
                       THEN 'collector_result_id ' || k || ' has no collector_results row (metric_facts_collector_result_id_fkey)' END,
                  CASE WHEN NOT EXISTS (SELECT 1 FROM brands b WHERE b.id = u.b)
                       THEN 'brand_id ' || u.b || ' has no brands row (metric_facts_brand_id_fkey)' END,
                  CASE WHEN NOT EXISTS (SELECT 1 FROM generated_queries q WHERE q.id = u.q)
                       THEN 'query_id ' || u.q || ' has no generated_queries row (metric_facts_query_id_fkey)' END)
           FROM unnest($1::int8[], $2::uuid[], $3::uuid[]) AS u(k, b, q)
          WHERE NOT EXISTS (SELECT 1 FROM collector_results c WHERE c.id = u.k)
             OR NOT EXISTS (SELECT 1 FROM brands b WHERE b.id = u.b)
             OR NOT EXISTS (SELECT 1 FROM generated_queries q WHERE q.id = u.q)",
    )
    .bind(facts.iter().map(|f| f.0).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.1).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.2).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    if !competitors.is_empty() {
        let more: Vec<(i64, String)> = sqlx::query_as(
            "SELECT k, 'competitor_id ' || c || ' has no brand_competitors row (competitor_metrics_competitor_id_fkey)'
               FROM unnest($1::int8[], $2::uuid[]) AS u(k, c)
              WHERE NOT EXISTS (SELECT 1 FROM brand_competitors bc WHERE bc.id = u.c)",
        )
        .bind(competitors.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(competitors.iter().map(|c| c.1).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
        out.extend(more);
    }
    Ok(out)
}
