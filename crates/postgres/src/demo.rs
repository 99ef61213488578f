//! Synthetic source data for the demo, the tests and the benchmark: about six
//! rows per collector result, a few percent unresolved competitors, and some
//! keys for every skip and reject reason. Generated inside Postgres
//! (`generate_series`), so seeding a million rows takes seconds, and
//! deterministic for a given size, so two databases seeded alike are equal.

use sqlx::PgPool;

use crate::{db, Result};

/// The seeding SQL; `$1` is the number of collector results, `$2` the last
/// key already there (0 in an empty database): a second seed adds keys after
/// the first's instead of duplicating them.
pub const SEED_SQL: &[&str] = &[
    // 50 brands (every tenth without a customer), 8 competitors each; every
    // fifth brand has "Acme" twice (exact duplicates: smallest id wins) and
    // "Beta Corp" / "beta  corp" (normalized-ambiguous).
    "INSERT INTO brands (id, name, customer_id)
     SELECT md5('brand' || b)::uuid, 'Brand ' || b,
            CASE WHEN b % 10 = 0 THEN NULL ELSE md5('customer' || (b % 7))::uuid END
       FROM generate_series(1, 50) b
     ON CONFLICT DO NOTHING",
    "INSERT INTO brand_competitors (id, brand_id, competitor_name)
     SELECT md5('competitor' || b || '/' || c)::uuid, md5('brand' || b)::uuid,
            (ARRAY['Acme','Beta Corp','Gamma','Delta','Epsilon','Zeta','Eta','Theta'])[c]
       FROM generate_series(1, 50) b, generate_series(1, 8) c
     ON CONFLICT DO NOTHING",
    "INSERT INTO brand_competitors (id, brand_id, competitor_name)
     SELECT md5('competitor-dup' || b)::uuid, md5('brand' || b)::uuid, 'Acme'
       FROM generate_series(5, 50, 5) b
     ON CONFLICT DO NOTHING",
    "INSERT INTO brand_competitors (id, brand_id, competitor_name)
     SELECT md5('competitor-amb' || b)::uuid, md5('brand' || b)::uuid, 'beta  corp'
       FROM generate_series(5, 50, 5) b
     ON CONFLICT DO NOTHING",
    "INSERT INTO generated_queries (id, brand_id, query_text)
     SELECT md5('query' || b || '/' || q)::uuid, md5('brand' || b)::uuid, 'question ' || q
       FROM generate_series(1, 50) b, generate_series(1, 20) q
     ON CONFLICT DO NOTHING",
    // Collector results: every 97th key is missing (orphan).
    "INSERT INTO collector_results (id, brand_id, collector_type, created_at)
     SELECT r, md5('brand' || (1 + r % 50))::uuid,
            (ARRAY['chatgpt','perplexity','gemini'])[1 + r % 3],
            timestamptz '2025-01-01 00:00:00+00' + r * interval '37 seconds'
       FROM generate_series($2::int8 + 1, $2::int8 + $1::int8) r
      WHERE r % 97 <> 0
     ON CONFLICT DO NOTHING",
    // Brand rows: none for every 89th key (no_brand_row); a second, older
    // brand row for every 13th; customer NULL on every 3rd (fallback to
    // brands.customer_id, itself NULL for every tenth brand); an out-of-range
    // visibility for every 211th; sentiment labels in mixed case, some
    // unknown, some without a score.
    "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type,
        brand_name, competitor_name, brand_first_position, brand_positions, total_brand_mentions,
        total_word_count, visibility_index, share_of_answers_brand, has_brand_presence, topic,
        sentiment_label, sentiment_score, sentiment_positive_sentences, sentiment_negative_sentences,
        processed_at, metadata)
     SELECT r, md5('brand' || (1 + r % 50))::uuid,
            CASE WHEN r % 3 = 0 THEN NULL ELSE md5('customer' || ((1 + r % 50) % 7))::uuid END,
            md5('query' || (1 + r % 50) || '/' || (1 + r % 20))::uuid,
            (ARRAY['chatgpt','perplexity','gemini'])[1 + r % 3],
            'Brand ' || (1 + r % 50), CASE WHEN r % 2 = 0 THEN NULL ELSE '  ' END,
            CASE WHEN r % 4 = 0 THEN NULL ELSE 1 + r % 5 END, ARRAY[1 + r % 5],
            r % 6, 300 + r % 200,
            CASE WHEN r % 211 = 0 THEN 1000.5 WHEN r % 17 = 0 THEN NULL ELSE (r % 10000) / 100.0 + 0.005 END,
            CASE WHEN r % 19 = 0 THEN NULL ELSE (r % 1000) / 10.0 END,
            r % 6 > 0, (ARRAY['pricing','support','features',NULL])[1 + r % 4],
            (ARRAY['POSITIVE','negative',' Neutral ','MIXED',NULL,'positive'])[1 + r % 6],
            CASE WHEN r % 11 = 0 THEN NULL ELSE ((r % 200) - 100) / 100.0 END,
            CASE WHEN r % 5 = 0 THEN NULL ELSE '[\"good answer\"]'::jsonb END,
            '[]'::jsonb,
            timestamptz '2025-01-01 00:00:00+00' + r * interval '37 seconds' + interval '5 minutes',
            jsonb_build_object('model', 'gpt-4o', 'run', r % 100)
       FROM generate_series($2::int8 + 1, $2::int8 + $1::int8) r
      WHERE r % 89 <> 0",
    "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type,
        competitor_name, visibility_index, has_brand_presence, topic, processed_at)
     SELECT r, md5('brand' || (1 + r % 50))::uuid, md5('customer' || ((1 + r % 50) % 7))::uuid,
            md5('query' || (1 + r % 50) || '/' || (1 + r % 20))::uuid, 'chatgpt', NULL, 1.0, false, 'older',
            timestamptz '2025-01-01 00:00:00+00' + r * interval '37 seconds'
       FROM generate_series($2::int8 + 1, $2::int8 + $1::int8) r
      WHERE r % 13 = 0 AND r % 89 <> 0",
    // Five competitor rows per key; names vary in case and spacing; every
    // 31st key names an unknown competitor and every 5th brand's keys use
    // the ambiguous 'BETA CORP'; every 23rd key repeats a competitor (latest wins).
    "INSERT INTO extracted_positions (collector_result_id, brand_id, customer_id, query_id, collector_type,
        competitor_name, competitor_positions, competitor_mentions, visibility_index_competitor,
        share_of_answers_competitor, total_brand_mentions, has_brand_presence,
        sentiment_label_competitor, sentiment_score_competitor,
        sentiment_positive_sentences_competitor, processed_at)
     SELECT r, md5('brand' || (1 + r % 50))::uuid, md5('customer' || ((1 + r % 50) % 7))::uuid,
            md5('query' || (1 + r % 50) || '/' || (1 + r % 20))::uuid,
            (ARRAY['chatgpt','perplexity','gemini'])[1 + r % 3],
            CASE WHEN c = 5 AND r % 31 = 0 THEN 'Unknown Rival ' || (r % 7)
                 WHEN c = 2 THEN (ARRAY['Beta Corp','beta corp','BETA CORP'])[1 + r % 3]
                 WHEN c = 3 THEN '  gamma '
                 ELSE (ARRAY['Acme','Beta Corp','Gamma','Delta','Epsilon','Zeta','Eta','Theta'])[1 + (c + r) % 8] END,
            CASE WHEN (r + c) % 7 = 0 THEN NULL ELSE ARRAY[c, c + 3] END,
            CASE WHEN (r + c) % 9 = 0 THEN NULL ELSE (r + c) % 4 END,
            ((r * c) % 10000) / 100.0 + 0.005,
            CASE WHEN (r + c) % 8 = 0 THEN NULL ELSE ((r + c) % 1000) / 10.0 END,
            0, false,
            (ARRAY['POSITIVE','NEGATIVE','neutral','unknown',NULL])[1 + (r + c) % 5],
            CASE WHEN (r + c) % 13 = 0 THEN NULL ELSE (((r + c) % 100) + 1)::numeric END,
            CASE WHEN (r + c) % 3 = 0 THEN NULL ELSE '[\"mentioned\"]'::jsonb END,
            timestamptz '2025-01-01 00:00:00+00' + r * interval '37 seconds' + c * interval '1 second'
       FROM generate_series($2::int8 + 1, $2::int8 + $1::int8) r, generate_series(1, 5) c
      UNION ALL
     SELECT r, md5('brand' || (1 + r % 50))::uuid, NULL, md5('query' || (1 + r % 50) || '/' || (1 + r % 20))::uuid,
            'chatgpt', 'Delta', ARRAY[9], 1, 12.5, 3.0, 0, false, NULL, NULL, NULL,
            timestamptz '2025-01-01 00:00:00+00' + r * interval '37 seconds' - interval '1 hour'
       FROM generate_series($2::int8 + 1, $2::int8 + $1::int8) r
      WHERE r % 23 = 0",
];

/// Seeds `results` collector results (about six source rows each) after the
/// keys already there; returns the keys seeded (first, last).
pub async fn seed(pool: &PgPool, results: i64) -> Result<(i64, i64)> {
    let last: i64 = sqlx::query_scalar(
        "SELECT greatest((SELECT max(collector_result_id) FROM extracted_positions),
                         (SELECT max(id) FROM collector_results), 0)",
    )
    .fetch_one(pool)
    .await
    .map_err(db("finding the last seeded key"))?;
    for sql in SEED_SQL {
        sqlx::query(sql)
            .bind(results)
            .bind(last)
            .execute(pool)
            .await
            .map_err(db("seeding demo data"))?;
    }
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .map_err(db("analyzing demo data"))?;
    Ok((last + 1, last + results))
}
