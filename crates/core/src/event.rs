//! The unit of work and of audit: one event per `collector_result_id`, saying
//! what the target should hold for it (or why nothing), what was noticed on the
//! way, and the two hashes that make checkpoints and verification possible.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::Digest;
use crate::target::TargetRows;

/// The planned migration of one collector result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationEvent {
    /// The key: `extracted_positions.collector_result_id`.
    pub collector_result_id: i64,
    /// [`crate::MAPPING_VERSION`] at planning time.
    pub mapping_version: u32,
    /// What to write, or why nothing.
    pub outcome: Outcome,
    /// Everything noticed and not written (never dropped silently).
    pub notes: Vec<Note>,
    /// Hash of everything the plan read: see [`crate::source_hash`].
    pub source_hash: Digest,
    /// Hash of the outcome: see [`crate::content_hash`].
    pub content_hash: Digest,
}

impl MigrationEvent {
    /// The target rows, if the outcome is [`Outcome::Migrate`].
    pub fn target_rows(&self) -> Option<&TargetRows> {
        match &self.outcome {
            Outcome::Migrate(rows) => Some(rows),
            _ => None,
        }
    }
}

/// What happens to a collector result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // Migrate is the common case; boxing it buys nothing
pub enum Outcome {
    /// Write these rows.
    Migrate(TargetRows),
    /// Nothing to write, by design.
    Skip(SkipReason),
    /// The source cannot be written as it is; someone must fix it.
    Reject(RejectReason),
}

/// Why a group is skipped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Exhaustive on purpose: `backfill_journal::Reason` mirrors it, and a new
// reason is a new mapping version.
pub enum SkipReason {
    /// The group has no brand row (`competitor_name` NULL or blank).
    NoBrandRow,
}

impl SkipReason {
    /// The stable reason code used in JSON and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoBrandRow => "no_brand_row",
        }
    }
}

/// Why a group is rejected.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Exhaustive on purpose, as `SkipReason`.
pub enum RejectReason {
    /// No `collector_results` row has this id.
    OrphanCollectorResult,
    /// Neither the brand row nor `brands` gives a customer id.
    MissingCustomerId {
        /// The brand whose `brands.customer_id` was consulted.
        brand_id: Uuid,
    },
    /// A value that would be written does not fit `numeric(5,2)`.
    ValueOutOfRange {
        /// The `extracted_positions.id` it came from.
        row_id: i64,
        /// The target column it was going to.
        column: TargetColumn,
        /// The source value, as text.
        value: String,
    },
}

impl RejectReason {
    /// The stable reason code used in JSON and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OrphanCollectorResult => "orphan_collector_result",
            Self::MissingCustomerId { .. } => "missing_customer_id",
            Self::ValueOutOfRange { .. } => "value_out_of_range",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrphanCollectorResult => f.write_str("no collector_results row for this id"),
            Self::MissingCustomerId { brand_id } => write!(
                f,
                "customer_id is NULL on the brand row and brands.customer_id is NULL or missing for brand {brand_id}"
            ),
            Self::ValueOutOfRange {
                row_id,
                column,
                value,
            } => write!(
                f,
                "extracted_positions.{} = {value} (row {row_id}) does not fit {column} numeric(5,2)",
                column.source_column()
            ),
        }
    }
}

/// A `numeric(5,2)` target column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TargetColumn {
    BrandMetricsVisibilityIndex,
    BrandMetricsShareOfAnswers,
    BrandSentimentScore,
    CompetitorMetricsVisibilityIndex,
    CompetitorMetricsShareOfAnswers,
    CompetitorSentimentScore,
}

impl TargetColumn {
    /// `table.column` in the target.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BrandMetricsVisibilityIndex => "brand_metrics.visibility_index",
            Self::BrandMetricsShareOfAnswers => "brand_metrics.share_of_answers",
            Self::BrandSentimentScore => "brand_sentiment.sentiment_score",
            Self::CompetitorMetricsVisibilityIndex => "competitor_metrics.visibility_index",
            Self::CompetitorMetricsShareOfAnswers => "competitor_metrics.share_of_answers",
            Self::CompetitorSentimentScore => "competitor_sentiment.sentiment_score",
        }
    }

    /// The `extracted_positions` column the value comes from.
    pub fn source_column(self) -> &'static str {
        match self {
            Self::BrandMetricsVisibilityIndex => "visibility_index",
            Self::BrandMetricsShareOfAnswers => "share_of_answers_brand",
            Self::BrandSentimentScore => "sentiment_score",
            Self::CompetitorMetricsVisibilityIndex => "visibility_index_competitor",
            Self::CompetitorMetricsShareOfAnswers => "share_of_answers_competitor",
            Self::CompetitorSentimentScore => "sentiment_score_competitor",
        }
    }
}

impl fmt::Display for TargetColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something seen while planning that is not written to the target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Note {
    /// Another brand row was later by (`processed_at`, `id`) and won.
    DuplicateBrandRow {
        /// The discarded row.
        discarded_row_id: i64,
        /// The row that was used.
        kept_row_id: i64,
    },
    /// A competitor row whose name did not resolve to one competitor.
    UnresolvedCompetitor {
        /// The source row.
        row_id: i64,
        /// `competitor_name` as in the source.
        name: String,
        /// No match, or several normalized matches.
        resolution: Unresolved,
    },
    /// Two rows resolved to the same competitor; the later one won.
    DuplicateCompetitorRow {
        /// The discarded row.
        discarded_row_id: i64,
        /// The row that was used.
        kept_row_id: i64,
        /// The competitor both resolved to.
        competitor_id: Uuid,
    },
    /// A sentiment that was not written.
    DroppedSentiment {
        /// The source row.
        row_id: i64,
        /// Brand or competitor sentiment.
        side: Side,
        /// Why.
        reason: DroppedSentiment,
    },
}

impl Note {
    /// The stable kind code used in JSON and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DuplicateBrandRow { .. } => "duplicate_brand_row",
            Self::UnresolvedCompetitor { .. } => "unresolved_competitor",
            Self::DuplicateCompetitorRow { .. } => "duplicate_competitor_row",
            Self::DroppedSentiment { .. } => "dropped_sentiment",
        }
    }
}

/// Why a competitor name did not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unresolved {
    /// No competitor of the brand has the name, exactly or normalized.
    NotFound,
    /// No exact match and several competitors share the normalized name.
    Ambiguous {
        /// How many.
        candidates: u32,
    },
}

/// Which sentiment table a note is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// `brand_sentiment`.
    Brand,
    /// `competitor_sentiment`.
    Competitor,
}

/// Why a sentiment was not written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DroppedSentiment {
    /// The label is set but is not POSITIVE, NEGATIVE or NEUTRAL.
    UnknownLabel {
        /// The label as in the source.
        label: String,
    },
    /// A known label without a score.
    MissingScore,
    /// A score without a label.
    ScoreWithoutLabel,
}
