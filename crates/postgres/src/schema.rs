//! The data contract: the SQL the project carries for the source and target
//! tables (identical to `shared/schema`, proven by a test), the ledger, and
//! `schema check`, which names every missing table and column before anything
//! is read or written.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::PgPool;

use crate::source::SourceTable;
use crate::{db, Result};

/// The source tables (`shared/schema/source.sql`).
pub const SOURCE_SQL: &str = include_str!("../sql/source.sql");
/// The target tables and view (`shared/schema/target.sql`).
pub const TARGET_SQL: &str = include_str!("../sql/target.sql");
/// The `backfill.ledger` table.
pub const LEDGER_SQL: &str = include_str!("../sql/ledger.sql");

/// Something the backfill needs that the database lacks, or has with
/// another type than the contract's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Missing {
    /// The table (or view).
    pub table: String,
    /// The column, or `None` if the whole table is missing.
    pub column: Option<String>,
    /// The column is there with this type, where the contract says
    /// `expected_type`.
    pub found_type: Option<String>,
    /// The contract's type, when `found_type` differs from it.
    pub expected_type: Option<String>,
    /// A foreign key or unique constraint of the contract the table lacks
    /// (or has not validated), as `FOREIGN KEY (col) REFERENCES t`, or one
    /// of its indexes, as `INDEX (col, …)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
}

impl Missing {
    fn table(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            column: None,
            found_type: None,
            expected_type: None,
            constraint: None,
        }
    }

    fn column(table: &str, column: &str) -> Self {
        Self {
            column: Some(column.to_owned()),
            ..Self::table(table)
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.column, &self.found_type, &self.expected_type) {
            (Some(column), Some(found), Some(expected)) => write!(
                f,
                "column {}.{} is {found} but the contract says {expected}",
                self.table, column
            ),
            (Some(column), _, _) => write!(f, "column {}.{}", self.table, column),
            (None, _, _) => match &self.constraint {
                Some(index) if index.starts_with("INDEX (") => {
                    write!(f, "index {} on {}", &index["INDEX ".len()..], self.table)
                }
                Some(constraint) => write!(f, "constraint {constraint} on {}", self.table),
                None => write!(f, "table {}", self.table),
            },
        }
    }
}

