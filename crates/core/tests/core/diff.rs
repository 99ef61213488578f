//! `TargetRows::diff` names exactly the column that differs (the auditor's
//! per-column finding), and the small accessors the adapters and the
//! auditor's output rely on. Each expected name is written here, not taken
//! from the code under test. (Issue 13: every mutant of `diff` survived the
//! core's own tests.)

use backfill_core::testing::{realistic_group, uuid_for};
use backfill_core::{
    content_hash, current_content_hash, encode, encode_into, normalize_name, plan, Digest,
    Directories, Json, Numeric52, SentimentLabel, TargetColumn, TargetRows, Timestamp,
    MAPPING_VERSION,
};

fn base() -> TargetRows {
    let group = realistic_group(7);
    let event = plan(group.key, &group.rows, &group.directories).unwrap();
    let rows = event.target_rows().unwrap().clone();
    assert!(rows.brand_sentiment.is_some());
    assert!(rows.competitors.len() >= 2);
    assert!(rows.competitors.iter().all(|c| c.sentiment.is_some()));
    rows
}

fn n(hundredths: i32) -> Numeric52 {
    Numeric52::from_hundredths(hundredths).unwrap()
}

type Edit = fn(&mut TargetRows);

/// One edit per column, and the one name `diff` must give for it.
const EDITS: &[(&str, Edit)] = &[
    ("metric_facts.collector_result_id", |r| {
        r.fact.collector_result_id += 1
    }),
    ("metric_facts.brand_id", |r| r.fact.brand_id = uuid_for("x")),
    ("metric_facts.customer_id", |r| {
        r.fact.customer_id = uuid_for("x")
    }),
    ("metric_facts.query_id", |r| r.fact.query_id = uuid_for("x")),
    ("metric_facts.collector_type", |r| {
        r.fact.collector_type.push('!')
    }),
    ("metric_facts.topic", |r| {
        r.fact.topic = Some("other".into())
    }),
    ("metric_facts.collected_at", |r| r.fact.collected_at.0 += 1),
    ("metric_facts.metadata", |r| r.fact.metadata = None),
    ("metric_facts.created_at", |r| r.fact.created_at.0 -= 1),
    ("brand_metrics.visibility_index", |r| {
        r.brand_metrics.visibility_index = Some(n(1))
    }),
    ("brand_metrics.share_of_answers", |r| {
        r.brand_metrics.share_of_answers = None
    }),
    ("brand_metrics.total_mentions", |r| {
        r.brand_metrics.total_mentions += 1
    }),
    ("brand_metrics.product_mentions", |r| {
        r.brand_metrics.product_mentions += 1
    }),
    ("brand_metrics.first_position", |r| {
        r.brand_metrics.first_position = Some(99)
    }),
    ("brand_metrics.has_presence", |r| {
        r.brand_metrics.has_presence = !r.brand_metrics.has_presence
    }),
    ("brand_sentiment", |r| r.brand_sentiment = None),
    ("brand_sentiment.sentiment_label", |r| {
        r.brand_sentiment.as_mut().unwrap().label = SentimentLabel::Negative
    }),
    ("brand_sentiment.sentiment_score", |r| {
        r.brand_sentiment.as_mut().unwrap().score = n(-3)
    }),
    ("brand_sentiment.positive_sentences", |r| {
        r.brand_sentiment.as_mut().unwrap().positive_sentences = Json("[]".into())
    }),
    ("brand_sentiment.negative_sentences", |r| {
        r.brand_sentiment.as_mut().unwrap().negative_sentences = Json("[\"x\"]".into())
    }),
    ("competitor_metrics.competitor_id", |r| {
        r.competitors.pop();
    }),
    ("competitor_metrics.visibility_index", |r| {
        r.competitors[1].metrics.visibility_index = None
    }),
    ("competitor_metrics.share_of_answers", |r| {
        r.competitors[1].metrics.share_of_answers = Some(n(2))
    }),
    ("competitor_metrics.total_mentions", |r| {
        r.competitors[1].metrics.total_mentions += 1
    }),
    ("competitor_metrics.product_mentions", |r| {
        r.competitors[1].metrics.product_mentions += 1
    }),
    ("competitor_metrics.first_position", |r| {
        r.competitors[1].metrics.first_position = None
    }),
    ("competitor_metrics.has_presence", |r| {
        r.competitors[1].metrics.has_presence = !r.competitors[1].metrics.has_presence
    }),
    ("competitor_sentiment", |r| {
        r.competitors[1].sentiment = None
    }),
    ("competitor_sentiment.sentiment_label", |r| {
        r.competitors[1].sentiment.as_mut().unwrap().label = SentimentLabel::Positive
    }),
    ("competitor_sentiment.sentiment_score", |r| {
        r.competitors[1].sentiment.as_mut().unwrap().score = n(100)
    }),
    ("competitor_sentiment.positive_sentences", |r| {
        r.competitors[1]
            .sentiment
            .as_mut()
            .unwrap()
            .positive_sentences = Json("[]".into())
    }),
    ("competitor_sentiment.negative_sentences", |r| {
        r.competitors[1]
            .sentiment
            .as_mut()
            .unwrap()
            .negative_sentences = Json("[\"y\"]".into())
    }),
];

