//! One test per mapping rule of DESIGN §3; each name says which rule.

use backfill_core::testing::{dec, uuid_for, GroupBuilder};
use backfill_core::{
    plan, DroppedSentiment, MigrationEvent, Note, Outcome, RejectReason, Resolution,
    SentimentLabel, Side, SkipReason, TargetColumn, TargetRows, Timestamp, Unresolved,
};

fn run(builder: GroupBuilder) -> MigrationEvent {
    let group = builder.build();
    plan(group.key, &group.rows, &group.directories).expect("plan")
}

fn migrated(event: &MigrationEvent) -> &TargetRows {
    event
        .target_rows()
        .unwrap_or_else(|| panic!("expected Migrate, got {:?}", event.outcome))
}

#[test]
fn brand_row_is_the_row_with_null_or_blank_competitor_name() {
    for blank in [None, Some(""), Some("   "), Some("\t\n")] {
        let event = run(GroupBuilder::new(1).brand(|r| {
            r.competitor_name = blank.map(str::to_owned);
            r.topic = Some("pricing".into());
        }));
        assert_eq!(
            migrated(&event).fact.topic.as_deref(),
            Some("pricing"),
            "{blank:?}"
        );
    }
}

#[test]
fn no_brand_row_skips_the_group_and_writes_nothing() {
    let event = run(GroupBuilder::new(1)
        .competitor("Acme", Some("1"))
        .without_brand_row());
    assert_eq!(event.outcome, Outcome::Skip(SkipReason::NoBrandRow));
    assert_eq!(SkipReason::NoBrandRow.code(), "no_brand_row");
}

#[test]
fn several_brand_rows_latest_by_processed_at_then_id_wins_and_others_are_noted() {
    let group = GroupBuilder::new(7)
        .brand(|r| {
            r.processed_at = Timestamp(200);
            r.topic = Some("first".into());
        })
        .extra_brand_row(|r| {
            r.processed_at = Timestamp(300);
            r.topic = Some("latest".into());
        })
        .extra_brand_row(|r| {
            r.processed_at = Timestamp(300);
            r.topic = Some("latest, higher id".into());
            r.competitor_name = Some(" ".into());
        })
        .build();
    let event = plan(group.key, &group.rows, &group.directories).unwrap();
    let rows = migrated(&event);
    assert_eq!(rows.fact.topic.as_deref(), Some("latest, higher id"));
    assert_eq!(rows.fact.collected_at, Timestamp(300));
    let kept = group.rows[2].id;
    assert_eq!(
        event.notes,
        vec![
            Note::DuplicateBrandRow {
                discarded_row_id: group.rows[0].id,
                kept_row_id: kept
            },
            Note::DuplicateBrandRow {
                discarded_row_id: group.rows[1].id,
                kept_row_id: kept
            },
        ]
    );
}

#[test]
fn fact_columns_come_from_the_brand_row_and_collector_results() {
    let group = GroupBuilder::new(9)
        .brand(|r| {
            r.collector_type = "perplexity".into();
            r.topic = None;
            r.metadata = Some(backfill_core::Json("{\"a\": 1}".into()));
            r.processed_at = Timestamp(5_000);
        })
        .build();
    let event = plan(group.key, &group.rows, &group.directories).unwrap();
    let fact = &migrated(&event).fact;
    assert_eq!(fact.collector_result_id, 9);
    assert_eq!(fact.brand_id, group.brand_id);
    assert_eq!(fact.query_id, uuid_for("query"));
    assert_eq!(fact.collector_type, "perplexity");
    assert_eq!(fact.topic, None);
    assert_eq!(fact.metadata.as_ref().unwrap().as_str(), "{\"a\": 1}");
    assert_eq!(fact.collected_at, Timestamp(5_000));
    assert_eq!(
        Some(fact.created_at),
        group.directories.collector_result_created_at(9),
        "created_at is the original collection time"
    );
}

#[test]
fn customer_id_from_brand_row_first() {
    let own = uuid_for("own customer");
    let event = run(GroupBuilder::new(1).brand(|r| r.customer_id = Some(own)));
    assert_eq!(migrated(&event).fact.customer_id, own);
}