/// The contract's type (as `format_type` prints it) of every column the
/// backfill reads or writes; `extracted_positions` stands for the source
/// table under any name.
const CONTRACT_TYPES: &[(&str, &str, &str)] = &[
    ("extracted_positions", "id", "bigint"),
    ("extracted_positions", "collector_result_id", "bigint"),
    ("extracted_positions", "brand_id", "uuid"),
    ("extracted_positions", "customer_id", "uuid"),
    ("extracted_positions", "query_id", "uuid"),
    ("extracted_positions", "collector_type", "text"),
    ("extracted_positions", "competitor_name", "text"),
    ("extracted_positions", "brand_first_position", "integer"),
    ("extracted_positions", "competitor_positions", "integer[]"),
    ("extracted_positions", "total_brand_mentions", "integer"),
    ("extracted_positions", "competitor_mentions", "integer"),
    ("extracted_positions", "visibility_index", "numeric"),
    (
        "extracted_positions",
        "visibility_index_competitor",
        "numeric",
    ),
    ("extracted_positions", "share_of_answers_brand", "numeric"),
    (
        "extracted_positions",
        "share_of_answers_competitor",
        "numeric",
    ),
    ("extracted_positions", "has_brand_presence", "boolean"),
    ("extracted_positions", "topic", "text"),
    ("extracted_positions", "sentiment_label", "text"),
    ("extracted_positions", "sentiment_score", "numeric"),
    ("extracted_positions", "sentiment_label_competitor", "text"),
    (
        "extracted_positions",
        "sentiment_score_competitor",
        "numeric",
    ),
    (
        "extracted_positions",
        "sentiment_positive_sentences",
        "jsonb",
    ),
    (
        "extracted_positions",
        "sentiment_negative_sentences",
        "jsonb",
    ),
    (
        "extracted_positions",
        "sentiment_positive_sentences_competitor",
        "jsonb",
    ),
    (
        "extracted_positions",
        "sentiment_negative_sentences_competitor",
        "jsonb",
    ),
    (
        "extracted_positions",
        "processed_at",
        "timestamp with time zone",
    ),
    ("extracted_positions", "metadata", "jsonb"),
    ("brands", "id", "uuid"),
    ("brands", "customer_id", "uuid"),
    ("brand_competitors", "id", "uuid"),
    ("brand_competitors", "brand_id", "uuid"),
    ("brand_competitors", "competitor_name", "text"),
    ("collector_results", "id", "bigint"),
    (
        "collector_results",
        "created_at",
        "timestamp with time zone",
    ),
    ("metric_facts", "id", "bigint"),
    ("metric_facts", "collector_result_id", "bigint"),
    ("metric_facts", "brand_id", "uuid"),
    ("metric_facts", "customer_id", "uuid"),
    ("metric_facts", "query_id", "uuid"),
    ("metric_facts", "collector_type", "text"),
    ("metric_facts", "topic", "text"),
    ("metric_facts", "collected_at", "timestamp with time zone"),
    ("metric_facts", "metadata", "jsonb"),
    ("metric_facts", "created_at", "timestamp with time zone"),
    ("brand_metrics", "metric_fact_id", "bigint"),
    ("brand_metrics", "visibility_index", "numeric(5,2)"),
    ("brand_metrics", "share_of_answers", "numeric(5,2)"),
    ("brand_metrics", "total_mentions", "integer"),
    ("brand_metrics", "product_mentions", "integer"),
    ("brand_metrics", "first_position", "integer"),
    ("brand_metrics", "has_presence", "boolean"),
    ("competitor_metrics", "metric_fact_id", "bigint"),
    ("competitor_metrics", "competitor_id", "uuid"),
    ("competitor_metrics", "visibility_index", "numeric(5,2)"),
    ("competitor_metrics", "share_of_answers", "numeric(5,2)"),
    ("competitor_metrics", "total_mentions", "integer"),
    ("competitor_metrics", "product_mentions", "integer"),
    ("competitor_metrics", "first_position", "integer"),
    ("competitor_metrics", "has_presence", "boolean"),
    ("brand_sentiment", "metric_fact_id", "bigint"),
    ("brand_sentiment", "sentiment_label", "text"),
    ("brand_sentiment", "sentiment_score", "numeric(5,2)"),
    ("brand_sentiment", "positive_sentences", "jsonb"),
    ("brand_sentiment", "negative_sentences", "jsonb"),
    ("competitor_sentiment", "metric_fact_id", "bigint"),
    ("competitor_sentiment", "competitor_id", "uuid"),
    ("competitor_sentiment", "sentiment_label", "text"),
    ("competitor_sentiment", "sentiment_score", "numeric(5,2)"),
    ("competitor_sentiment", "positive_sentences", "jsonb"),
    ("competitor_sentiment", "negative_sentences", "jsonb"),
];

fn contract_type(table: &str, column: &str) -> Option<&'static str> {
    CONTRACT_TYPES
        .iter()
        .find(|(t, c, _)| *t == table && *c == column)
        .map(|(_, _, ty)| *ty)
}

/// The result of `schema check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchemaReport {
    /// Everything missing, sorted.
    pub missing: Vec<Missing>,
}

impl SchemaReport {
    /// True when nothing is missing.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
    }
}

/// The source columns the reader selects.
pub const SOURCE_COLUMNS: &[&str] = &[
    "id",
    "collector_result_id",
    "brand_id",
    "customer_id",
    "query_id",
    "collector_type",
    "competitor_name",
    "brand_first_position",
    "competitor_positions",
    "total_brand_mentions",
    "competitor_mentions",
    "visibility_index",
    "visibility_index_competitor",
    "share_of_answers_brand",
    "share_of_answers_competitor",
    "has_brand_presence",
    "topic",
    "sentiment_label",
    "sentiment_score",
    "sentiment_label_competitor",
    "sentiment_score_competitor",
    "sentiment_positive_sentences",
    "sentiment_negative_sentences",
    "sentiment_positive_sentences_competitor",
    "sentiment_negative_sentences_competitor",
    "processed_at",
    "metadata",
];

const DIRECTORY_COLUMNS: &[(&str, &[&str])] = &[
    ("brands", &["id", "customer_id"]),
    ("brand_competitors", &["id", "brand_id", "competitor_name"]),
    ("collector_results", &["id", "created_at"]),
];