#[test]
fn identical_rows_differ_nowhere() {
    assert_eq!(base().diff(&base()), Vec::<&str>::new());
}

#[test]
fn each_column_changed_alone_is_named_alone_both_ways() {
    let planned = base();
    for (name, edit) in EDITS {
        let mut read_back = planned.clone();
        edit(&mut read_back);
        assert_ne!(read_back, planned, "the edit for {name} changes nothing");
        assert_eq!(
            planned.diff(&read_back),
            vec![*name],
            "planned vs read back"
        );
        assert_eq!(
            read_back.diff(&planned),
            vec![*name],
            "read back vs planned"
        );
    }
}

#[test]
fn several_changes_are_named_in_table_order_once_each() {
    let planned = base();
    let mut read_back = planned.clone();
    read_back.fact.topic = None;
    read_back.competitors[0].metrics.total_mentions += 1;
    read_back.competitors[1].metrics.total_mentions += 1;
    read_back.brand_metrics.has_presence = !read_back.brand_metrics.has_presence;
    assert_eq!(
        planned.diff(&read_back),
        vec![
            "metric_facts.topic",
            "brand_metrics.has_presence",
            "competitor_metrics.total_mentions"
        ]
    );
}

#[test]
fn target_columns_are_named_as_in_the_target() {
    let names: Vec<(String, &str)> = [
        TargetColumn::BrandMetricsVisibilityIndex,
        TargetColumn::BrandMetricsShareOfAnswers,
        TargetColumn::BrandSentimentScore,
        TargetColumn::CompetitorMetricsVisibilityIndex,
        TargetColumn::CompetitorMetricsShareOfAnswers,
        TargetColumn::CompetitorSentimentScore,
    ]
    .iter()
    .map(|c| (c.to_string(), c.as_str()))
    .collect();
    assert_eq!(
        names.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        [
            "brand_metrics.visibility_index",
            "brand_metrics.share_of_answers",
            "brand_sentiment.sentiment_score",
            "competitor_metrics.visibility_index",
            "competitor_metrics.share_of_answers",
            "competitor_sentiment.sentiment_score",
        ]
    );
    assert!(names.iter().all(|(display, s)| display == s));
    assert_eq!(SentimentLabel::Neutral.to_string(), "NEUTRAL");
    assert_eq!(Json("[1, 2]".into()).to_string(), "[1, 2]");
    assert_eq!(Timestamp(-42).micros(), -42);
}

#[test]
fn encode_into_appends_the_same_bytes_as_encode() {
    let rows = base();
    let mut out = vec![0xEE];
    encode_into(&rows, &mut out).unwrap();
    assert_eq!(out[0], 0xEE);
    assert_eq!(&out[1..], encode(&rows).unwrap().as_slice());
}

#[test]
fn digest_accessors_and_the_current_version() {
    let group = realistic_group(7);
    let event = plan(group.key, &group.rows, &group.directories).unwrap();
    let digest = event.content_hash;
    assert_eq!(digest.as_bytes(), &digest.0);
    assert_ne!(digest.as_bytes(), &[0; 32]);
    assert_eq!(
        format!("{digest:?}"),
        format!("Digest({})", digest.to_hex())
    );
    assert_eq!(current_content_hash(&event.outcome).unwrap(), digest);
    assert_eq!(
        content_hash(MAPPING_VERSION, &event.outcome).unwrap(),
        current_content_hash(&event.outcome).unwrap()
    );
    assert_ne!(
        current_content_hash(&event.outcome).unwrap(),
        Digest::default()
    );
}

#[test]
fn normalized_names_collapse_inner_whitespace_to_one_space() {
    assert_eq!(normalize_name("  Acme \t  Corp "), "acme corp");
    assert_eq!(normalize_name("ÉLAN"), "élan");
    assert_eq!(normalize_name(" "), "");
}

#[test]
fn collector_results_are_forgotten_when_cleared() {
    let mut directories = Directories::new();
    directories.add_collector_result(5, Timestamp(10));
    assert_eq!(
        directories.collector_result_created_at(5),
        Some(Timestamp(10))
    );
    directories.clear_collector_results();
    assert_eq!(directories.collector_result_created_at(5), None);
}
