//! Reading the source: whole groups only, by keyset on `collector_result_id`.
//!
//! The old tool paged with OFFSET over a non-unique order and split groups at
//! batch boundaries, silently losing competitors. Here a batch is "the next N
//! distinct keys and every row of each", so a group is never split, and the
//! next batch starts strictly after the last key read.

use std::fmt;

use backfill_core::{Decimal, Directories, Json, SourceRow};
use backfill_engine::{KeyRange, Source, SourceBatch};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgTypeInfo, Postgres};
use sqlx::{Column, Connection, PgPool, Row, Type};
use uuid::Uuid;

use crate::copy_out::{self, CopyOut, Fields};
use crate::timestamp::{self, PgTimestamp};
use crate::{db, Error, Result};

/// The source table, optionally schema-qualified (`--source-table`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTable {
    /// Schema, or the search path's first.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

impl SourceTable {
    /// Parses `table` or `schema.table`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('.') {
            Some((schema, name)) => Self {
                schema: Some(schema.to_owned()),
                name: name.to_owned(),
            },
            None => Self {
                schema: None,
                name: text.to_owned(),
            },
        }
    }

    /// As a quoted SQL identifier. Identifiers cannot be bound as parameters;
    /// quoting (with `"` doubled) makes any name safe, and `schema check` has
    /// already proven the table exists.
    pub fn quoted(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

impl Default for SourceTable {
    fn default() -> Self {
        Self::parse("extracted_positions")
    }
}

impl fmt::Display for SourceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A column read: its expression and the Rust type it is read as (checked
/// against the statement's column types before every read).
struct SourceColumn {
    expression: &'static str,
    compatible: fn(&PgTypeInfo) -> bool,
    expected: fn() -> PgTypeInfo,
}

const fn column<T: Type<Postgres>>(expression: &'static str) -> SourceColumn {
    SourceColumn {
        expression,
        compatible: compatible::<T>,
        expected: type_info::<T>,
    }
}

/// The columns read, in the order the decoder reads them.
const COLUMNS: [SourceColumn; 27] = [
    column::<i64>("id"),
    column::<i64>("collector_result_id"),
    column::<Uuid>("brand_id"),
    column::<Uuid>("customer_id"),
    column::<Uuid>("query_id"),
    column::<String>("collector_type"),
    column::<String>("competitor_name"),
    column::<i32>("brand_first_position"),
    column::<Vec<Option<i32>>>("competitor_positions"),
    column::<i32>("total_brand_mentions"),
    column::<i32>("competitor_mentions"),
    column::<rust_decimal::Decimal>("visibility_index"),
    column::<rust_decimal::Decimal>("visibility_index_competitor"),
    column::<rust_decimal::Decimal>("share_of_answers_brand"),
    column::<rust_decimal::Decimal>("share_of_answers_competitor"),
    column::<bool>("has_brand_presence"),
    column::<String>("topic"),
    column::<String>("sentiment_label"),
    column::<rust_decimal::Decimal>("sentiment_score"),
    column::<String>("sentiment_label_competitor"),
    column::<rust_decimal::Decimal>("sentiment_score_competitor"),
    column::<String>("sentiment_positive_sentences::text"),
    column::<String>("sentiment_negative_sentences::text"),
    column::<String>("sentiment_positive_sentences_competitor::text"),
    column::<String>("sentiment_negative_sentences_competitor::text"),
    column::<PgTimestamp>("processed_at"),
    column::<String>("metadata::text"),
];

fn compatible<T: Type<Postgres>>(ty: &PgTypeInfo) -> bool {
    T::compatible(ty)
}

fn type_info<T: Type<Postgres>>() -> PgTypeInfo {
    T::type_info()
}

/// Proves every column's type is one its decoder reads (as sqlx's
/// `Row::try_get` does per value): a wrong type is `sqlx::Error::Decode`
/// naming the column's position, its type and the one expected.
fn check_types<'c>(columns: impl ExactSizeIterator<Item = &'c PgTypeInfo>) -> sqlx::Result<()> {
    if columns.len() != COLUMNS.len() {
        return Err(sqlx::Error::Decode(
            format!(
                "the source statement returns {} columns where {} were expected",
                columns.len(),
                COLUMNS.len()
            )
            .into(),
        ));
    }
    for (index, (ty, column)) in columns.zip(&COLUMNS).enumerate() {
        if !(column.compatible)(ty) {
            return Err(sqlx::Error::Decode(
                format!(
                    "column {index} is {ty} where {} was expected",
                    (column.expected)()
                )
                .into(),
            ));
        }
    }
    Ok(())
}

/// What a COPY of the source reads.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// The next keys after a bound (`next_batch`).
    Batch,
    /// Given keys (`groups_of`).
    Keys,
}