const TARGET_COLUMNS: &[(&str, &[&str])] = &[
    (
        "metric_facts",
        &[
            "id",
            "collector_result_id",
            "brand_id",
            "customer_id",
            "query_id",
            "collector_type",
            "topic",
            "collected_at",
            "metadata",
            "created_at",
        ],
    ),
    (
        "brand_metrics",
        &[
            "metric_fact_id",
            "visibility_index",
            "share_of_answers",
            "total_mentions",
            "product_mentions",
            "first_position",
            "has_presence",
        ],
    ),
    (
        "competitor_metrics",
        &[
            "metric_fact_id",
            "competitor_id",
            "visibility_index",
            "share_of_answers",
            "total_mentions",
            "product_mentions",
            "first_position",
            "has_presence",
        ],
    ),
    (
        "brand_sentiment",
        &[
            "metric_fact_id",
            "sentiment_label",
            "sentiment_score",
            "positive_sentences",
            "negative_sentences",
        ],
    ),
    (
        "competitor_sentiment",
        &[
            "metric_fact_id",
            "competitor_id",
            "sentiment_label",
            "sentiment_score",
            "positive_sentences",
            "negative_sentences",
        ],
    ),
];

/// Existing (table, column) pairs of the given tables in a schema, with
/// their types.
async fn columns(
    pool: &PgPool,
    schema: Option<&str>,
    tables: &[String],
) -> Result<BTreeMap<(String, String), String>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = coalesce($1, current_schema())
            AND c.relname = ANY($2)
            AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(schema)
    .bind(tables)
    .fetch_all(pool)
    .await
    .map_err(db("reading the catalog"))?;
    Ok(rows.into_iter().map(|(t, c, ty)| ((t, c), ty)).collect())
}

/// Compares `table` (shown as `display`, typed as the contract's `logical`
/// table) with the columns wanted.
fn compare(
    present: &BTreeMap<(String, String), String>,
    display: &str,
    table: &str,
    logical: &str,
    wanted: &[&str],
    missing: &mut Vec<Missing>,
) {
    if !present.keys().any(|(t, _)| t == table) {
        missing.push(Missing::table(display));
        return;
    }
    for column in wanted {
        match present.get(&(table.to_owned(), (*column).to_owned())) {
            None => missing.push(Missing::column(display, column)),
            Some(found) => {
                if let Some(expected) = contract_type(logical, column).filter(|e| e != found) {
                    missing.push(Missing {
                        found_type: Some(found.clone()),
                        expected_type: Some(expected.to_owned()),
                        ..Missing::column(display, column)
                    });
                }
            }
        }
    }
}

/// Checks the source side (the source table and the directory tables).
pub async fn check_source(pool: &PgPool, table: &SourceTable) -> Result<SchemaReport> {
    let mut missing = Vec::new();
    let present = columns(
        pool,
        table.schema.as_deref(),
        std::slice::from_ref(&table.name),
    )
    .await?;
    compare(
        &present,
        &table.to_string(),
        &table.name,
        "extracted_positions",
        SOURCE_COLUMNS,
        &mut missing,
    );
    let names: Vec<String> = DIRECTORY_COLUMNS
        .iter()
        .map(|(t, _)| (*t).to_owned())
        .collect();
    let present = columns(pool, None, &names).await?;
    for (t, cols) in DIRECTORY_COLUMNS {
        compare(&present, t, t, t, cols, &mut missing);
    }
    missing.sort();
    Ok(SchemaReport { missing })
}

/// Checks the target side (the five tables and the view).
pub async fn check_target(pool: &PgPool) -> Result<SchemaReport> {
    let mut missing = Vec::new();
    let mut names: Vec<String> = TARGET_COLUMNS
        .iter()
        .map(|(t, _)| (*t).to_owned())
        .collect();
    names.push("mv_brand_daily_metrics".to_owned());
    let present = columns(pool, None, &names).await?;
    for (t, cols) in TARGET_COLUMNS {
        compare(&present, t, t, t, cols, &mut missing);
    }
    compare(
        &present,
        "mv_brand_daily_metrics",
        "mv_brand_daily_metrics",
        "mv_brand_daily_metrics",
        &[],
        &mut missing,
    );
    missing.sort();
    Ok(SchemaReport { missing })
}

