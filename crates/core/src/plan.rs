//! The mapping rules of DESIGN §3 as one pure function. Every decision that
//! loses or changes data ends either in the outcome or in a note.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::decimal::{Decimal, Numeric52};
use crate::event::{
    DroppedSentiment, MigrationEvent, Note, Outcome, RejectReason, Side, SkipReason, TargetColumn,
    Unresolved,
};
use crate::hash::{content_hash, source_hash, SourceInputs};
use crate::source::{Directories, Json, Resolution, SourceRow};
use crate::target::{CompetitorRows, Fact, Metrics, Sentiment, SentimentLabel, TargetRows};
use crate::{Error, Result, MAPPING_VERSION};

/// Plans one collector result: the rows of `extracted_positions` with this
/// `collector_result_id` (in any order) and the directories give one
/// deterministic [`MigrationEvent`].
///
/// Rule order: no brand row → skip `no_brand_row`; no `collector_results` row
/// → reject `orphan_collector_result`; no customer → reject
/// `missing_customer_id`; a written value outside `numeric(5,2)` → reject
/// `value_out_of_range` (brand row first, then competitors by id).
///
/// # Errors
/// [`Error::ForeignRow`] if a row belongs to another key (a caller bug: the
/// group was not read whole and alone).
pub fn plan(
    collector_result_id: i64,
    rows: &[SourceRow],
    dirs: &Directories,
) -> Result<MigrationEvent> {
    if let Some(row) = rows
        .iter()
        .find(|r| r.collector_result_id != collector_result_id)
    {
        return Err(Error::ForeignRow {
            expected: collector_result_id,
            actual: row.collector_result_id,
            row_id: row.id,
        });
    }
    let mut order: Vec<&SourceRow> = rows.iter().collect();
    order.sort_unstable_by_key(|r| r.recency());

    let mut notes = Vec::new();
    let Some(brand) = order.iter().rev().find(|r| r.is_brand_row()).copied() else {
        order.sort_unstable_by_key(|r| r.id);
        let inputs = SourceInputs {
            collector_result_id,
            rows: order,
            brand_customer: None,
            collector_result_created_at: None,
            resolutions: Vec::new(),
        };
        return finish(
            collector_result_id,
            Outcome::Skip(SkipReason::NoBrandRow),
            notes,
            &inputs,
        );
    };

    let brand_id = brand.brand_id;
    let mut resolutions: BTreeMap<&str, Resolution> = BTreeMap::new();
    let mut winners: BTreeMap<Uuid, &SourceRow> = BTreeMap::new();
    for row in &order {
        let Some(name) = row
            .competitor_name
            .as_deref()
            .filter(|_| !row.is_brand_row())
        else {
            if row.id != brand.id {
                notes.push(Note::DuplicateBrandRow {
                    discarded_row_id: row.id,
                    kept_row_id: brand.id,
                });
            }
            continue;
        };
        let resolution = *resolutions
            .entry(name)
            .or_insert_with(|| dirs.resolve_competitor(brand_id, name));
        let unresolved = match resolution {
            Resolution::Resolved(competitor_id) => {
                if let Some(previous) = winners.insert(competitor_id, row) {
                    notes.push(Note::DuplicateCompetitorRow {
                        discarded_row_id: previous.id,
                        kept_row_id: row.id,
                        competitor_id,
                    });
                }
                continue;
            }
            Resolution::NotFound => Unresolved::NotFound,
            Resolution::Ambiguous(candidates) => Unresolved::Ambiguous { candidates },
        };
        notes.push(Note::UnresolvedCompetitor {
            row_id: row.id,
            name: name.to_owned(),
            resolution: unresolved,
        });
    }

    let created_at = dirs.collector_result_created_at(collector_result_id);
    let brand_customer = brand
        .customer_id
        .is_none()
        .then(|| dirs.brand_customer(brand_id).flatten());
    let outcome = match build(
        collector_result_id,
        brand,
        &winners,
        created_at,
        brand_customer,
        &mut notes,
    ) {
        Ok(rows) => Outcome::Migrate(rows),
        Err(reason) => Outcome::Reject(reason),
    };

    order.sort_unstable_by_key(|r| r.id);
    let inputs = SourceInputs {
        collector_result_id,
        rows: order,
        brand_customer,
        collector_result_created_at: Some(created_at),
        resolutions: resolutions.into_iter().collect(),
    };
    finish(collector_result_id, outcome, notes, &inputs)
}

fn finish(
    collector_result_id: i64,
    outcome: Outcome,
    notes: Vec<Note>,
    inputs: &SourceInputs<'_>,
) -> Result<MigrationEvent> {
    Ok(MigrationEvent {
        collector_result_id,
        mapping_version: MAPPING_VERSION,
        source_hash: source_hash(MAPPING_VERSION, inputs)?,
        content_hash: content_hash(MAPPING_VERSION, &outcome)?,
        outcome,
        notes,
    })
}