#[test]
fn customer_id_falls_back_to_brands_customer_id() {
    let fallback = uuid_for("brand's customer");
    let event = run(GroupBuilder::new(1)
        .brand(|r| r.customer_id = None)
        .brand_customer(Some(Some(fallback))));
    assert_eq!(migrated(&event).fact.customer_id, fallback);
}

#[test]
fn missing_customer_id_rejects_the_group() {
    for directory in [None, Some(None)] {
        let event = run(GroupBuilder::new(1)
            .brand(|r| r.customer_id = None)
            .brand_customer(directory));
        assert!(
            matches!(&event.outcome, Outcome::Reject(r @ RejectReason::MissingCustomerId { brand_id }) if *brand_id == uuid_for("brand") && r.code() == "missing_customer_id"),
            "{:?}",
            event.outcome
        );
    }
}

#[test]
fn orphan_collector_result_rejects_the_group() {
    let event = run(GroupBuilder::new(1).orphan());
    assert_eq!(
        event.outcome,
        Outcome::Reject(RejectReason::OrphanCollectorResult)
    );
}

#[test]
fn brand_metrics_mapping() {
    let event = run(GroupBuilder::new(1).brand(|r| {
        r.visibility_index = Some(dec("45.678"));
        r.share_of_answers_brand = Some(dec("0.125"));
        r.total_brand_mentions = Some(4);
        r.brand_first_position = Some(2);
        r.has_brand_presence = true;
    }));
    let m = &migrated(&event).brand_metrics;
    assert_eq!(m.visibility_index.unwrap().to_string(), "45.68");
    assert_eq!(m.share_of_answers.unwrap().to_string(), "0.13");
    assert_eq!((m.total_mentions, m.product_mentions), (4, 4));
    assert_eq!(m.first_position, Some(2));
    assert!(m.has_presence);
}

#[test]
fn brand_metrics_null_mentions_become_zero_but_null_metrics_stay_null() {
    let event = run(GroupBuilder::new(1).brand(|r| {
        r.total_brand_mentions = None;
        r.visibility_index = None;
        r.share_of_answers_brand = None;
        r.brand_first_position = None;
    }));
    let m = &migrated(&event).brand_metrics;
    assert_eq!((m.total_mentions, m.product_mentions), (0, 0));
    assert_eq!(
        (m.visibility_index, m.share_of_answers, m.first_position),
        (None, None, None)
    );
}

#[test]
fn brand_sentiment_written_for_known_label_with_score() {
    let event = run(GroupBuilder::new(1).brand(|r| {
        r.sentiment_label = Some("  positive\n".into());
        r.sentiment_score = Some(dec("0.455"));
        r.sentiment_positive_sentences = None;
        r.sentiment_negative_sentences = Some(backfill_core::Json("[\"bad\"]".into()));
    }));
    let s = migrated(&event)
        .brand_sentiment
        .as_ref()
        .expect("sentiment");
    assert_eq!(s.label, SentimentLabel::Positive);
    assert_eq!(s.score.to_string(), "0.46");
    assert_eq!(
        s.positive_sentences.as_str(),
        "[]",
        "NULL sentences become []"
    );
    assert_eq!(s.negative_sentences.as_str(), "[\"bad\"]");
    assert!(event.notes.is_empty());
}

#[test]
fn brand_sentiment_scores_are_copied_without_rescaling() {
    let event = run(GroupBuilder::new(1).brand(|r| {
        r.sentiment_label = Some("NEUTRAL".into());
        r.sentiment_score = Some(dec("87"));
    }));
    assert_eq!(
        migrated(&event)
            .brand_sentiment
            .as_ref()
            .unwrap()
            .score
            .to_string(),
        "87.00"
    );
}

