//! Reading the source: whole groups only, by keyset on `collector_result_id`.
//!
//! The old tool paged with OFFSET over a non-unique order and split groups at
//! batch boundaries, silently losing competitors. Here a batch is "the next N
//! distinct keys and every row of each", so a group is never split, and the
//! next batch starts strictly after the last key read.

use std::fmt;

use backfill_core::{Decimal, Directories, Json, SourceRow};
use backfill_engine::{KeyRange, Source, SourceBatch};
use sqlx::postgres::PgRow;
use sqlx::{Column, PgPool, Row};
use uuid::Uuid;

use crate::timestamp::PgTimestamp;
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

/// Reads column `index` of `row`; with `check`, first proves the column's
/// type is one `T` decodes (as `Row::try_get` does for every non-null
/// value). A wrong type is `sqlx::Error::Decode`, a value that does not
/// decode `ColumnDecode`.
fn get<'r, T>(row: &'r PgRow, index: usize, check: bool) -> sqlx::Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    if check {
        let ty = row.column(index).type_info();
        if !T::compatible(ty) {
            return Err(sqlx::Error::Decode(
                format!(
                    "column {index} is {ty} where {} was expected",
                    T::type_info()
                )
                .into(),
            ));
        }
    }
    row.try_get_unchecked(index)
}

/// Reads the source and its directories.
#[derive(Clone, Debug)]
pub struct SourceReader {
    pool: PgPool,
    table: SourceTable,
    batch_sql: String,
    keys_sql: String,
}

impl SourceReader {
    /// A reader of `table` on `pool`.
    pub fn new(pool: PgPool, table: SourceTable) -> Self {
        let t = table.quoted();
        let select = [
            "id".to_owned(),
            "collector_result_id".into(),
            "brand_id".into(),
            "customer_id".into(),
            "query_id".into(),
            "collector_type".into(),
            "competitor_name".into(),
            "brand_first_position".into(),
            "competitor_positions".into(),
            "total_brand_mentions".into(),
            "competitor_mentions".into(),
            "visibility_index::text".into(),
            "visibility_index_competitor::text".into(),
            "share_of_answers_brand::text".into(),
            "share_of_answers_competitor::text".into(),
            "has_brand_presence".into(),
            "topic".into(),
            "sentiment_label".into(),
            "sentiment_score::text".into(),
            "sentiment_label_competitor".into(),
            "sentiment_score_competitor::text".into(),
            "sentiment_positive_sentences::text".into(),
            "sentiment_negative_sentences::text".into(),
            "sentiment_positive_sentences_competitor::text".into(),
            "sentiment_negative_sentences_competitor::text".into(),
            "processed_at".into(),
            "metadata::text".into(),
        ]
        .join(", ");
        let batch_sql = format!(
            "WITH upper_key AS (
               SELECT max(k) AS k FROM (
                 SELECT DISTINCT collector_result_id AS k FROM {t}
                  WHERE collector_result_id > $1 AND collector_result_id <= $3
                  ORDER BY 1 LIMIT $2) keys)
             SELECT {select} FROM {t}
              WHERE collector_result_id > $1
                AND collector_result_id <= (SELECT k FROM upper_key)
"
        );
        // No ORDER BY: the rows are put in (key, id) order on the client
        // (see `group`), which costs less there than the server's sort of
        // whole wide rows (measured: a third of the read, docs/performance.md).
        let keys_sql = format!("SELECT {select} FROM {t} WHERE collector_result_id = ANY($1)");
        Self {
            pool,
            table,
            batch_sql,
            keys_sql,
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
        let rows = sqlx::query(&self.batch_sql)
            .bind(after.unwrap_or(i64::MIN))
            .bind(limit)
            .bind(last)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading source rows"))?;
        if rows.is_empty() {
            return Ok(None);
        }
        self.group(&rows).map(Some)
    }

    /// The whole groups of `keys` (keys without rows are absent).
    pub async fn groups_of(&self, keys: &[i64]) -> Result<SourceBatch> {
        let rows = sqlx::query(&self.keys_sql)
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading source rows"))?;
        self.group(&rows)
    }

