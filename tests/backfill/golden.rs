//! The golden fixture: one collector result per rule of DESIGN §3, written
//! to a real target and compared row by row with rows worked out by hand.

use backfill_core::Note;
use backfill_engine::KeyResult;
use backfill_journal::{Reason, State};
use backfill_postgres::testing::dump_target;

use crate::support::{batches, Harness};

const FIXTURE: &str = r#"
INSERT INTO brands (id, name, customer_id) VALUES
  ('00000000-0000-0000-0000-0000000000b1', 'Brand One', '00000000-0000-0000-0000-0000000000c1'),
  ('00000000-0000-0000-0000-0000000000b2', 'Brand Two', NULL);
INSERT INTO brand_competitors (id, brand_id, competitor_name) VALUES
  ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'Acme'),
  ('00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-0000000000b1', 'Acme'),
  ('00000000-0000-0000-0000-0000000000bc', '00000000-0000-0000-0000-0000000000b1', 'Beta Corp'),
  ('00000000-0000-0000-0000-0000000000bd', '00000000-0000-0000-0000-0000000000b1', 'beta  corp'),
  ('00000000-0000-0000-0000-000000000099', '00000000-0000-0000-0000-0000000000b1', 'Gamma');
INSERT INTO generated_queries (id, brand_id, query_text) VALUES
  ('00000000-0000-0000-0000-0000000000e1', '00000000-0000-0000-0000-0000000000b1', 'best crm?');
INSERT INTO collector_results (id, brand_id, collector_type, created_at)
SELECT k, '00000000-0000-0000-0000-0000000000b1', 'chatgpt', timestamptz '2025-01-01 00:00:00+00' + (k - 1) * interval '1 day'
  FROM unnest(ARRAY[1, 2, 3, 4, 5, 7, 8]) k;
INSERT INTO extracted_positions (id, collector_result_id, brand_id, customer_id, query_id, collector_type,
    competitor_name, brand_first_position, total_brand_mentions, visibility_index, share_of_answers_brand,
    has_brand_presence, topic, sentiment_label, sentiment_score, sentiment_positive_sentences,
    sentiment_negative_sentences, processed_at, metadata,
    competitor_positions, competitor_mentions, visibility_index_competitor, sentiment_label_competitor,
    sentiment_score_competitor)
