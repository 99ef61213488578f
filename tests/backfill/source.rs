//! The source reader against real Postgres: whole groups in (key, id)
//! order, and values it cannot read named rather than misread.

use backfill_engine::KeyRange;
use backfill_postgres::{SourceReader, SourceTable};

use crate::support::Harness;

fn reader(h: &Harness) -> SourceReader {
    SourceReader::new(h.db.pool.clone(), SourceTable::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holds_whole_groups_in_key_and_id_order_whatever_the_physical_order() {
    let h = Harness::seeded(40).await;
    // Rewrite every row so that the heap holds them in reverse id order.
    sqlx::raw_sql(
        "CREATE TEMP TABLE t AS SELECT * FROM extracted_positions;
         DELETE FROM extracted_positions;
         INSERT INTO extracted_positions SELECT * FROM t ORDER BY id DESC;",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let batch = reader(&h)
        .next_batch(KeyRange::ALL, None, 25)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.groups.len(), 25);
    let keys: Vec<i64> = batch.groups.iter().map(|(k, _)| *k).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(keys, sorted, "keys ascending, each once");
    for (key, rows) in &batch.groups {
        assert!(rows.iter().all(|r| r.collector_result_id == *key));
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "ids ascending");
    }
    assert_eq!(
        batch.rows,
        batch.groups.iter().map(|(_, r)| r.len()).sum::<usize>()
    );
}

/// Numerics are read in binary (not as the server's text): every value,
/// of any scale, sign or size, must give the decimal its text gives, or the
/// source hashes of every journal planned from text would change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_read_in_binary_is_the_decimal_its_text_gives() {
    let h = Harness::seeded(3).await;
    let values = [
        "0",
        "0.000",
        "-0.0",
        "1",
        "-1",
        "12.34",
        "12.3400",
        "0.455",
        "-0.455",
        "0.0005",
        "-0.00000001",
        "10000",
        "99999999",
        "100000000.0001",
        "1e-20",
        "123456789.987654321",
        "999.995",
        "-999.994",
        "1e30",
        "0.1e-5",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
    ];
    // One row per value, in its own group, in every numeric column.
    for (i, value) in values.iter().enumerate() {
        let key = 1_000_000 + i64::try_from(i).unwrap();
        sqlx::raw_sql(&format!(
            "INSERT INTO extracted_positions (collector_result_id, brand_id, query_id, collector_type,
               processed_at, visibility_index, visibility_index_competitor, share_of_answers_brand,
               share_of_answers_competitor, sentiment_score, sentiment_score_competitor)
             SELECT {key}, brand_id, query_id, collector_type, processed_at,
                    {value}::numeric, {value}::numeric, {value}::numeric, {value}::numeric,
                    {value}::numeric, {value}::numeric
               FROM extracted_positions LIMIT 1;"
        ))
        .execute(&h.db.pool)
        .await
        .unwrap();
    }
    let batch = reader(&h)
        .next_batch(KeyRange::ALL, Some(999_999), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.groups.len(), values.len());
    for (key, rows) in &batch.groups {
        let text: String = sqlx::query_scalar(
            "SELECT visibility_index::text FROM extracted_positions WHERE collector_result_id = $1",
        )
        .bind(key)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        let expected: backfill_core::Decimal = text.parse().unwrap();
        let row = &rows[0];
        for (column, read) in [
            ("visibility_index", &row.visibility_index),
            (
                "visibility_index_competitor",
                &row.visibility_index_competitor,
            ),
            ("share_of_answers_brand", &row.share_of_answers_brand),
            (
                "share_of_answers_competitor",
                &row.share_of_answers_competitor,
            ),
            ("sentiment_score", &row.sentiment_score),
            (
                "sentiment_score_competitor",
                &row.sentiment_score_competitor,
            ),
        ] {
            assert_eq!(read.as_ref(), Some(&expected), "{column} of {text}");
        }
    }
}

/// Without the type check on the first row, an `integer` column read as
/// text came back as the integer's four bytes taken for characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_column_of_another_type_is_named_not_misread() {
    let h = Harness::seeded(10).await;
    sqlx::raw_sql(
        "ALTER TABLE extracted_positions ALTER COLUMN topic TYPE integer USING length(topic)",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let error = reader(&h)
        .next_batch(KeyRange::ALL, None, 10)
        .await
        .unwrap_err();
    let chain = format!("{error:?}");
    assert!(
        chain.contains("column 16 is INT4 where TEXT was expected"),
        "{chain}"
    );
}