#[test]
fn brand_sentiment_unknown_label_or_missing_score_is_dropped_with_a_note() {
    let cases = [
        (
            Some("MIXED"),
            Some("0.5"),
            DroppedSentiment::UnknownLabel {
                label: "MIXED".into(),
            },
        ),
        (Some("NEGATIVE"), None, DroppedSentiment::MissingScore),
        (None, Some("0.5"), DroppedSentiment::ScoreWithoutLabel),
    ];
    for (label, score, reason) in cases {
        let group = GroupBuilder::new(1)
            .brand(|r| {
                r.sentiment_label = label.map(str::to_owned);
                r.sentiment_score = score.map(dec);
            })
            .build();
        let event = plan(1, &group.rows, &group.directories).unwrap();
        assert_eq!(migrated(&event).brand_sentiment, None);
        assert_eq!(
            event.notes,
            vec![Note::DroppedSentiment {
                row_id: group.rows[0].id,
                side: Side::Brand,
                reason
            }]
        );
    }
}

#[test]
fn no_label_and_no_score_is_no_sentiment_and_no_note() {
    let event = run(GroupBuilder::new(1));
    assert_eq!(migrated(&event).brand_sentiment, None);
    assert!(event.notes.is_empty());
}

#[test]
fn competitor_resolution_exact_match_first() {
    let group = GroupBuilder::new(1)
        .configure_competitor("acme")
        .competitor("Acme", Some("1"))
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    let rows = migrated(&event);
    assert_eq!(rows.competitors.len(), 1);
    assert_eq!(
        rows.competitors[0].competitor_id,
        group.competitor_id("Acme")
    );
}

#[test]
fn competitor_resolution_exact_duplicates_take_the_smallest_uuid() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Acme")
        .configure_competitor("Acme")
        .competitor_row("Acme", |_| {})
        .build();
    let brand = group.brand_id;
    let Resolution::Resolved(id) = group.directories.resolve_competitor(brand, "Acme") else {
        panic!("exact name with two ids must resolve");
    };
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert_eq!(migrated(&event).competitors[0].competitor_id, id);
    // The smallest by byte order, which is how Postgres orders uuid.
    let mut ids = vec![group.competitor_id("Acme")];
    let mut dirs_probe = backfill_core::Directories::new();
    dirs_probe.add_competitor(brand, id, "x");
    ids.push(id);
    ids.sort();
    assert_eq!(ids[0], id);
}

#[test]
fn competitor_resolution_normalized_match_when_unique() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Beta Corp")
        .competitor_row("  beta   CORP ", |_| {})
        .competitor_row("éclair", |_| {})
        .configure_competitor("ÉCLAIR")
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    let mut ids: Vec<_> = migrated(&event)
        .competitors
        .iter()
        .map(|c| c.competitor_id)
        .collect();
    let mut expected = vec![
        group.competitor_id("Beta Corp"),
        group.competitor_id("ÉCLAIR"),
    ];
    ids.sort();
    expected.sort();
    assert_eq!(
        ids, expected,
        "Unicode lower-casing applies to the normalized match"
    );
}

#[test]
fn competitor_resolution_ambiguous_normalized_match_is_unresolved_with_a_note() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Acme")
        .configure_competitor("ACME")
        .competitor_row("acme", |_| {})
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert!(migrated(&event).competitors.is_empty());
    assert_eq!(
        event.notes,
        vec![Note::UnresolvedCompetitor {
            row_id: group.rows[1].id,
            name: "acme".into(),
            resolution: Unresolved::Ambiguous { candidates: 2 },
        }]
    );
}

#[test]
fn competitor_resolution_unknown_name_is_skipped_with_a_note_naming_it() {
    let group = GroupBuilder::new(1)
        .competitor_row("Nobody Inc", |_| {})
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert!(migrated(&event).competitors.is_empty());
    assert_eq!(
        event.notes,
        vec![Note::UnresolvedCompetitor {
            row_id: group.rows[1].id,
            name: "Nobody Inc".into(),
            resolution: Unresolved::NotFound,
        }]
    );
}

#[test]
fn competitor_resolution_uses_the_brand_rows_brand() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Acme")
        .competitor_row("Acme", |_| {})
        .brand(|r| r.brand_id = uuid_for("another brand"))
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert!(migrated(&event).competitors.is_empty());
    assert_eq!(event.notes[0].kind(), "unresolved_competitor");
}

