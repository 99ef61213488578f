//! The initial load (DESIGN §10): into empty target tables, with their
//! foreign keys, unique constraints, plain indexes and (where nothing else
//! depends on them) primary keys dropped while loading and re-created
//! (validated) afterwards; the rows go in by binary COPY (`crate::copy`).
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
//! The definitions come from `pg_get_constraintdef` and `pg_get_indexdef`:
//! they are DDL written by the database and are executed as such (the
//! identifiers are quoted), after a check of their shape.

use std::collections::{BTreeSet, HashSet};
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
    /// `pg_get_constraintdef` of it (`pg_get_indexdef` for an index).
    pub definition: String,
    /// `f` (foreign key), `u` (unique), `p` (a primary key no foreign key
    /// references) or `i` (a plain index).
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
  kind            text NOT NULL,
  deferred_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, constraint_name)
);
-- Plain indexes ('i') are deferred too since decision 63, unreferenced
-- primary keys ('p') since decision 74; a table created by an earlier
-- version allows fewer kinds.
ALTER TABLE backfill.deferred_constraints DROP CONSTRAINT IF EXISTS deferred_constraints_kind_check;
ALTER TABLE backfill.deferred_constraints ADD CONSTRAINT deferred_constraints_kind_check
  CHECK (kind IN ('f', 'u', 'i', 'p'));
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

/// The serial sequence `q.s` of the table named `u.t` and whether it is the
/// one its `id` column's default calls with increment 1 (`q.own`), as a
/// lateral join: only then can a load give that table's ids in blocks
/// (decision 74). Constant SQL, joined into the statements that use it.
pub(crate) const ID_SEQUENCE: &str = "LEFT JOIN LATERAL (
  SELECT s.seqrelid::regclass AS s,
         s.seqincrement = 1 AND EXISTS (
           SELECT 1 FROM pg_attrdef ad
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
             JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                             AND d.refclassid = 'pg_class'::regclass
                             AND d.refobjid = s.seqrelid
            WHERE ad.adrelid = to_regclass(u.t) AND a.attname = 'id'
              -- the call alone (an expression around it
              -- prints with parentheses or another name first)
              AND pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%::regclass)') AS own
    FROM pg_sequence s
   WHERE s.seqrelid = pg_get_serial_sequence(u.t, 'id')::regclass) q ON true";

/// Refuses unless `metric_facts.id` takes its values from its own sequence:
/// the load gives the facts' ids in blocks to link the children. Checked
/// before anything is deferred.
pub async fn require_fact_ids(pool: &PgPool) -> Result<()> {
    let own: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT q.own FROM (SELECT 'metric_facts'::text AS t) AS u {ID_SEQUENCE}"
    ))
    .fetch_one(pool)
    .await
    .map_err(db("reading metric_facts.id's default"))?;
    if own == Some(true) {
        Ok(())
    } else {
        Err(Error::FactIdsNotFromSequence)
    }
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