/// Sets one source row's value with `update` (which returns the row's id),
/// then reads: the read must fail naming that row, `column`, and `reason`.
async fn a_value_is_named(update: &str, column: &str, reason: &str) {
    let h = Harness::seeded(10).await;
    let id: i64 = sqlx::query_scalar(update)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    let error = reader(&h)
        .next_batch(KeyRange::ALL, None, 100)
        .await
        .unwrap_err();
    match &error {
        backfill_postgres::Error::InvalidSourceValue {
            column: named,
            row_id,
            value,
            ..
        } => {
            assert_eq!((*named, *row_id), (column, id));
            assert!(value.contains(reason), "{value}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_processed_at_is_named_with_its_row_and_column() {
    a_value_is_named(
        "UPDATE extracted_positions SET processed_at = 'infinity'
          WHERE id = (SELECT max(id) FROM extracted_positions) RETURNING id",
        "processed_at",
        "infinite",
    )
    .await;
}

/// sqlx refused an array not starting at 1 with an error that named neither
/// row nor column; the COPY reader names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_the_reader_cannot_read_is_named_with_its_row_and_column() {
    a_value_is_named(
        "UPDATE extracted_positions SET competitor_positions = '[0:1]={1,2}'
          WHERE id = (SELECT min(id) FROM extracted_positions) RETURNING id",
        "competitor_positions",
        "lower bound of 0",
    )
    .await;
}

/// `groups_of` (replay, rescan, drift) reads the same rows as the batch
/// read, by the same decoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_reads_the_rows_a_batch_read_gives() {
    let h = Harness::seeded(30).await;
    let reader = reader(&h);
    let batch = reader
        .next_batch(KeyRange::ALL, None, 30)
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<i64> = batch.groups.iter().map(|(k, _)| *k).step_by(3).collect();
    let some = reader.groups_of(&keys).await.unwrap();
    let expected: Vec<_> = batch
        .groups
        .iter()
        .filter(|(k, _)| keys.contains(k))
        .cloned()
        .collect();
    assert_eq!(some.groups, expected);
    assert!(reader.groups_of(&[]).await.unwrap().groups.is_empty());
}

/// A reader on one connection, so that every read reuses it.
async fn one_connection_reader(h: &Harness) -> (SourceReader, sqlx::PgPool) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&h.db.url)
        .await
        .unwrap();
    (
        SourceReader::new(pool.clone(), SourceTable::default()),
        pool,
    )
}

/// The types were once checked from a prepared statement, which sqlx caches
/// per connection: after a first read, a column changed to a type of the
/// same width (int4 → real) was read as integers from a float's bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_column_type_changed_between_two_reads_is_named_not_misread() {
    let h = Harness::seeded(10).await;
    let (reader, _pool) = one_connection_reader(&h).await;
    let first = reader
        .next_batch(KeyRange::ALL, None, 5)
        .await
        .unwrap()
        .unwrap();
    sqlx::raw_sql("ALTER TABLE extracted_positions ALTER COLUMN brand_first_position TYPE real")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let error = reader
        .next_batch(KeyRange::ALL, first.last_key(), 5)
        .await
        .unwrap_err();
    let chain = format!("{error:?}");
    assert!(
        chain.contains("column 7 is FLOAT4 where INT4 was expected"),
        "{chain}"
    );
}

/// A COPY dropped part-way (a stop cancels the reader) once left the rest
/// of its reply on the pooled connection, unread and uncounted by sqlx: the
/// next statements on it got the replies of the ones before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_read_cancelled_midway_leaves_its_connection_in_step() {
    let h = Harness::seeded(2000).await;
    let (reader, pool) = one_connection_reader(&h).await;
    for delay in [1, 2, 3, 5, 8, 12, 20, 30, 50] {
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(delay),
            reader.next_batch(KeyRange::ALL, None, 2000),
        )
        .await;
        for n in [1i32, 2, 3] {
            let got: i32 = sqlx::query_scalar("SELECT $1")
                .bind(n)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("after a read cancelled at {delay} ms: {e}"));
            assert_eq!(got, n, "after a read cancelled at {delay} ms");
        }
        if cancelled.is_ok() {
            break;
        }
    }
    let whole = reader
        .next_batch(KeyRange::ALL, None, 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.groups.len(), 2000);
}