fn build(
    collector_result_id: i64,
    brand: &SourceRow,
    winners: &BTreeMap<Uuid, &SourceRow>,
    created_at: Option<crate::Timestamp>,
    brand_customer: Option<Option<Uuid>>,
    notes: &mut Vec<Note>,
) -> std::result::Result<TargetRows, RejectReason> {
    let created_at = created_at.ok_or(RejectReason::OrphanCollectorResult)?;
    let customer_id =
        brand
            .customer_id
            .or(brand_customer.flatten())
            .ok_or(RejectReason::MissingCustomerId {
                brand_id: brand.brand_id,
            })?;

    let brand_mentions = brand.total_brand_mentions.unwrap_or(0);
    let brand_metrics = Metrics {
        visibility_index: fit(
            brand.id,
            TargetColumn::BrandMetricsVisibilityIndex,
            brand.visibility_index.as_ref(),
        )?,
        share_of_answers: fit(
            brand.id,
            TargetColumn::BrandMetricsShareOfAnswers,
            brand.share_of_answers_brand.as_ref(),
        )?,
        total_mentions: brand_mentions,
        product_mentions: brand_mentions,
        first_position: brand.brand_first_position,
        has_presence: brand.has_brand_presence,
    };
    let brand_sentiment = sentiment(
        SentimentInput {
            row_id: brand.id,
            side: Side::Brand,
            column: TargetColumn::BrandSentimentScore,
            label: brand.sentiment_label.as_deref(),
            score: brand.sentiment_score.as_ref(),
            positive: brand.sentiment_positive_sentences.as_ref(),
            negative: brand.sentiment_negative_sentences.as_ref(),
        },
        notes,
    )?;

    let mut competitors = Vec::with_capacity(winners.len());
    for (&competitor_id, row) in winners {
        let mentions = row.competitor_mentions.unwrap_or(0);
        let metrics = Metrics {
            visibility_index: fit(
                row.id,
                TargetColumn::CompetitorMetricsVisibilityIndex,
                row.visibility_index_competitor.as_ref(),
            )?,
            share_of_answers: fit(
                row.id,
                TargetColumn::CompetitorMetricsShareOfAnswers,
                row.share_of_answers_competitor.as_ref(),
            )?,
            total_mentions: mentions,
            product_mentions: mentions,
            first_position: row
                .competitor_positions
                .as_ref()
                .and_then(|positions| positions.first().copied().flatten()),
            has_presence: mentions > 0,
        };
        let sentiment = sentiment(
            SentimentInput {
                row_id: row.id,
                side: Side::Competitor,
                column: TargetColumn::CompetitorSentimentScore,
                label: row.sentiment_label_competitor.as_deref(),
                score: row.sentiment_score_competitor.as_ref(),
                positive: row.sentiment_positive_sentences_competitor.as_ref(),
                negative: row.sentiment_negative_sentences_competitor.as_ref(),
            },
            notes,
        )?;
        competitors.push(CompetitorRows {
            competitor_id,
            metrics,
            sentiment,
        });
    }

    Ok(TargetRows {
        fact: Fact {
            collector_result_id,
            brand_id: brand.brand_id,
            customer_id,
            query_id: brand.query_id,
            collector_type: brand.collector_type.clone(),
            topic: brand.topic.clone(),
            collected_at: brand.processed_at,
            metadata: brand.metadata.clone(),
            created_at,
        },
        brand_metrics,
        brand_sentiment,
        competitors,
    })
}

/// A value that will be written must fit `numeric(5,2)`; NULL stays NULL.
fn fit(
    row_id: i64,
    column: TargetColumn,
    value: Option<&Decimal>,
) -> std::result::Result<Option<Numeric52>, RejectReason> {
    value.map(|v| fit_one(row_id, column, v)).transpose()
}

fn fit_one(
    row_id: i64,
    column: TargetColumn,
    value: &Decimal,
) -> std::result::Result<Numeric52, RejectReason> {
    value
        .to_numeric_5_2()
        .ok_or_else(|| RejectReason::ValueOutOfRange {
            row_id,
            column,
            value: value.to_string(),
        })
}

struct SentimentInput<'a> {
    row_id: i64,
    side: Side,
    column: TargetColumn,
    label: Option<&'a str>,
    score: Option<&'a Decimal>,
    positive: Option<&'a Json>,
    negative: Option<&'a Json>,
}

fn sentiment(
    input: SentimentInput<'_>,
    notes: &mut Vec<Note>,
) -> std::result::Result<Option<Sentiment>, RejectReason> {
    let dropped = match (input.label, input.score) {
        (None, None) => return Ok(None),
        (None, Some(_)) => DroppedSentiment::ScoreWithoutLabel,
        (Some(raw), score) => match (SentimentLabel::normalize(raw), score) {
            (None, _) => DroppedSentiment::UnknownLabel {
                label: raw.to_owned(),
            },
            (Some(_), None) => DroppedSentiment::MissingScore,
            (Some(label), Some(score)) => {
                let score = fit_one(input.row_id, input.column, score)?;
                return Ok(Some(Sentiment {
                    label,
                    score,
                    positive_sentences: input.positive.cloned().unwrap_or_else(Json::empty_array),
                    negative_sentences: input.negative.cloned().unwrap_or_else(Json::empty_array),
                }));
            }
        },
    };
    notes.push(Note::DroppedSentiment {
        row_id: input.row_id,
        side: input.side,
        reason: dropped,
    });
    Ok(None)
}
