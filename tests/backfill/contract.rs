//! The project's SQL creates exactly the contract's columns and types, and
//! `schema check` names what is missing.

use backfill_postgres::testing::TestDb;
use backfill_postgres::{schema, Missing, SourceTable};

async fn columns(pool: &sqlx::PgPool) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                a.attnotnull::text, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
            AND c.relkind IN ('r', 'm')
          ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The data contract as the project was given it, beside the repository.
fn shared_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/schema")
}

/// The data contract: `../shared/schema` when the repository sits beside it,
/// else the copy committed in `tests/contract` (which the next test keeps
/// identical), so that a clone anywhere still tests the contract.
fn shared_schema(file: &str) -> String {
    let shared = shared_dir().join(file);
    let path = if shared.exists() {
        shared
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/contract")
            .join(file)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the data contract {}: {e}", path.display()))
}

#[test]
fn the_committed_copy_of_the_contract_is_the_shared_one() {
    for file in ["source.sql", "target.sql"] {
        let copy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/contract")
            .join(file);
        let copy = std::fs::read_to_string(&copy).unwrap();
        match std::fs::read_to_string(shared_dir().join(file)) {
            Ok(shared) => assert_eq!(
                copy, shared,
                "tests/contract/{file} differs from ../shared/schema/{file}: copy it again"
            ),
            Err(_) => eprintln!("../shared/schema/{file} is not beside this clone: checked against the committed copy only"),
        }
    }
}

#[tokio::test]
async fn project_sql_creates_the_contract_columns_and_types() {
    let ours = TestDb::empty().await;
    schema::apply(&ours.pool, schema::SchemaParts::ALL)
        .await
        .unwrap();
    let contract = TestDb::empty().await;
    sqlx::raw_sql(&shared_schema("source.sql"))
        .execute(&contract.pool)
        .await
        .unwrap();
    sqlx::raw_sql(&shared_schema("target.sql"))
        .execute(&contract.pool)
        .await
        .unwrap();
    let (a, b) = (columns(&ours.pool).await, columns(&contract.pool).await);
    assert!(a.len() > 60, "too few columns: {}", a.len());
    assert_eq!(a, b);
}

/// Constraints, indexes and the view's definition, as the catalog prints them.
async fn definitions(pool: &sqlx::PgPool) -> Vec<String> {
    let queries = [
        "SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
           FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1",
        "SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        "SELECT format('view %s %s', matviewname, pg_get_viewdef(format('%I', matviewname)::regclass))
           FROM pg_matviews WHERE schemaname = 'public' ORDER BY 1",
    ];
    let mut out = Vec::new();
    for sql in queries {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(pool).await.unwrap();
        out.extend(rows);
    }
    out
}

#[tokio::test]
async fn project_sql_creates_the_contract_constraints_indexes_and_view() {
    // Comparing columns only let a dropped CHECK on sentiment_label or a
    // dropped UNIQUE (metric_fact_id, competitor_id) pass.
    let ours = TestDb::empty().await;
    schema::apply(&ours.pool, schema::SchemaParts::ALL)
        .await
        .unwrap();
    let contract = TestDb::empty().await;
    for file in ["source.sql", "target.sql"] {
        sqlx::raw_sql(&shared_schema(file))
            .execute(&contract.pool)
            .await
            .unwrap();
    }
    let (a, b) = (
        definitions(&ours.pool).await,
        definitions(&contract.pool).await,
    );
    assert!(
        a.iter()
            .any(|d| d.contains("CHECK") && d.contains("sentiment_label")),
        "{a:#?}"
    );
    assert!(
        a.iter()
            .any(|d| d.contains("UNIQUE (metric_fact_id, competitor_id)")),
        "{a:#?}"
    );
    assert!(a
        .iter()
        .any(|d| d.starts_with("view mv_brand_daily_metrics")));
    assert_eq!(a, b);
}

#[tokio::test]
async fn schema_check_names_missing_tables_and_columns() {
    let db = TestDb::with_schema().await;
    let table = SourceTable::default();
    assert!(schema::check_source(&db.pool, &table)
        .await
        .unwrap()
        .is_ok());
    assert!(schema::check_target(&db.pool).await.unwrap().is_ok());

    sqlx::raw_sql("ALTER TABLE extracted_positions DROP COLUMN sentiment_score; DROP TABLE competitor_sentiment")
        .execute(&db.pool)
        .await
        .unwrap();
    let source = schema::check_source(&db.pool, &table).await.unwrap();
    assert_eq!(
        source.missing,
        vec![Missing {
            table: "extracted_positions".into(),
            column: Some("sentiment_score".into()),
            found_type: None,
            expected_type: None,
            constraint: None,
        }]
    );
    let target = schema::check_target(&db.pool).await.unwrap();
    assert_eq!(
        target.missing,
        vec![Missing {
            table: "competitor_sentiment".into(),
            column: None,
            found_type: None,
            expected_type: None,
            constraint: None,
        }]
    );
    assert_eq!(target.missing[0].to_string(), "table competitor_sentiment");

    let renamed = SourceTable::parse("positions_2024");
    let report = schema::check_source(&db.pool, &renamed).await.unwrap();
    assert_eq!(
        report.missing,
        vec![Missing {
            table: "positions_2024".into(),
            column: None,
            found_type: None,
            expected_type: None,
            constraint: None,
        }]
    );
}