    fn group(&self, rows: &[PgRow]) -> Result<SourceBatch> {
        let mut batch = SourceBatch {
            groups: Vec::new(),
            rows: rows.len(),
        };
        // In (key, id) order before decoding: sorting the small tuples, not
        // the decoded rows, which are hundreds of bytes each, and holding no
        // second copy of the batch.
        let mut order = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let id: i64 = get(row, 0, i == 0).map_err(db("decoding a source row"))?;
                let key: i64 = get(row, 1, i == 0).map_err(db("decoding a source row"))?;
                Ok((key, id, i))
            })
            .collect::<Result<Vec<_>>>()?;
        order.sort_unstable();
        // Every row of a result has the result's column types: checked once,
        // on the first row decoded (null or not), then read without the
        // check (decision 67: sqlx's check per value was a tenth of the
        // reader's time).
        for (n, (_, _, i)) in order.into_iter().enumerate() {
            let row = self.decode(&rows[i], n == 0)?;
            match batch.groups.last_mut() {
                Some((key, group)) if *key == row.collector_result_id => group.push(row),
                _ => batch.groups.push((row.collector_result_id, vec![row])),
            }
        }
        Ok(batch)
    }

    fn decode(&self, row: &PgRow, check: bool) -> Result<SourceRow> {
        let id: i64 = get(row, 0, check).map_err(db("decoding a source row"))?;
        let decimal = |index: usize, column: &'static str| -> Result<Option<Decimal>> {
            let text: Option<String> =
                get(row, index, check).map_err(db("decoding a source row"))?;
            text.map(|value| {
                value.parse().map_err(|_| Error::InvalidSourceValue {
                    table: self.table.to_string(),
                    column,
                    row_id: id,
                    value,
                })
            })
            .transpose()
        };
        let json = |index: usize| -> Result<Option<Json>> {
            let text: Option<String> =
                get(row, index, check).map_err(db("decoding a source row"))?;
            Ok(text.map(Json))
        };
        Ok(SourceRow {
            id,
            collector_result_id: get(row, 1, check).map_err(db("decoding a source row"))?,
            brand_id: get(row, 2, check).map_err(db("decoding a source row"))?,
            customer_id: get(row, 3, check).map_err(db("decoding a source row"))?,
            query_id: get(row, 4, check).map_err(db("decoding a source row"))?,
            collector_type: get(row, 5, check).map_err(db("decoding a source row"))?,
            competitor_name: get(row, 6, check).map_err(db("decoding a source row"))?,
            brand_first_position: get(row, 7, check).map_err(db("decoding a source row"))?,
            competitor_positions: get(row, 8, check).map_err(db("decoding a source row"))?,
            total_brand_mentions: get(row, 9, check).map_err(db("decoding a source row"))?,
            competitor_mentions: get(row, 10, check).map_err(db("decoding a source row"))?,
            visibility_index: decimal(11, "visibility_index")?,
            visibility_index_competitor: decimal(12, "visibility_index_competitor")?,
            share_of_answers_brand: decimal(13, "share_of_answers_brand")?,
            share_of_answers_competitor: decimal(14, "share_of_answers_competitor")?,
            has_brand_presence: get(row, 15, check).map_err(db("decoding a source row"))?,
            topic: get(row, 16, check).map_err(db("decoding a source row"))?,
            sentiment_label: get(row, 17, check).map_err(db("decoding a source row"))?,
            sentiment_score: decimal(18, "sentiment_score")?,
            sentiment_label_competitor: get(row, 19, check).map_err(db("decoding a source row"))?,
            sentiment_score_competitor: decimal(20, "sentiment_score_competitor")?,
            sentiment_positive_sentences: json(21)?,
            sentiment_negative_sentences: json(22)?,
            sentiment_positive_sentences_competitor: json(23)?,
            sentiment_negative_sentences_competitor: json(24)?,
            processed_at: get::<PgTimestamp>(row, 25, check)
                .map_err(|e| match e {
                    sqlx::Error::ColumnDecode { source, .. } => Error::InvalidSourceValue {
                        table: self.table.to_string(),
                        column: "processed_at",
                        row_id: id,
                        value: source.to_string(),
                    },
                    other => Error::Database {
                        context: "decoding a source row",
                        source: other,
                    },
                })?
                .0,
            metadata: json(26)?,
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
        let rows: Vec<(i64, PgTimestamp)> =
            sqlx::query_as("SELECT id, created_at FROM collector_results WHERE id = ANY($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await
                .map_err(db("loading collector_results"))?;
        for (id, created_at) in rows {
            dirs.add_collector_result(id, created_at.0);
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