#[test]
fn competitor_duplicates_latest_by_processed_at_then_id_wins() {
    let group = GroupBuilder::new(1)
        .competitor_row("Acme", |r| {
            r.processed_at = Timestamp(500);
            r.competitor_mentions = Some(1);
        })
        .configure_competitor("Acme")
        .competitor_row("acme ", |r| {
            r.processed_at = Timestamp(400);
            r.competitor_mentions = Some(2);
        })
        .competitor_row("Acme", |r| {
            r.processed_at = Timestamp(500);
            r.competitor_mentions = Some(3);
        })
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    let rows = migrated(&event);
    assert_eq!(rows.competitors.len(), 1);
    assert_eq!(rows.competitors[0].metrics.total_mentions, 3);
    let id = group.competitor_id("Acme");
    assert_eq!(
        event.notes,
        vec![
            Note::DuplicateCompetitorRow {
                discarded_row_id: group.rows[2].id,
                kept_row_id: group.rows[1].id,
                competitor_id: id
            },
            Note::DuplicateCompetitorRow {
                discarded_row_id: group.rows[1].id,
                kept_row_id: group.rows[3].id,
                competitor_id: id
            },
        ]
    );
}

#[test]
fn competitor_metrics_mapping() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Acme")
        .competitor_row("Acme", |r| {
            r.visibility_index_competitor = Some(dec("12.345"));
            r.share_of_answers_competitor = Some(dec("-0.455"));
            r.competitor_mentions = Some(3);
            r.competitor_positions = Some(vec![Some(4), Some(9)]);
        })
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    let m = &migrated(&event).competitors[0].metrics;
    assert_eq!(m.visibility_index.unwrap().to_string(), "12.35");
    assert_eq!(m.share_of_answers.unwrap().to_string(), "-0.46");
    assert_eq!((m.total_mentions, m.product_mentions), (3, 3));
    assert_eq!(m.first_position, Some(4));
    assert!(m.has_presence);
}

#[test]
fn competitor_metrics_first_position_null_for_null_or_empty_positions_and_presence_from_mentions() {
    for (positions, mentions) in [
        (None, None),
        (Some(vec![]), Some(0)),
        (Some(vec![None, Some(3)]), None),
    ] {
        let group = GroupBuilder::new(1)
            .configure_competitor("Acme")
            .competitor_row("Acme", |r| {
                r.competitor_positions = positions.clone();
                r.competitor_mentions = mentions;
            })
            .build();
        let event = plan(1, &group.rows, &group.directories).unwrap();
        let m = &migrated(&event).competitors[0].metrics;
        assert_eq!(m.first_position, None);
        assert_eq!((m.total_mentions, m.has_presence), (0, false));
        assert_eq!((m.visibility_index, m.share_of_answers), (None, None));
    }
}

#[test]
fn competitor_sentiment_follows_the_brand_sentiment_rules() {
    let group = GroupBuilder::new(1)
        .configure_competitor("Acme")
        .configure_competitor("Beta")
        .competitor_row("Acme", |r| {
            r.sentiment_label_competitor = Some("negative".into());
            r.sentiment_score_competitor = Some(dec("-0.5"));
            r.sentiment_negative_sentences_competitor = None;
        })
        .competitor_row("Beta", |r| {
            r.sentiment_label_competitor = Some("great".into());
            r.sentiment_score_competitor = Some(dec("1"));
        })
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    let rows = migrated(&event);
    let acme = rows
        .competitors
        .iter()
        .find(|c| c.competitor_id == group.competitor_id("Acme"))
        .unwrap();
    let beta = rows
        .competitors
        .iter()
        .find(|c| c.competitor_id == group.competitor_id("Beta"))
        .unwrap();
    let s = acme.sentiment.as_ref().unwrap();
    assert_eq!(
        (s.label, s.score.to_string(), s.negative_sentences.as_str()),
        (SentimentLabel::Negative, "-0.50".into(), "[]")
    );
    assert_eq!(beta.sentiment, None);
    assert_eq!(
        event.notes,
        vec![Note::DroppedSentiment {
            row_id: group.rows[2].id,
            side: Side::Competitor,
            reason: DroppedSentiment::UnknownLabel {
                label: "great".into()
            },
        }]
    );
}