VALUES
  -- 1: the full brand row; competitors: exact (duplicate ids: smallest), normalized, ambiguous, unknown, older duplicate
  (10, 1, '00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000c2', '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, 2, 3, 0.455, 99.995, true, 'pricing', ' positive ', 0.455, NULL, '["meh"]', '2025-02-01 10:00:00+00', '{"a": 1}',
   NULL, NULL, NULL, NULL, NULL),
  (11, 1, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'Acme', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-01 10:00:00+00', NULL,
   '{4,9}', 2, 12.345, 'NEGATIVE', -0.5),
  (12, 1, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   '  gamma ', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-01 10:00:00+00', NULL,
   NULL, NULL, 1, NULL, NULL),
  (13, 1, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'BETA CORP', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-01 10:00:00+00', NULL,
   NULL, 1, 3, NULL, NULL),
  (14, 1, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'Nobody', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-01 10:00:00+00', NULL,
   NULL, 1, 3, NULL, NULL),
  (15, 1, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'Acme', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-01 09:00:00+00', NULL,
   '{1}', 7, 5000, NULL, NULL),
  -- 2: two brand rows, the later wins; customer from brands
  (20, 2, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, NULL, 0, NULL, NULL, false, 'earlier', NULL, NULL, '[]', '[]', '2025-02-02 09:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  (21, 2, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'perplexity',
   '', NULL, 0, NULL, NULL, false, 'later', NULL, NULL, '[]', '[]', '2025-02-02 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  -- 3: no brand row
  (30, 3, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'Acme', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-03 10:00:00+00', NULL,
   NULL, 1, 1, NULL, NULL),
  -- 4: no customer anywhere
  (40, 4, '00000000-0000-0000-0000-0000000000b2', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-04 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  -- 5: a written value out of numeric(5,2)
  (50, 5, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, NULL, 0, 999.995, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-05 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  -- 6: no collector_results row
  (60, 6, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-06 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  -- 7: unknown brand label (dropped), competitor sentiment on the 1..100 scale copied as is
  (70, 7, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   NULL, NULL, 0, NULL, NULL, false, NULL, 'MIXED', 1, '[]', '[]', '2025-02-07 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL),
  (71, 7, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   'Beta Corp', NULL, 0, NULL, NULL, false, NULL, NULL, NULL, '[]', '[]', '2025-02-07 10:00:00+00', NULL,
   NULL, NULL, NULL, 'neutral', 87),
  -- 8: a blank competitor_name is a brand row; NULL metrics stay NULL; score without label
  (80, 8, '00000000-0000-0000-0000-0000000000b1', NULL, '00000000-0000-0000-0000-0000000000e1', 'chatgpt',
   '   ', NULL, 0, NULL, NULL, false, NULL, NULL, 0.5, '[]', '[]', '2025-02-08 10:00:00+00', NULL,
   NULL, NULL, NULL, NULL, NULL);
"#;

const A0: &str = "00000000-0000-0000-0000-0000000000a0";
const BC: &str = "00000000-0000-0000-0000-0000000000bc";
const GAMMA: &str = "00000000-0000-0000-0000-000000000099";
const B1: &str = "00000000-0000-0000-0000-0000000000b1";
const C1: &str = "00000000-0000-0000-0000-0000000000c1";
const C2: &str = "00000000-0000-0000-0000-0000000000c2";
const Q1: &str = "00000000-0000-0000-0000-0000000000e1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_fixture_every_rule_row_by_row() {
    let h = Harness::new().await;
    sqlx::raw_sql(FIXTURE).execute(&h.db.pool).await.unwrap();
    let summary = h.run(batches(3)).await;

    let expected: Vec<String> = vec![
        format!("fact 1 {B1} {C2} {Q1} chatgpt pricing 2025-02-01 10:00:00 {{\"a\": 1}} 2025-01-01 00:00:00"),
        format!("fact 2 {B1} {C1} {Q1} perplexity later 2025-02-02 10:00:00  2025-01-02 00:00:00"),
        format!("fact 7 {B1} {C1} {Q1} chatgpt  2025-02-07 10:00:00  2025-01-07 00:00:00"),
        format!("fact 8 {B1} {C1} {Q1} chatgpt  2025-02-08 10:00:00  2025-01-08 00:00:00"),
        "bm 1 0.46 100.00 3 3 2 t".into(),
        "bm 2   0 0  f".into(),
        "bm 7   0 0  f".into(),
        "bm 8   0 0  f".into(),
        "bs 1 POSITIVE 0.46 [] [\"meh\"]".into(),
        format!("cm 1 {GAMMA} 1.00  0 0  f"),
        format!("cm 1 {A0} 12.35  2 2 4 t"),
        format!("cm 7 {BC}   0 0  f"),
        format!("cs 1 {A0} NEGATIVE -0.50 [] []"),
        format!("cs 7 {BC} NEUTRAL 87.00 [] []"),
    ];
    assert_eq!(dump_target(&h.db.pool).await, expected);

    let state = |key| h.journal.status(key).unwrap().map(|s| (s.state, s.reason));
    assert_eq!(state(1), Some((State::Applied, None)));
    assert_eq!(state(2), Some((State::Applied, None)));
    assert_eq!(state(3), Some((State::Skipped, Some(Reason::NoBrandRow))));
    assert_eq!(
        state(4),
        Some((State::Rejected, Some(Reason::MissingCustomerId)))
    );
    assert_eq!(
        state(5),
        Some((State::Rejected, Some(Reason::ValueOutOfRange)))
    );
    assert_eq!(
        state(6),
        Some((State::Rejected, Some(Reason::OrphanCollectorResult)))
    );
    assert_eq!(state(7), Some((State::Applied, None)));
    assert_eq!(state(8), Some((State::Applied, None)));

    let notes = h.journal.event(1).unwrap().unwrap().notes;
    let kinds: Vec<_> = notes.iter().map(Note::kind).collect();
    assert_eq!(
        kinds,
        [
            "duplicate_competitor_row",
            "unresolved_competitor",
            "unresolved_competitor"
        ]
    );
    assert!(matches!(
        &notes[0],
        Note::DuplicateCompetitorRow {
            discarded_row_id: 15,
            kept_row_id: 11,
            ..
        }
    ));
    assert_eq!(
        h.journal.event(2).unwrap().unwrap().notes[0].kind(),
        "duplicate_brand_row"
    );
    assert_eq!(
        h.journal.event(7).unwrap().unwrap().notes[0].kind(),
        "dropped_sentiment"
    );
    assert_eq!(
        h.journal.event(8).unwrap().unwrap().notes[0].kind(),
        "dropped_sentiment"
    );

    assert_eq!(summary.of(KeyResult::Applied), 4);
    assert!(summary.has_problems(), "rejections make exit code 1");
    assert_eq!(summary.unresolved_competitors.get("Nobody"), Some(&1));
    assert_eq!(summary.unresolved_competitors.get("BETA CORP"), Some(&1));
    // Source rows are never modified.
    let source: i64 = sqlx::query_scalar("SELECT count(*) FROM extracted_positions")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(source, 15);
    // One ledger row per written key.
    let ledger: Vec<i64> =
        sqlx::query_scalar("SELECT collector_result_id FROM backfill.ledger ORDER BY 1")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(ledger, vec![1, 2, 7, 8]);
}