/// The contract's primary keys, foreign keys and unique constraints on the
/// five target tables: (table, kind `p`/`f`/`u`, columns, referenced table).
const CONTRACT_CONSTRAINTS: &[(&str, &str, &[&str], &str)] = &[
    ("metric_facts", "p", &["id"], ""),
    ("brand_metrics", "p", &["id"], ""),
    ("brand_sentiment", "p", &["id"], ""),
    ("competitor_metrics", "p", &["id"], ""),
    ("competitor_sentiment", "p", &["id"], ""),
    ("metric_facts", "u", &["collector_result_id"], ""),
    (
        "metric_facts",
        "f",
        &["collector_result_id"],
        "collector_results",
    ),
    ("metric_facts", "f", &["brand_id"], "brands"),
    ("metric_facts", "f", &["query_id"], "generated_queries"),
    ("brand_metrics", "u", &["metric_fact_id"], ""),
    ("brand_metrics", "f", &["metric_fact_id"], "metric_facts"),
    ("brand_sentiment", "u", &["metric_fact_id"], ""),
    ("brand_sentiment", "f", &["metric_fact_id"], "metric_facts"),
    (
        "competitor_metrics",
        "u",
        &["metric_fact_id", "competitor_id"],
        "",
    ),
    (
        "competitor_metrics",
        "f",
        &["metric_fact_id"],
        "metric_facts",
    ),
    (
        "competitor_metrics",
        "f",
        &["competitor_id"],
        "brand_competitors",
    ),
    (
        "competitor_sentiment",
        "u",
        &["metric_fact_id", "competitor_id"],
        "",
    ),
    (
        "competitor_sentiment",
        "f",
        &["metric_fact_id"],
        "metric_facts",
    ),
    (
        "competitor_sentiment",
        "f",
        &["competitor_id"],
        "brand_competitors",
    ),
];

/// The contract's plain indexes on the target tables: (table, key columns).
const CONTRACT_INDEXES: &[(&str, &[&str])] = &[
    ("metric_facts", &["brand_id", "collected_at"]),
    ("competitor_metrics", &["competitor_id"]),
];