#[test]
fn competitors_are_sorted_by_competitor_id() {
    let mut builder = GroupBuilder::new(1);
    for name in ["Zeta", "Alpha", "Mid", "Beta", "Omega"] {
        builder = builder.competitor(name, None);
    }
    let event = run(builder);
    let ids: Vec<_> = migrated(&event)
        .competitors
        .iter()
        .map(|c| c.competitor_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 5);
}

#[test]
fn numbers_out_of_range_on_written_values_reject_naming_column_and_value() {
    let group = GroupBuilder::new(1)
        .brand(|r| r.share_of_answers_brand = Some(dec("999.995")))
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert_eq!(
        event.outcome,
        Outcome::Reject(RejectReason::ValueOutOfRange {
            row_id: group.rows[0].id,
            column: TargetColumn::BrandMetricsShareOfAnswers,
            value: "999.995".into(),
        })
    );
    let Outcome::Reject(reason) = &event.outcome else {
        unreachable!()
    };
    let text = reason.to_string();
    assert!(
        text.contains("share_of_answers_brand") && text.contains("999.995"),
        "{text}"
    );

    let event = run(GroupBuilder::new(2).competitor("Acme", Some("NaN")));
    assert!(matches!(
        event.outcome,
        Outcome::Reject(RejectReason::ValueOutOfRange { column: TargetColumn::CompetitorMetricsVisibilityIndex, ref value, .. }) if value == "NaN"
    ));

    let event = run(GroupBuilder::new(3).brand(|r| {
        r.sentiment_label = Some("POSITIVE".into());
        r.sentiment_score = Some(dec("1000"));
    }));
    assert!(matches!(
        event.outcome,
        Outcome::Reject(RejectReason::ValueOutOfRange {
            column: TargetColumn::BrandSentimentScore,
            ..
        })
    ));
}

#[test]
fn numbers_out_of_range_on_values_not_written_do_not_reject() {
    let group = GroupBuilder::new(1)
        // Unresolved competitor with a huge value.
        .competitor_row("Nobody", |r| {
            r.visibility_index_competitor = Some(dec("5000"))
        })
        // Discarded duplicate with NaN.
        .configure_competitor("Acme")
        .competitor_row("Acme", |r| {
            r.processed_at = Timestamp(1);
            r.share_of_answers_competitor = Some(dec("NaN"));
        })
        .competitor_row("Acme", |r| r.processed_at = Timestamp(2))
        // Dropped sentiment (unknown label) with an out-of-range score.
        .brand(|r| {
            r.sentiment_label = Some("MIXED".into());
            r.sentiment_score = Some(dec("-1000"));
        })
        .build();
    let event = plan(1, &group.rows, &group.directories).unwrap();
    assert_eq!(migrated(&event).competitors.len(), 1);
    assert_eq!(event.notes.len(), 3);
}

#[test]
fn numbers_rounding_edge_cases_through_plan() {
    for (input, expected) in [
        ("0.455", Some("0.46")),
        ("-0.455", Some("-0.46")),
        ("0.454", Some("0.45")),
        ("99.995", Some("100.00")),
        ("999.994", Some("999.99")),
        ("999.995", None),
        ("NaN", None),
    ] {
        let event = run(GroupBuilder::new(1).brand(|r| r.visibility_index = Some(dec(input))));
        let got = event
            .target_rows()
            .map(|t| t.brand_metrics.visibility_index.unwrap().to_string());
        assert_eq!(got.as_deref(), expected, "{input}");
    }
}

#[test]
fn rows_of_another_key_are_an_error_not_a_silent_merge() {
    let mut group = GroupBuilder::new(1).build();
    group.rows[0].collector_result_id = 2;
    let err = plan(1, &group.rows, &group.directories).unwrap_err();
    assert!(matches!(
        err,
        backfill_core::Error::ForeignRow {
            expected: 1,
            actual: 2,
            ..
        }
    ));
}
