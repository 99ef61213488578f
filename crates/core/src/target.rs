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