/// The contract's keys, foreign keys, unique constraints and indexes the target
/// lacks (or has not validated, or whose build failed), whatever their names
/// (DESIGN §10: `schema check` names any an interrupted initial load left
/// absent). Tables that are missing altogether are [`check_target`]'s to
/// name.
pub async fn check_constraints(pool: &PgPool) -> Result<Vec<Missing>> {
    let tables: Vec<String> = CONTRACT_CONSTRAINTS
        .iter()
        .map(|(t, ..)| (*t).to_owned())
        .collect();
    let present: Vec<(String, String, Vec<String>, String, bool)> = sqlx::query_as(
        "SELECT t.name, c.contype::text,
                (SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
                CASE WHEN c.confrelid = 0 THEN '' ELSE c.confrelid::regclass::text END, c.convalidated
           FROM (SELECT DISTINCT unnest($1::text[]) AS name) t
           JOIN pg_constraint c ON c.conrelid = to_regclass(t.name)
          WHERE c.contype IN ('f', 'u', 'p')",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .map_err(db("reading the target's constraints"))?;
    let exists: Vec<(String, bool)> = sqlx::query_as(
        "SELECT name, to_regclass(name) IS NOT NULL FROM unnest($1::text[]) AS name",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .map_err(db("reading the catalog"))?;
    let indexes: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT t.name,
                (SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
           FROM (SELECT DISTINCT unnest($1::text[]) AS name) t
           JOIN pg_index i ON i.indrelid = to_regclass(t.name)
          WHERE i.indisvalid",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await
    .map_err(db("reading the target's indexes"))?;
    let mut missing = Vec::new();
    for (table, columns) in CONTRACT_INDEXES {
        if !exists.iter().any(|(t, e)| t == table && *e) {
            continue;
        }
        if !indexes
            .iter()
            .any(|(t, cols)| t == table && cols == columns)
        {
            missing.push(Missing {
                constraint: Some(format!("INDEX ({})", columns.join(", "))),
                ..Missing::table(table)
            });
        }
    }
    for (table, kind, columns, referenced) in CONTRACT_CONSTRAINTS {
        if !exists.iter().any(|(t, e)| t == table && *e) {
            continue;
        }
        let found = present.iter().any(|(t, k, cols, r, valid)| {
            t == table && k == kind && cols == columns && r == referenced && *valid
        });
        if !found {
            let text = match *kind {
                "f" => format!(
                    "FOREIGN KEY ({}) REFERENCES {referenced}",
                    columns.join(", ")
                ),
                "p" => format!("PRIMARY KEY ({})", columns.join(", ")),
                _ => format!("UNIQUE ({})", columns.join(", ")),
            };
            missing.push(Missing {
                constraint: Some(text),
                ..Missing::table(table)
            });
        }
    }
    Ok(missing)
}

/// The tables the target's foreign keys reference (they come with the
/// source schema).
pub const REFERENCED_TABLES: &[&str] = &[
    "brands",
    "brand_competitors",
    "collector_results",
    "generated_queries",
];

/// With source and target in separate databases, the target needs the
/// tables its foreign keys reference, with the source's rows in them
/// (otherwise every key fails on a foreign key). Compares row counts: a
/// target with fewer rows than the source in one of them is named.
pub async fn check_references(source: &PgPool, target: &PgPool) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for table in REFERENCED_TABLES {
        let count = |pool: &PgPool| {
            let pool = pool.clone();
            async move {
                let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(*table)
                    .fetch_one(&pool)
                    .await
                    .map_err(db("reading the catalog"))?;
                if !exists {
                    return Ok::<_, crate::Error>(None);
                }
                let sql = format!("SELECT count(*) FROM \"{table}\"");
                let n: i64 = sqlx::query_scalar(&sql)
                    .fetch_one(&pool)
                    .await
                    .map_err(db("counting reference rows"))?;
                Ok(Some(n))
            }
        };
        let (in_source, in_target) = (count(source).await?, count(target).await?);
        match (in_source, in_target) {
            (_, None) => problems.push(format!(
                "the target has no table {table}: the target's foreign keys reference it (copy it, with its rows, from the source)"
            )),
            (Some(s), Some(t)) if t < s => problems.push(format!(
                "the target's {table} has {t} rows, the source's {s}: every row the backfill's rows reference must be in the target, or those keys fail on a foreign key (copy {table} from the source first)"
            )),
            _ => {}
        }
    }
    Ok(problems)
}

/// Which contract tables to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaParts {
    /// `extracted_positions` and the tables it references.
    pub source: bool,
    /// The star schema and its view.
    pub target: bool,
}

impl SchemaParts {
    /// Source and target.
    pub const ALL: SchemaParts = SchemaParts {
        source: true,
        target: true,
    };
}

/// Creates the contract tables (for demos and tests).
pub async fn apply(pool: &PgPool, parts: SchemaParts) -> Result<()> {
    let SchemaParts { source, target } = parts;
    if source {
        sqlx::raw_sql(SOURCE_SQL)
            .execute(pool)
            .await
            .map_err(db("creating the source tables"))?;
    }
    if target {
        sqlx::raw_sql(TARGET_SQL)
            .execute(pool)
            .await
            .map_err(db("creating the target tables"))?;
    }
    Ok(())
}

/// Creates `backfill.ledger` if missing. When it exists nothing is run: a
/// role without CREATE on the database can apply once the ledger is there
/// (`CREATE SCHEMA IF NOT EXISTS` needs the privilege even when the schema
/// exists).
pub async fn ensure_ledger(pool: &PgPool) -> Result<()> {
    let present: bool = sqlx::query_scalar(
        "SELECT to_regclass('backfill.ledger') IS NOT NULL
            AND to_regclass('backfill.ledger_journal') IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .map_err(db("looking up backfill.ledger"))?;
    if present {
        return Ok(());
    }
    sqlx::raw_sql(LEDGER_SQL)
        .execute(pool)
        .await
        .map_err(db("creating backfill.ledger"))?;
    Ok(())
}

/// Refreshes `mv_brand_daily_metrics`: CONCURRENTLY when its unique index
/// exists and it is populated (readers are not blocked), plainly otherwise.
/// Returns whether the refresh was concurrent.
pub async fn refresh_view(pool: &PgPool) -> Result<bool> {
    let (populated, has_unique): (bool, bool) = sqlx::query_as(
        "SELECT m.ispopulated,
                EXISTS (SELECT 1 FROM pg_index i
                         WHERE i.indrelid = format('%I.%I', m.schemaname, m.matviewname)::regclass
                           AND i.indisunique)
           FROM pg_matviews m
          WHERE m.matviewname = 'mv_brand_daily_metrics' AND m.schemaname = current_schema()",
    )
    .fetch_optional(pool)
    .await
    .map_err(db("looking up mv_brand_daily_metrics"))?
    .ok_or_else(|| crate::Error::MissingSchema {
        missing: vec![Missing::table("mv_brand_daily_metrics")],
    })?;
    let concurrent = populated && has_unique;
    let sql = if concurrent {
        "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_brand_daily_metrics"
    } else {
        "REFRESH MATERIALIZED VIEW mv_brand_daily_metrics"
    };
    sqlx::query(sql)
        .execute(pool)
        .await
        .map_err(db("refreshing mv_brand_daily_metrics"))?;
    Ok(concurrent)
}
