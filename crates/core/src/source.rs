//! What the planner reads. `SourceRow` holds exactly the `extracted_positions`
//! columns the mapping rules use, so the source hash changes only when an input
//! that can change the output changes. `Directories` holds the small lookup
//! tables (competitors, brands, collector results), loaded once per run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decimal::Decimal;

/// A `timestamptz` as microseconds since 1970-01-01T00:00:00Z, which is
/// exactly Postgres' own resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Microseconds since the Unix epoch (UTC).
    pub fn micros(self) -> i64 {
        self.0
    }
}

/// A `jsonb` value as the exact text Postgres prints for it (`["a", "b"]`).
///
/// Carried as text, never re-serialized, so that a value read back from the
/// target hashes exactly as the value that was planned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(pub String);

impl Json {
    /// The empty JSON array, `[]`: what a NULL sentence list becomes.
    pub fn empty_array() -> Self {
        Json("[]".to_owned())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One row of `extracted_positions`: the columns the mapping rules read.
///
/// A *brand row* has `competitor_name` NULL or blank; every other row is a
/// *competitor row*.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // fields are the source columns of the same name
pub struct SourceRow {
    pub id: i64,
    pub collector_result_id: i64,
    pub brand_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub query_id: Uuid,
    pub collector_type: String,
    pub competitor_name: Option<String>,
    pub brand_first_position: Option<i32>,
    pub competitor_positions: Option<Vec<Option<i32>>>,
    pub total_brand_mentions: Option<i32>,
    pub competitor_mentions: Option<i32>,
    pub visibility_index: Option<Decimal>,
    pub visibility_index_competitor: Option<Decimal>,
    pub share_of_answers_brand: Option<Decimal>,
    pub share_of_answers_competitor: Option<Decimal>,
    pub has_brand_presence: bool,
    pub topic: Option<String>,
    pub sentiment_label: Option<String>,
    pub sentiment_score: Option<Decimal>,
    pub sentiment_label_competitor: Option<String>,
    pub sentiment_score_competitor: Option<Decimal>,
    pub sentiment_positive_sentences: Option<Json>,
    pub sentiment_negative_sentences: Option<Json>,
    pub sentiment_positive_sentences_competitor: Option<Json>,
    pub sentiment_negative_sentences_competitor: Option<Json>,
    pub processed_at: Timestamp,
    pub metadata: Option<Json>,
}

impl SourceRow {
    /// True for the brand row: `competitor_name` NULL or only ASCII whitespace.
    pub fn is_brand_row(&self) -> bool {
        self.competitor_name
            .as_deref()
            .is_none_or(|name| name.trim_ascii().is_empty())
    }

    /// The order in which "latest wins": (`processed_at`, `id`).
    pub fn recency(&self) -> (Timestamp, i64) {
        (self.processed_at, self.id)
    }
}

/// How a source competitor name resolved against `brand_competitors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// Resolved to this `brand_competitors.id`.
    Resolved(Uuid),
    /// No competitor of the brand has this name, exactly or normalized.
    NotFound,
    /// No exact match, and this many competitors share the normalized name.
    Ambiguous(u32),
}

/// The normalization used for the second-chance competitor match: runs of
/// ASCII whitespace collapsed to one space, trimmed, Unicode lower-cased.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split_ascii_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

#[derive(Clone, Debug, Default)]
struct BrandCompetitors {
    /// Exact name → smallest id with that name (uuid order, as Postgres).
    exact: HashMap<String, Uuid>,
    /// Normalized name → (smallest id, number of competitors with that name).
    normalized: HashMap<String, (Uuid, u32)>,
}

/// The lookups the rules need besides the group's own rows.
///
/// Built once per run from `brand_competitors`, `brands` and
/// `collector_results`; insertion order does not matter.
#[derive(Clone, Debug, Default)]
pub struct Directories {
    competitors: HashMap<Uuid, BrandCompetitors>,
    brand_customers: HashMap<Uuid, Option<Uuid>>,
    collector_results: BTreeMap<i64, Timestamp>,
}

impl Directories {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `brand_competitors` row.
    pub fn add_competitor(&mut self, brand_id: Uuid, id: Uuid, name: &str) {
        let entry = self.competitors.entry(brand_id).or_default();
        entry
            .exact
            .entry(name.to_owned())
            .and_modify(|smallest| *smallest = (*smallest).min(id))
            .or_insert(id);
        entry
            .normalized
            .entry(normalize_name(name))
            .and_modify(|(smallest, count)| {
                *smallest = (*smallest).min(id);
                *count += 1;
            })
            .or_insert((id, 1));
    }

    /// Adds a `brands` row.
    pub fn add_brand(&mut self, id: Uuid, customer_id: Option<Uuid>) {
        self.brand_customers.insert(id, customer_id);
    }

    /// Adds a `collector_results` row (its original collection time).
    pub fn add_collector_result(&mut self, id: i64, created_at: Timestamp) {
        self.collector_results.insert(id, created_at);
    }

    /// Forgets the collector results (they are loaded per batch of keys, so
    /// that memory does not grow with the data).
    pub fn clear_collector_results(&mut self) {
        self.collector_results.clear();
    }

    /// `brands.customer_id`: `None` if the brand is unknown, `Some(None)` if
    /// it is known and has no customer.
    pub fn brand_customer(&self, brand_id: Uuid) -> Option<Option<Uuid>> {
        self.brand_customers.get(&brand_id).copied()
    }

    /// `collector_results.created_at` for a key, if the row exists.
    pub fn collector_result_created_at(&self, id: i64) -> Option<Timestamp> {
        self.collector_results.get(&id).copied()
    }

    /// Resolves a competitor name for a brand: exact match first (smallest
    /// id among equal names), else a unique normalized match.
    pub fn resolve_competitor(&self, brand_id: Uuid, name: &str) -> Resolution {
        let Some(brand) = self.competitors.get(&brand_id) else {
            return Resolution::NotFound;
        };
        if let Some(id) = brand.exact.get(name) {
            return Resolution::Resolved(*id);
        }
        match brand.normalized.get(&normalize_name(name)) {
            Some((id, 1)) => Resolution::Resolved(*id),
            Some((_, count)) => Resolution::Ambiguous(*count),
            None => Resolution::NotFound,
        }
    }
}