/// The foreign keys, unique constraints, plain (non-unique) indexes and
/// primary keys nothing else depends on, of the five tables. A primary key
/// that a foreign key references stays (`metric_facts`' one, as long as the
/// children's keys name it; a key from outside the five tables could not be
/// dropped without dropping that key too), and so does one a view relies
/// on, one whose index is the replica identity or the clustering index, or
/// one of a published table. Indexes and the children's primary keys
/// are deferred because keeping one up to date row by row costs several
/// times what building it once at the end does (decision 63: 1.7–2.4 s
/// against 0.54 s for `idx_competitor_metrics_competitor` over 654k rows;
/// decision 74: 1.22 s against 0.70–0.84 s plus a 0.19 s build for
/// `competitor_metrics_pkey`).
pub async fn constraints(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<Deferred>> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT t.name, c.conname::text, pg_get_constraintdef(c.oid), c.contype::text
           FROM unnest($1::text[]) AS t(name)
           JOIN pg_constraint c ON c.conrelid = to_regclass(t.name)
          WHERE c.contype IN ('f', 'u')
             OR (c.contype = 'p'
                 -- Nothing but the table depends on it: no foreign key
                 -- names it, no view relies on it, its index is not the
                 -- replica identity or the clustering one, and the table is
                 -- in no publication (a delete there needs an identity).
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint r
                                  WHERE r.contype = 'f' AND r.conindid = c.conindid)
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.refclassid = 'pg_constraint'::regclass AND d.refobjid = c.oid
                                    AND d.deptype = 'n')
                 AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = c.conindid
                                    AND (i.indisreplident OR i.indisclustered))
                 -- By name: a cast to regclass would need USAGE on every
                 -- published table's schema (FOR ALL TABLES lists them all).
                 AND NOT EXISTS (SELECT 1 FROM pg_publication_tables p
                                   JOIN pg_class pc ON pc.oid = c.conrelid
                                   JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                  WHERE p.schemaname = pn.nspname AND p.tablename = pc.relname))
         UNION ALL
         SELECT t.name, ic.relname::text, pg_get_indexdef(i.indexrelid), 'i'
           FROM unnest($1::text[]) AS t(name)
           JOIN pg_index i ON i.indrelid = to_regclass(t.name)
           JOIN pg_class ic ON ic.oid = i.indexrelid
          WHERE NOT i.indisunique AND NOT i.indisprimary
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
          ORDER BY 4, 1, 2",
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
    for d in deferred.iter().filter(|d| d.kind == "u" || d.kind == "p") {
        drop_constraint(&mut tx, d).await?;
    }
    for d in deferred.iter().filter(|d| d.kind == "i") {
        drop_index(&mut tx, d).await?;
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

async fn drop_index(tx: &mut Transaction<'_, Postgres>, d: &Deferred) -> Result<()> {
    // The index lives in its table's schema, which the catalog names.
    let qualified: String = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE i.indrelid = to_regclass($1) AND c.relname = $2",
    )
    .bind(&d.table)
    .bind(&d.name)
    .fetch_one(&mut **tx)
    .await
    .map_err(db("looking up a deferred index"))?;
    sqlx::query(&format!("DROP INDEX {qualified}"))
        .execute(&mut **tx)
        .await
        .map_err(db("dropping a deferred index"))?;
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

/// Re-creates and validates the recorded constraints and indexes, then
/// removes the guard and the records — unless another session holds the
/// applier lock (a load in progress) for more than a few seconds.
/// `holding_lock`: the caller holds it.
///
/// `pool` needs at least two connections. The work is spread over two more
/// connections of `pool` when it has them (decision 66):
/// unique constraints and indexes a table per connection, then the foreign
/// keys added `NOT VALID` in one transaction and validated a child table per
/// connection — no two connections ever want the same table's lock. Each
/// statement commits on its own; the guard and the records go last, in the
/// transaction that holds the lock, once everything is there and validated.
/// A crash in between leaves the records and the guard: the next restore
/// does what is still missing.
pub async fn restore(pool: &PgPool, holding_lock: bool) -> Result<Restored> {
    if recorded(pool).await?.is_empty() {
        return Ok(Restored::Nothing);
    }
    let max = pool.options().get_max_connections();
    if max < 2 {
        return Err(Error::RestorePoolTooSmall { max });
    }
    let mut tx = restore_transaction(pool).await?;
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
    // Only what `defer` records is executed: a foreign key, a unique
    // constraint or a primary key, as `pg_get_constraintdef` writes them, or
    // a plain index as
    // `pg_get_indexdef` does (one statement: no `;`). Checked for every
    // record before any runs.
    for d in &deferred {
        let shape = match d.kind.as_str() {
            "f" => "FOREIGN KEY (",
            "u" => "UNIQUE (",
            "p" => "PRIMARY KEY (",
            "i" => "CREATE INDEX ",
            _ => "",
        };
        if shape.is_empty() || !d.definition.starts_with(shape) || d.definition.contains(';') {
            return Err(Error::DeferredRecord {
                table: d.table.clone(),
                name: d.name.clone(),
                definition: d.definition.clone(),
            });
        }
    }
    let mut state = Vec::with_capacity(deferred.len());
    for d in &deferred {
        state.push(state_of(&mut tx, d).await?);
    }
    let sizes = table_sizes(pool).await?;

    // 1. Unique constraints, primary keys and indexes, a table per
    // connection.
    let builds = by_table(
        deferred
            .iter()
            .zip(&state)
            .filter(|(d, s)| d.kind != "f" && !s.present)
            .map(|(d, _)| Job::Create(d)),
        &sizes,
    );
    run_lanes(pool, builds).await?;

    // 2. The absent foreign keys, NOT VALID (no scan), in one transaction:
    // adding one locks its parent too, so they do not go side by side.
    let absent_keys: Vec<&Deferred> = deferred
        .iter()
        .zip(&state)
        .filter(|(d, s)| d.kind == "f" && !s.present)
        .map(|(d, _)| d)
        .collect();
    if !absent_keys.is_empty() {
        let jobs: Vec<Job<'_>> = absent_keys.iter().map(|d| Job::AddNotValid(d)).collect();
        run_lanes(pool, vec![jobs]).await?;
    }

    // 3. Validation, a child table per connection (it locks the child
    // against other validations and the parent only against DDL).
    let checks = by_table(
        deferred
            .iter()
            .zip(&state)
            .filter(|(d, s)| {
                d.kind == "f"
                    && !(s.present && s.validated)
                    && !d.definition.ends_with(" NOT VALID")
            })
            .map(|(d, _)| Job::Validate(d)),
        &sizes,
    );
    run_lanes(pool, checks).await?;

    // 4. Everything is back: the guard and the records go.
    for d in &deferred {
        let now = state_of(&mut tx, d).await?;
        if !now.present
            || (d.kind == "f" && !now.validated && !d.definition.ends_with(" NOT VALID"))
        {
            return Err(Error::RestoreConstraint {
                table: d.table.clone(),
                name: d.name.clone(),
                source: sqlx::Error::Protocol(
                    "it is still absent or not validated after the restore re-created it".into(),
                ),
            });
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

/// Adding a foreign key locks the referenced table against writes while it
/// validates: never queue without bound behind the application.
const RESTORE_LOCK_TIMEOUT: &str = "10s";

/// A transaction of the restore, with its lock timeout.
async fn restore_transaction(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await.map_err(db("restoring constraints"))?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(RESTORE_LOCK_TIMEOUT)
        .execute(&mut *tx)
        .await
        .map_err(db("restoring constraints"))?;
    Ok(tx)
}

/// Whether a recorded constraint or index exists, and (a foreign key)
/// whether it is validated.
struct State {
    present: bool,
    validated: bool,
}

async fn state_of(tx: &mut Transaction<'_, Postgres>, d: &Deferred) -> Result<State> {
    // A table has one primary key: one of the same definition under
    // another name (added by hand after `schema check` named it missing) is
    // the one recorded, and adding the recorded one would fail for good. One
    // of another definition is not: adding fails, naming the table.
    let (present, validated): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)
             OR EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                         WHERE i.indrelid = to_regclass($1) AND c.relname = $2)
             OR ($3 = 'p' AND EXISTS (SELECT 1 FROM pg_constraint
                                       WHERE conrelid = to_regclass($1) AND contype = 'p'
                                         AND pg_get_constraintdef(oid) = $4)),
                coalesce((SELECT convalidated FROM pg_constraint
                           WHERE conrelid = to_regclass($1) AND conname = $2), true)",
    )
    .bind(&d.table)
    .bind(&d.name)
    .bind(&d.kind)
    .bind(&d.definition)
    .fetch_one(&mut **tx)
    .await
    .map_err(db("looking up a constraint"))?;
    Ok(State { present, validated })
}

/// The five tables' sizes, to start the biggest first. Not read in the
/// restore's own transaction: reading a size takes a lock on the table until
/// the transaction ends, and the statements run on the other connections
/// would wait for it.
async fn table_sizes(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT t, coalesce(pg_total_relation_size(to_regclass(t)), 0) FROM unnest($1::text[]) AS t",
    )
    .bind(TABLES.map(str::to_owned).to_vec())
    .fetch_all(pool)
    .await
    .map_err(db("reading the target's table sizes"))
}