const READING: &str = "reading source rows";

/// A `numeric` field as a [`Decimal`]: its text is made in a buffer this
/// thread keeps, so that the decimal's own string is a value's only
/// allocation (most source rows have six of them).
fn decimal(bytes: &[u8]) -> std::result::Result<Decimal, String> {
    thread_local! {
        static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    TEXT.with_borrow_mut(|text| {
        copy_out::numeric(bytes, text)?;
        text.parse().map_err(|_| text.clone())
    })
}

/// Reads the source and its directories.
#[derive(Clone, Debug)]
pub struct SourceReader {
    pool: PgPool,
    table: SourceTable,
    describe_sql: String,
    batch_sql: String,
    keys_sql: String,
    /// The size of the last COPY result read: the next one's buffer starts
    /// that big (an eighth more), not grown by doubling from empty, whose
    /// copies and slack raised peak RSS by tens of MB at 5M rows.
    last_size: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SourceReader {
    /// A reader of `table` on `pool`.
    pub fn new(pool: PgPool, table: SourceTable) -> Self {
        let t = table.quoted();
        let select = COLUMNS.map(|c| c.expression).join(", ");
        // COPY takes no parameters: the bounds are bound to `set_config` in
        // the same transaction and read back with `current_setting`, so no
        // value is ever formatted into the statement.
        let batch_sql = format!(
            "COPY (WITH upper_key AS (
               SELECT max(k) AS k FROM (
                 SELECT DISTINCT collector_result_id AS k FROM {t}
                  WHERE collector_result_id > current_setting('backfill.after')::int8
                    AND collector_result_id <= current_setting('backfill.last')::int8
                  ORDER BY 1 LIMIT current_setting('backfill.limit')::int8) keys)
             SELECT {select} FROM {t}
              WHERE collector_result_id > current_setting('backfill.after')::int8
                AND collector_result_id <= (SELECT k FROM upper_key)
             ) TO STDOUT (FORMAT binary)"
        );
        // No ORDER BY: the rows are put in (key, id) order on the client
        // (see `group`), which costs less there than the server's sort of
        // whole wide rows (measured: a third of the read, docs/performance.md).
        // `(SELECT …)` makes the array an init plan, parsed once whatever
        // the plan; the cast keeps it an array (not a subquery) for `ANY`.
        let keys_sql = format!(
            "COPY (SELECT {select} FROM {t}
                    WHERE collector_result_id = ANY((SELECT current_setting('backfill.keys')::int8[])::int8[])
                  ) TO STDOUT (FORMAT binary)"
        );
        // One row, all NULL, of the columns' types (see `copy_on`).
        let describe_sql = format!("SELECT {select} FROM (SELECT 1) AS one LEFT JOIN {t} ON false");
        Self {
            pool,
            table,
            describe_sql,
            batch_sql,
            keys_sql,
            last_size: std::sync::Arc::default(),
        }
    }

    /// The table read.
    pub fn table(&self) -> &SourceTable {
        &self.table
    }

    /// True if the source table has no rows.
    pub async fn is_empty(&self) -> Result<bool> {
        let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", self.table.quoted());
        sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(db("checking whether the source table is empty"))
    }

    /// The planner's estimate of the source rows (for progress only).
    pub async fn estimate_rows(&self) -> Result<Option<u64>> {
        let estimate: Option<f32> = sqlx::query_scalar(
            "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())",
        )
        .bind(&self.table.name)
        .bind(&self.table.schema)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("estimating the source size"))?;
        Ok(estimate
            .filter(|e| e.is_finite() && *e > 0.0)
            .map(|e| format!("{e:.0}").parse().unwrap_or(0)))
    }

    /// The next batch: the next `max_keys` distinct keys of `range` after
    /// `after` and every row of each. `None` when the range is exhausted.
    pub async fn next_batch(
        &self,
        range: KeyRange,
        after: Option<i64>,
        max_keys: usize,
    ) -> Result<Option<SourceBatch>> {
        let limit = i64::try_from(max_keys).unwrap_or(i64::MAX);
        let after = after.or(range.start.map(|s| s.saturating_sub(1)));
        let Some(last) = range.end.map_or(Some(i64::MAX), |e| e.checked_sub(1)) else {
            return Ok(None);
        };
        let copy = self
            .copy(
                "SELECT set_config('backfill.after', $1, true),
                        set_config('backfill.last', $2, true),
                        set_config('backfill.limit', $3, true)",
                vec![
                    after.unwrap_or(i64::MIN).to_string(),
                    last.to_string(),
                    limit.to_string(),
                ],
                Read::Batch,
            )
            .await?;
        if copy.len() == 0 {
            return Ok(None);
        }
        self.group(&copy).map(Some)
    }

    /// The whole groups of `keys` (keys without rows are absent).
    pub async fn groups_of(&self, keys: &[i64]) -> Result<SourceBatch> {
        let array = format!(
            "{{{}}}",
            keys.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let copy = self
            .copy(
                "SELECT set_config('backfill.keys', $1, true)",
                vec![array],
                Read::Keys,
            )
            .await?;
        self.group(&copy)
    }

    /// Runs the COPY of `read` in a transaction after binding `values` to
    /// the settings `settings` sets, with the columns' types checked first.
    ///
    /// A COPY dropped part-way leaves the rest of its stream unread on the
    /// connection, and sqlx 0.8.6 does not count the `ReadyForQuery` it
    /// still owes: back in the pool, that connection would hand each later
    /// statement the reply of the one before. So the read runs to its end in
    /// a task of its own, whatever happens to the caller (a stop cancels the
    /// reader mid-batch), and a connection whose read failed is closed, not
    /// pooled.
    async fn copy(
        &self,
        settings: &'static str,
        values: Vec<String>,
        read: Read,
    ) -> Result<CopyOut> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut conn = this.pool.acquire().await.map_err(db(READING))?;
            let result = this.copy_on(&mut conn, settings, &values, read).await;
            if result.is_err() {
                // Its stream may be part-read.
                drop(conn.detach());
            }
            result
        });
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(db(READING)(sqlx::Error::Protocol(
                "the source read was cancelled with its runtime".into(),
            ))),
        }
    }

    async fn copy_on(
        &self,
        conn: &mut sqlx::PgConnection,
        settings: &str,
        values: &[String],
        read: Read,
    ) -> Result<CopyOut> {
        let mut tx = conn.begin().await.map_err(db(READING))?;
        let mut query = sqlx::query(settings);
        for value in values {
            query = query.bind(value);
        }
        query.execute(&mut *tx).await.map_err(db(READING))?;
        // Described afresh every time (not a cached prepared statement, whose
        // types would be those of the connection's first read): its one row
        // of NULLs carries the columns' current types, and running it locks
        // the table (ACCESS SHARE) until this transaction ends, so they
        // cannot change before the COPY has run.
        let described = sqlx::query(&self.describe_sql)
            .persistent(false)
            .fetch_one(&mut *tx)
            .await
            .map_err(db(READING))?;
        check_types(described.columns().iter().map(Column::type_info))
            .map_err(db("decoding a source row"))?;
        let hint = self.last_size.load(std::sync::atomic::Ordering::Relaxed);
        let mut data = Vec::with_capacity(hint + hint / 8);
        {
            let sql = match read {
                Read::Batch => &self.batch_sql,
                Read::Keys => &self.keys_sql,
            };
            let mut stream = tx.copy_out_raw(sql).await.map_err(db(READING))?;
            while let Some(chunk) = stream.try_next().await.map_err(db(READING))? {
                data.extend_from_slice(&chunk);
            }
        }
        tx.commit().await.map_err(db(READING))?;
        self.last_size
            .store(data.len(), std::sync::atomic::Ordering::Relaxed);
        CopyOut::parse(data, COLUMNS.len())
            .map_err(|message| db(READING)(sqlx::Error::Protocol(message)))
    }

    fn group(&self, copy: &CopyOut) -> Result<SourceBatch> {
        let mut batch = SourceBatch {
            groups: Vec::new(),
            rows: copy.len(),
        };
        // In (key, id) order before decoding: sorting the small tuples, not
        // the decoded rows, which are hundreds of bytes each, and holding no
        // second copy of the batch.
        let mut order = (0..copy.len())
            .map(|i| {
                let mut fields = copy.fields(i);
                let id = self.required(&mut fields, 0, None, copy_out::int8)?;
                let key = self.required(&mut fields, 1, Some(id), copy_out::int8)?;
                Ok((key, id, i))
            })
            .collect::<Result<Vec<_>>>()?;
        order.sort_unstable();
        // Each group's vector at its exact size (the sorted keys give it),
        // not regrown row by row.
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut group = Vec::with_capacity(run.len());
            for &(_, _, i) in run {
                group.push(self.decode(copy.fields(i))?);
            }
            batch.groups.push((run[0].0, group));
        }
        Ok(batch)
    }

    /// A value that does not decode, named with its row and column.
    fn invalid(&self, index: usize, row_id: Option<i64>, value: String) -> Error {
        match row_id {
            Some(row_id) => Error::InvalidSourceValue {
                table: self.table.to_string(),
                column: COLUMNS[index].expression.trim_end_matches("::text"),
                row_id,
                value,
            },
            // Without an id to name (the id itself is unreadable).
            None => db("decoding a source row")(sqlx::Error::Protocol(format!(
                "{}.{}: {value}",
                self.table, COLUMNS[index].expression
            ))),
        }
    }

    /// The next field, which may be NULL.
    fn optional<T>(
        &self,
        fields: &mut Fields<'_>,
        index: usize,
        row_id: Option<i64>,
        decode: fn(&[u8]) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        fields
            .next_field()
            .map(decode)
            .transpose()
            .map_err(|message| self.invalid(index, row_id, message))
    }

    /// The next field, which must not be NULL.
    fn required<T>(
        &self,
        fields: &mut Fields<'_>,
        index: usize,
        row_id: Option<i64>,
        decode: fn(&[u8]) -> std::result::Result<T, String>,
    ) -> Result<T> {
        self.optional(fields, index, row_id, decode)?
            .ok_or_else(|| self.invalid(index, row_id, "NULL in a column read as NOT NULL".into()))
    }

    fn decode(&self, mut f: Fields<'_>) -> Result<SourceRow> {
        let id = self.required(&mut f, 0, None, copy_out::int8)?;
        let row = Some(id);
        let json = |f: &mut Fields<'_>, index: usize| -> Result<Option<Json>> {
            Ok(self.optional(f, index, row, copy_out::text)?.map(Json))
        };
        Ok(SourceRow {
            id,
            collector_result_id: self.required(&mut f, 1, row, copy_out::int8)?,
            brand_id: self.required(&mut f, 2, row, copy_out::uuid)?,
            customer_id: self.optional(&mut f, 3, row, copy_out::uuid)?,
            query_id: self.required(&mut f, 4, row, copy_out::uuid)?,
            collector_type: self.required(&mut f, 5, row, copy_out::text)?,
            competitor_name: self.optional(&mut f, 6, row, copy_out::text)?,
            brand_first_position: self.optional(&mut f, 7, row, copy_out::int4)?,
            competitor_positions: self.optional(&mut f, 8, row, copy_out::int4_array)?,
            total_brand_mentions: self.optional(&mut f, 9, row, copy_out::int4)?,
            competitor_mentions: self.optional(&mut f, 10, row, copy_out::int4)?,
            visibility_index: self.optional(&mut f, 11, row, decimal)?,
            visibility_index_competitor: self.optional(&mut f, 12, row, decimal)?,
            share_of_answers_brand: self.optional(&mut f, 13, row, decimal)?,
            share_of_answers_competitor: self.optional(&mut f, 14, row, decimal)?,
            has_brand_presence: self.required(&mut f, 15, row, copy_out::boolean)?,
            topic: self.optional(&mut f, 16, row, copy_out::text)?,
            sentiment_label: self.optional(&mut f, 17, row, copy_out::text)?,
            sentiment_score: self.optional(&mut f, 18, row, decimal)?,
            sentiment_label_competitor: self.optional(&mut f, 19, row, copy_out::text)?,
            sentiment_score_competitor: self.optional(&mut f, 20, row, decimal)?,
            sentiment_positive_sentences: json(&mut f, 21)?,
            sentiment_negative_sentences: json(&mut f, 22)?,
            sentiment_positive_sentences_competitor: json(&mut f, 23)?,
            sentiment_negative_sentences_competitor: json(&mut f, 24)?,
            processed_at: self.required(&mut f, 25, row, timestamp::from_binary)?,
            metadata: json(&mut f, 26)?,
        })
    }

    /// Loads competitors and brands (small tables, loaded once per run).
    pub async fn load_directories(&self) -> Result<Directories> {
        let mut dirs = Directories::new();
        let competitors: Vec<(Uuid, Uuid, String)> =
            sqlx::query_as("SELECT brand_id, id, competitor_name FROM brand_competitors")
                .fetch_all(&self.pool)
                .await
                .map_err(db("loading brand_competitors"))?;
        for (brand, id, name) in &competitors {
            dirs.add_competitor(*brand, *id, name);
        }
        let brands: Vec<(Uuid, Option<Uuid>)> =
            sqlx::query_as("SELECT id, customer_id FROM brands")
                .fetch_all(&self.pool)
                .await
                .map_err(db("loading brands"))?;
        for (id, customer) in brands {
            dirs.add_brand(id, customer);
        }
        Ok(dirs)
    }

    /// Replaces the directories' collector results with those of `keys`.
    pub async fn load_collector_results(&self, dirs: &mut Directories, keys: &[i64]) -> Result<()> {
        dirs.clear_collector_results();
        // By ranges: a batch's keys are nearly consecutive (decision 76).
        let (lows, highs) = crate::ranges::id_ranges(keys.iter().copied());
        let rows: Vec<(i64, PgTimestamp)> = sqlx::query_as(
            "SELECT c.id, c.created_at FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi)
               JOIN collector_results c ON c.id BETWEEN r.lo AND r.hi",
        )
        .bind(&lows)
        .bind(&highs)
        .fetch_all(&self.pool)
        .await
        .map_err(db("loading collector_results"))?;
        let wanted: std::collections::HashSet<i64> = keys.iter().copied().collect();
        for (id, created_at) in rows {
            if wanted.contains(&id) {
                dirs.add_collector_result(id, created_at.0);
            }
        }
        Ok(())
    }
}

impl Source for SourceReader {
    fn describe(&self) -> String {
        format!("table {}", self.table)
    }

    async fn is_empty(&self) -> backfill_engine::Result<bool> {
        Ok(SourceReader::is_empty(self).await?)
    }

    async fn estimate_rows(&self) -> backfill_engine::Result<Option<u64>> {
        Ok(SourceReader::estimate_rows(self).await?)
    }

    async fn next_batch(
        &self,
        range: KeyRange,
        after: Option<i64>,
        max_keys: usize,
    ) -> backfill_engine::Result<Option<SourceBatch>> {
        Ok(SourceReader::next_batch(self, range, after, max_keys).await?)
    }

    async fn groups_of(&self, keys: &[i64]) -> backfill_engine::Result<SourceBatch> {
        Ok(SourceReader::groups_of(self, keys).await?)
    }

    async fn load_directories(&self) -> backfill_engine::Result<Directories> {
        Ok(SourceReader::load_directories(self).await?)
    }

    async fn load_collector_results(
        &self,
        dirs: &mut Directories,
        keys: &[i64],
    ) -> backfill_engine::Result<()> {
        Ok(SourceReader::load_collector_results(self, dirs, keys).await?)
    }
}
