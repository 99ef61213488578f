//! What the planner writes: the target rows of one collector result, without
//! database ids (those are the database's business). Competitors are sorted by
//! competitor id so that the same inputs always give the same bytes.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decimal::Numeric52;
use crate::source::{Json, Timestamp};

/// The rows of the five target tables for one `collector_result_id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetRows {
    /// The `metric_facts` row.
    pub fact: Fact,
    /// The `brand_metrics` row (exactly one per fact).
    pub brand_metrics: Metrics,
    /// The `brand_sentiment` row, if the brand row had a usable sentiment.
    pub brand_sentiment: Option<Sentiment>,
    /// One entry per resolved competitor, sorted by `competitor_id`.
    pub competitors: Vec<CompetitorRows>,
}

/// A `metric_facts` row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // fields are the target columns of the same name
pub struct Fact {
    pub collector_result_id: i64,
    pub brand_id: Uuid,
    pub customer_id: Uuid,
    pub query_id: Uuid,
    pub collector_type: String,
    pub topic: Option<String>,
    pub collected_at: Timestamp,
    pub metadata: Option<Json>,
    pub created_at: Timestamp,
}

/// A `brand_metrics` or `competitor_metrics` row (less its keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // fields are the target columns of the same name
pub struct Metrics {
    pub visibility_index: Option<Numeric52>,
    pub share_of_answers: Option<Numeric52>,
    pub total_mentions: i32,
    pub product_mentions: i32,
    pub first_position: Option<i32>,
    pub has_presence: bool,
}

/// A `brand_sentiment` or `competitor_sentiment` row (less its keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // fields are the target columns of the same name
pub struct Sentiment {
    pub label: SentimentLabel,
    pub score: Numeric52,
    pub positive_sentences: Json,
    pub negative_sentences: Json,
}

/// The labels the target's CHECK constraint allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum SentimentLabel {
    Positive,
    Negative,
    Neutral,
}

impl SentimentLabel {
    /// The label trimmed of ASCII whitespace and upper-cased, if it is one of
    /// the three known labels.
    pub fn normalize(raw: &str) -> Option<Self> {
        let trimmed = raw.trim_ascii();
        [Self::Positive, Self::Negative, Self::Neutral]
            .into_iter()
            .find(|label| trimmed.eq_ignore_ascii_case(label.as_str()))
    }

    /// As stored in the target.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "POSITIVE",
            Self::Negative => "NEGATIVE",
            Self::Neutral => "NEUTRAL",
        }
    }
}

impl fmt::Display for SentimentLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rows for one resolved competitor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompetitorRows {
    /// `brand_competitors.id`.
    pub competitor_id: Uuid,
    /// The `competitor_metrics` row.
    pub metrics: Metrics,
    /// The `competitor_sentiment` row, if any.
    pub sentiment: Option<Sentiment>,
}

impl TargetRows {
    /// The `table.column`s whose values differ between `self` (as planned)
    /// and `other` (as read back), in a fixed order; a competitor present on
    /// one side only is named as `competitor_metrics.competitor_id`.
    pub fn diff(&self, other: &TargetRows) -> Vec<&'static str> {
        let mut out = Vec::new();
        let (a, b) = (&self.fact, &other.fact);
        let fact = [
            (
                "metric_facts.collector_result_id",
                a.collector_result_id == b.collector_result_id,
            ),
            ("metric_facts.brand_id", a.brand_id == b.brand_id),
            ("metric_facts.customer_id", a.customer_id == b.customer_id),
            ("metric_facts.query_id", a.query_id == b.query_id),
            (
                "metric_facts.collector_type",
                a.collector_type == b.collector_type,
            ),
            ("metric_facts.topic", a.topic == b.topic),
            (
                "metric_facts.collected_at",
                a.collected_at == b.collected_at,
            ),
            ("metric_facts.metadata", a.metadata == b.metadata),
            ("metric_facts.created_at", a.created_at == b.created_at),
        ];
        out.extend(fact.iter().filter(|(_, same)| !same).map(|(name, _)| *name));
        metrics_diff(
            "brand_metrics",
            &self.brand_metrics,
            &other.brand_metrics,
            &mut out,
        );
        sentiment_diff(
            "brand_sentiment",
            self.brand_sentiment.as_ref(),
            other.brand_sentiment.as_ref(),
            &mut out,
        );
        let ids = |rows: &TargetRows| {
            rows.competitors
                .iter()
                .map(|c| c.competitor_id)
                .collect::<Vec<_>>()
        };
        if ids(self) != ids(other) {
            out.push("competitor_metrics.competitor_id");
        }
        for (x, y) in self.competitors.iter().zip(&other.competitors) {
            if x.competitor_id == y.competitor_id {
                metrics_diff("competitor_metrics", &x.metrics, &y.metrics, &mut out);
                sentiment_diff(
                    "competitor_sentiment",
                    x.sentiment.as_ref(),
                    y.sentiment.as_ref(),
                    &mut out,
                );
            }
        }
        out.dedup();
        out
    }
}

fn metrics_diff(table: &'static str, a: &Metrics, b: &Metrics, out: &mut Vec<&'static str>) {
    let columns: [(&'static str, &'static str, bool); 6] = [
        (
            "brand_metrics.visibility_index",
            "competitor_metrics.visibility_index",
            a.visibility_index == b.visibility_index,
        ),
        (
            "brand_metrics.share_of_answers",
            "competitor_metrics.share_of_answers",
            a.share_of_answers == b.share_of_answers,
        ),
        (
            "brand_metrics.total_mentions",
            "competitor_metrics.total_mentions",
            a.total_mentions == b.total_mentions,
        ),
        (
            "brand_metrics.product_mentions",
            "competitor_metrics.product_mentions",
            a.product_mentions == b.product_mentions,
        ),
        (
            "brand_metrics.first_position",
            "competitor_metrics.first_position",
            a.first_position == b.first_position,
        ),
        (
            "brand_metrics.has_presence",
            "competitor_metrics.has_presence",
            a.has_presence == b.has_presence,
        ),
    ];
    for (brand, competitor, same) in columns {
        if !same {
            out.push(if table == "brand_metrics" {
                brand
            } else {
                competitor
            });
        }
    }
}

fn sentiment_diff(
    table: &'static str,
    a: Option<&Sentiment>,
    b: Option<&Sentiment>,
    out: &mut Vec<&'static str>,
) {
    let brand = table == "brand_sentiment";
    let pick = |brand_name: &'static str, competitor_name: &'static str| {
        if brand {
            brand_name
        } else {
            competitor_name
        }
    };
    match (a, b) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            out.push(pick("brand_sentiment", "competitor_sentiment"))
        }
        (Some(a), Some(b)) => {
            if a.label != b.label {
                out.push(pick(
                    "brand_sentiment.sentiment_label",
                    "competitor_sentiment.sentiment_label",
                ));
            }
            if a.score != b.score {
                out.push(pick(
                    "brand_sentiment.sentiment_score",
                    "competitor_sentiment.sentiment_score",
                ));
            }
            if a.positive_sentences != b.positive_sentences {
                out.push(pick(
                    "brand_sentiment.positive_sentences",
                    "competitor_sentiment.positive_sentences",
                ));
            }
            if a.negative_sentences != b.negative_sentences {
                out.push(pick(
                    "brand_sentiment.negative_sentences",
                    "competitor_sentiment.negative_sentences",
                ));
            }
        }
    }
}