/// One statement of a restore, in its own transaction.
enum Job<'a> {
    /// A unique constraint, a primary key or an index.
    Create(&'a Deferred),
    /// A foreign key, not validated yet.
    AddNotValid(&'a Deferred),
    /// Validating a foreign key.
    Validate(&'a Deferred),
}

impl Job<'_> {
    fn deferred(&self) -> &Deferred {
        match self {
            Job::Create(d) | Job::AddNotValid(d) | Job::Validate(d) => d,
        }
    }

    fn statement(&self) -> String {
        let d = self.deferred();
        let add = |suffix: &str| {
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}{suffix}",
                quote(&d.table),
                quote(&d.name),
                d.definition
            )
        };
        match self {
            Job::Create(d) if d.kind == "i" => d.definition.clone(),
            Job::Create(_) => add(""),
            // Recorded as not valid: re-created as it was.
            Job::AddNotValid(d) if d.definition.ends_with(" NOT VALID") => add(""),
            Job::AddNotValid(_) => add(" NOT VALID"),
            Job::Validate(_) => format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                quote(&d.table),
                quote(&d.name)
            ),
        }
    }
}

/// `jobs` grouped by table, the biggest table first.
fn by_table<'a>(jobs: impl Iterator<Item = Job<'a>>, sizes: &[(String, i64)]) -> Vec<Vec<Job<'a>>> {
    let mut groups: Vec<(String, Vec<Job<'a>>)> = Vec::new();
    for job in jobs {
        let table = job.deferred().table.clone();
        match groups.iter_mut().find(|(t, _)| *t == table) {
            Some((_, group)) => group.push(job),
            None => groups.push((table, vec![job])),
        }
    }
    let size = |t: &str| sizes.iter().find(|(n, _)| n == t).map_or(0, |(_, s)| *s);
    groups.sort_by_key(|(t, _)| std::cmp::Reverse(size(t)));
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Runs the groups on two connections (one if the pool has fewer than four:
/// the restore's own transaction and the applier lock may hold two): each
/// takes the next group and runs its statements in order, each in its own
/// transaction.
async fn run_lanes(pool: &PgPool, groups: Vec<Vec<Job<'_>>>) -> Result<()> {
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(groups));
    let lane = || async {
        loop {
            let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
            let Some(group) = next else {
                return Ok::<(), Error>(());
            };
            for job in group {
                run_job(pool, &job).await?;
            }
        }
    };
    if pool.options().get_max_connections() >= 4 {
        tokio::try_join!(lane(), lane())?;
    } else {
        lane().await?;
    }
    Ok(())
}

async fn run_job(pool: &PgPool, job: &Job<'_>) -> Result<()> {
    let d = job.deferred();
    let refused = |source| Error::RestoreConstraint {
        table: d.table.clone(),
        name: d.name.clone(),
        source,
    };
    let mut tx = restore_transaction(pool).await?;
    sqlx::query(&job.statement())
        .execute(&mut *tx)
        .await
        .map_err(refused)?;
    tx.commit().await.map_err(refused)
}

/// Keys whose references (collector result, brand, query, competitors) are
/// missing from the target, each with what is missing: checked set-based,
/// because the foreign keys that would refuse them are absent.
pub async fn missing_references(
    tx: &mut Transaction<'_, Postgres>,
    facts: &[(i64, uuid::Uuid, uuid::Uuid)],
    competitors: &[(i64, uuid::Uuid)],
) -> std::result::Result<Vec<(i64, String)>, sqlx::Error> {
    // One statement per parent table says which exist: the missing ones are
    // what was asked for and not returned. Each array holds distinct values;
    // the small parent tables are joined to it (a hash join) rather than
    // filtered with `= ANY($1)`, which a generic plan evaluates as a linear
    // search per row (measured: 21 ms instead of 0.7 ms per batch for
    // generated_queries, docs/performance.md). The parents are not locked:
    // without the cascading foreign keys, a parent deleted after this check
    // leaves an orphan whether it is deleted before this batch commits or
    // after, and the restore names it either way (decision 65).
    // By ranges: a batch's keys are nearly consecutive (decision 76); ids
    // in a range's gaps are not asked about and are never looked up.
    let (lows, highs) = crate::ranges::id_ranges(facts.iter().map(|f| f.0));
    let collector_results: HashSet<i64> = sqlx::query_scalar(
        "SELECT c.id FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
           JOIN collector_results c ON c.id BETWEEN r.lo AND r.hi",
    )
    .bind(&lows)
    .bind(&highs)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let brands: HashSet<uuid::Uuid> = present(
        tx,
        "SELECT p.id FROM brands p JOIN unnest($1::uuid[]) AS u(id) ON p.id = u.id",
        facts.iter().map(|f| f.1),
    )
    .await?;
    let queries: HashSet<uuid::Uuid> = present(
        tx,
        "SELECT p.id FROM generated_queries p JOIN unnest($1::uuid[]) AS u(id) ON p.id = u.id",
        facts.iter().map(|f| f.2),
    )
    .await?;
    let known_competitors: HashSet<uuid::Uuid> = if competitors.is_empty() {
        HashSet::new()
    } else {
        present(
            tx,
            "SELECT p.id FROM brand_competitors p JOIN unnest($1::uuid[]) AS u(id) ON p.id = u.id",
            competitors.iter().map(|c| c.1),
        )
        .await?
    };
    let mut out = Vec::new();
    for &(key, brand, query) in facts {
        let mut why = Vec::new();
        if !collector_results.contains(&key) {
            why.push(format!(
                "collector_result_id {key} has no collector_results row (metric_facts_collector_result_id_fkey)"
            ));
        }
        if !brands.contains(&brand) {
            why.push(format!(
                "brand_id {brand} has no brands row (metric_facts_brand_id_fkey)"
            ));
        }
        if !queries.contains(&query) {
            why.push(format!(
                "query_id {query} has no generated_queries row (metric_facts_query_id_fkey)"
            ));
        }
        if !why.is_empty() {
            out.push((key, why.join("; ")));
        }
    }
    for &(key, competitor) in competitors {
        if !known_competitors.contains(&competitor) {
            out.push((
                key,
                format!(
                    "competitor_id {competitor} has no brand_competitors row (competitor_metrics_competitor_id_fkey)"
                ),
            ));
        }
    }
    Ok(out)
}

/// Which of `values` the query (one array parameter of distinct values)
/// returns.
async fn present<T>(
    tx: &mut Transaction<'_, Postgres>,
    sql: &'static str,
    values: impl Iterator<Item = T>,
) -> std::result::Result<HashSet<T>, sqlx::Error>
where
    T: Ord + std::hash::Hash + Eq + Send + Unpin,
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    Vec<T>: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    let distinct: Vec<T> = values.collect::<BTreeSet<T>>().into_iter().collect();
    let found: Vec<T> = sqlx::query_scalar(sql)
        .bind(distinct)
        .fetch_all(&mut **tx)
        .await?;
    Ok(found.into_iter().collect())
}
