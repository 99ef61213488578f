//! Row builders and proptest strategies for tests, ours and users'. Enabled by
//! the `testing` feature so that production builds do not carry proptest.
//!
//! Everything here is deterministic: ids derive from names and keys, so two
//! builds of the same group are equal and a failing case reproduces.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use uuid::Uuid;

use crate::{Decimal, Directories, Json, SourceRow, Timestamp};

/// A stable UUID derived from a label (for readable, reproducible fixtures).
pub fn uuid_for(label: &str) -> Uuid {
    let hash = blake3::hash(label.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    Uuid::from_bytes(bytes)
}

/// Parses a decimal literal; panics on a bad literal (test code only).
pub fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal literal")
}

/// A brand row with neutral defaults: no competitor, no metrics, no sentiment.
pub fn brand_row(id: i64, collector_result_id: i64, brand_id: Uuid) -> SourceRow {
    SourceRow {
        id,
        collector_result_id,
        brand_id,
        customer_id: Some(uuid_for("customer")),
        query_id: uuid_for("query"),
        collector_type: "chatgpt".to_owned(),
        competitor_name: None,
        brand_first_position: None,
        competitor_positions: None,
        total_brand_mentions: Some(0),
        competitor_mentions: None,
        visibility_index: None,
        visibility_index_competitor: None,
        share_of_answers_brand: None,
        share_of_answers_competitor: None,
        has_brand_presence: false,
        topic: None,
        sentiment_label: None,
        sentiment_score: None,
        sentiment_label_competitor: None,
        sentiment_score_competitor: None,
        sentiment_positive_sentences: Some(Json::empty_array()),
        sentiment_negative_sentences: Some(Json::empty_array()),
        sentiment_positive_sentences_competitor: Some(Json::empty_array()),
        sentiment_negative_sentences_competitor: Some(Json::empty_array()),
        processed_at: Timestamp(1_700_000_000_000_000),
        metadata: None,
    }
}

/// A competitor row named `name`, otherwise like [`brand_row`].
pub fn competitor_row(id: i64, collector_result_id: i64, brand_id: Uuid, name: &str) -> SourceRow {
    SourceRow {
        competitor_name: Some(name.to_owned()),
        ..brand_row(id, collector_result_id, brand_id)
    }
}

/// A planned-ready group: the rows of one key and the directories they need.
#[derive(Clone, Debug)]
pub struct Group {
    /// The key.
    pub key: i64,
    /// The brand the group belongs to.
    pub brand_id: Uuid,
    /// The rows of `extracted_positions`.
    pub rows: Vec<SourceRow>,
    /// Competitors, brands and collector results.
    pub directories: Directories,
}

impl Group {
    /// The id [`GroupBuilder`] gives a configured competitor of this group's brand.
    pub fn competitor_id(&self, name: &str) -> Uuid {
        competitor_id(self.brand_id, name, 0)
    }
}

fn competitor_id(brand_id: Uuid, name: &str, copy: u32) -> Uuid {
    uuid_for(&format!("competitor/{brand_id}/{name}/{copy}"))
}

/// Builds one group step by step. By default: one brand row, the brand
/// registered with a customer, the collector result present.
#[derive(Clone, Debug)]
pub struct GroupBuilder {
    group: Group,
    next_id: i64,
    configured: Vec<String>,
    brand_customer: Option<Option<Uuid>>,
    collector_result: Option<Timestamp>,
}

impl GroupBuilder {
    /// A group for `key` with its brand row.
    pub fn new(key: i64) -> Self {
        let brand_id = uuid_for("brand");
        let first = key.wrapping_mul(1000).wrapping_add(1);
        Self {
            group: Group {
                key,
                brand_id,
                rows: vec![brand_row(first, key, brand_id)],
                directories: Directories::new(),
            },
            next_id: first + 1,
            configured: Vec::new(),
            brand_customer: Some(Some(uuid_for("customer"))),
            collector_result: Some(Timestamp(1_690_000_000_000_000)),
        }
    }

    fn push(&mut self, mut row: SourceRow) -> &mut SourceRow {
        row.id = self.next_id;
        self.next_id += 1;
        self.group.rows.push(row);
        self.group.rows.last_mut().expect("just pushed")
    }

    /// Changes the (first) brand row.
    pub fn brand(mut self, f: impl FnOnce(&mut SourceRow)) -> Self {
        if let Some(row) = self.group.rows.iter_mut().find(|r| r.is_brand_row()) {
            f(row);
        }
        self
    }

    /// Adds another brand row, changed by `f`.
    pub fn extra_brand_row(mut self, f: impl FnOnce(&mut SourceRow)) -> Self {
        let row = brand_row(0, self.group.key, self.group.brand_id);
        f(self.push(row));
        self
    }

    /// Removes every brand row.
    pub fn without_brand_row(mut self) -> Self {
        self.group.rows.retain(|r| !r.is_brand_row());
        self
    }

    /// Configures `name` for the brand (once per call: calling it twice with
    /// the same name makes two competitors with that name).
    pub fn configure_competitor(mut self, name: &str) -> Self {
        let copies = self.configured.iter().filter(|n| *n == name).count();
        let copy = u32::try_from(copies).unwrap_or(u32::MAX);
        self.group.directories.add_competitor(
            self.group.brand_id,
            competitor_id(self.group.brand_id, name, copy),
            name,
        );
        self.configured.push(name.to_owned());
        self
    }

    /// Adds a row for competitor `name` (configuring it if needed) with a
    /// visibility index.
    pub fn competitor(self, name: &str, visibility_index: Option<&str>) -> Self {
        let this = if self.configured.iter().any(|n| n == name) {
            self
        } else {
            self.configure_competitor(name)
        };
        this.competitor_row(name, |row| {
            row.visibility_index_competitor = visibility_index.map(dec);
        })
    }

    /// Adds a competitor row named `name`, changed by `f`, without configuring it.
    pub fn competitor_row(mut self, name: &str, f: impl FnOnce(&mut SourceRow)) -> Self {
        let row = competitor_row(0, self.group.key, self.group.brand_id, name);
        f(self.push(row));
        self
    }

    /// Sets `brands.customer_id` (`None`: the brand is not in `brands`).
    pub fn brand_customer(mut self, customer: Option<Option<Uuid>>) -> Self {
        self.brand_customer = customer;
        self
    }

    /// Removes the `collector_results` row.
    pub fn orphan(mut self) -> Self {
        self.collector_result = None;
        self
    }

    /// The group.
    pub fn build(mut self) -> Group {
        if let Some(customer) = self.brand_customer {
            self.group
                .directories
                .add_brand(self.group.brand_id, customer);
        }
        if let Some(created_at) = self.collector_result {
            self.group
                .directories
                .add_collector_result(self.group.key, created_at);
        }
        self.group
    }
}

/// Names that exercise exact, normalized, ambiguous and unknown matches.
pub const COMPETITOR_NAMES: &[&str] = &[
    "Acme",
    "acme",
    " ACME ",
    "Beta  Corp",
    "beta corp",
    "Gamma",
    "ÉCLAIR",
    "éclair",
    "Zeta",
];

/// Decimals around every edge of `numeric(5,2)`, and ordinary ones.
pub fn arb_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        8 => (-100_000i64..100_000, 0u32..5).prop_map(|(n, scale)| {
            let text = format!("{}", n.unsigned_abs());
            let scale = scale as usize;
            let padded = format!("{text:0>width$}", width = scale + 1);
            let (int, frac) = padded.split_at(padded.len() - scale);
            let sign = if n < 0 { "-" } else { "" };
            dec(&if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") })
        }),
        1 => prop::sample::select(vec![
            "0.455", "-0.455", "0.454", "99.995", "999.994", "-999.994", "999.995", "-999.995",
            "1000", "NaN", "Infinity", "-Infinity", "0", "0.005", "-0.005",
        ])
        .prop_map(dec),
    ]
}

fn arb_json() -> impl Strategy<Value = Option<Json>> {
    option::of(
        prop::sample::select(vec!["[]", "[\"good\"]", "[\"a\", \"b\"]", "{\"k\": 1}"])
            .prop_map(|s| Json(s.to_owned())),
    )
}

fn arb_label() -> impl Strategy<Value = Option<String>> {
    option::of(
        prop::sample::select(vec![
            "POSITIVE",
            "negative",
            " Neutral\t",
            "MIXED",
            "",
            "positive ",
            "NEUTRAL",
        ])
        .prop_map(str::to_owned),
    )
}

/// One source row of `key` with arbitrary values (id and name set later).
fn arb_row(key: i64, brand_ids: Vec<Uuid>) -> impl Strategy<Value = SourceRow> {
    let metrics = (
        option::of(arb_decimal()),
        option::of(arb_decimal()),
        option::of(arb_decimal()),
        option::of(arb_decimal()),
        option::of(0i32..5),
        option::of(vec(option::of(0i32..20), 0..3)),
        option::of(0i32..10),
        option::of(0i32..10),
        any::<bool>(),
    );
    let sentiment = (
        arb_label(),
        option::of(arb_decimal()),
        arb_label(),
        option::of(arb_decimal()),
        arb_json(),
        arb_json(),
        arb_json(),
        arb_json(),
    );
    let fact = (
        prop::sample::select(brand_ids),
        option::of(Just(uuid_for("customer"))),
        prop::sample::select(vec!["chatgpt", "perplexity"]),
        option::of(prop::sample::select(vec!["pricing", "support"])),
        0i64..4,
        arb_json(),
    );
    (metrics, sentiment, fact).prop_map(move |(m, s, f)| SourceRow {
        id: 0,
        collector_result_id: key,
        brand_id: f.0,
        customer_id: f.1,
        query_id: uuid_for("query"),
        collector_type: f.2.to_owned(),
        competitor_name: None,
        brand_first_position: m.4,
        competitor_positions: m.5,
        total_brand_mentions: m.6,
        competitor_mentions: m.7,
        visibility_index: m.0,
        visibility_index_competitor: m.1,
        share_of_answers_brand: m.2,
        share_of_answers_competitor: m.3,
        has_brand_presence: m.8,
        topic: f.3.map(str::to_owned),
        sentiment_label: s.0,
        sentiment_score: s.1,
        sentiment_label_competitor: s.2,
        sentiment_score_competitor: s.3,
        sentiment_positive_sentences: s.4,
        sentiment_negative_sentences: s.5,
        sentiment_positive_sentences_competitor: s.6,
        sentiment_negative_sentences_competitor: s.7,
        // Few distinct times, so (processed_at, id) ties on time are common.
        processed_at: Timestamp(1_700_000_000_000_000 + f.4 * 1_000_000),
        metadata: f.5,
    })
}

/// An arbitrary group: 0–3 brand rows (NULL or blank names), 0–8 competitor
/// rows drawn from [`COMPETITOR_NAMES`], a random set of configured
/// competitors (with duplicates), and directories that sometimes lack the
/// brand's customer or the collector result. Row ids are unique.
pub fn arb_group() -> impl Strategy<Value = Group> {
    let brand_id = uuid_for("brand");
    let other_brand = uuid_for("other brand");
    let brand_ids = vec![brand_id, brand_id, brand_id, other_brand];
    (1i64..1_000_000).prop_flat_map(move |key| {
        let brand_names = vec(
            prop::sample::select(vec![None, Some(""), Some("  "), Some("\t")]),
            0..4,
        );
        let competitor_names = vec(prop::sample::select(COMPETITOR_NAMES.to_vec()), 0..9);
        let configured = vec(
            (prop::sample::select(COMPETITOR_NAMES.to_vec()), 0u32..2),
            0..7,
        );
        (
            Just(key),
            brand_names,
            competitor_names,
            vec(arb_row(key, brand_ids.clone()), 12),
            configured,
            option::weighted(0.9, option::of(Just(uuid_for("customer")))),
            prop::bool::weighted(0.9),
        )
            .prop_map(
                move |(
                    key,
                    brand_names,
                    competitor_names,
                    templates,
                    configured,
                    customer,
                    has_result,
                )| {
                    let mut directories = Directories::new();
                    for (name, copy) in configured {
                        directories.add_competitor(
                            brand_id,
                            competitor_id(brand_id, name, copy),
                            name,
                        );
                    }
                    if let Some(customer) = customer {
                        directories.add_brand(brand_id, customer);
                    }
                    if has_result {
                        directories.add_collector_result(key, Timestamp(1_690_000_000_000_000));
                    }
                    let names = brand_names
                        .into_iter()
                        .chain(competitor_names.into_iter().map(Some));
                    let rows = names
                        .zip(templates)
                        .zip(1i64..)
                        .map(|((name, mut row), n)| {
                            row.id = key.wrapping_mul(100).wrapping_add(n);
                            row.competitor_name = name.map(str::to_owned);
                            row
                        })
                        .collect();
                    Group {
                        key,
                        brand_id,
                        rows,
                        directories,
                    }
                },
            )
    })
}

/// A production-like group: a brand row with metrics, sentiment and metadata,
/// five configured competitors each with a duplicate row, and one unknown
/// competitor (12 rows; its event encodes to about 1 KB). For benchmarks.
pub fn realistic_group(key: i64) -> Group {
    let mut builder = GroupBuilder::new(key).brand(|r| {
        r.visibility_index = Some(dec("45.455"));
        r.share_of_answers_brand = Some(dec("12.5"));
        r.total_brand_mentions = Some(4);
        r.brand_first_position = Some(1);
        r.has_brand_presence = true;
        r.topic = Some("pricing".into());
        r.sentiment_label = Some("POSITIVE".into());
        r.sentiment_score = Some(dec("0.82"));
        r.sentiment_positive_sentences = Some(Json(
            "[\"They are the best option for teams of every size.\", \"Pricing is fair.\"]".into(),
        ));
        r.metadata = Some(Json(
            "{\"run\": 17, \"model\": \"gpt-4o\", \"prompt\": \"best crm for startups\"}".into(),
        ));
    });
    for name in ["Acme", "Beta Corp", "Gamma", "Delta", "Epsilon"] {
        builder = builder
            .competitor(name, Some("23.456"))
            .competitor_row(name, |r| {
                r.visibility_index_competitor = Some(dec("21.5"));
                r.competitor_mentions = Some(2);
                r.competitor_positions = Some(vec![Some(3), Some(7)]);
                r.sentiment_label_competitor = Some("neutral".into());
                r.sentiment_score_competitor = Some(dec("0.1"));
                r.sentiment_positive_sentences_competitor =
                    Some(Json("[\"Solid integrations with common tools.\"]".into()));
            });
    }
    builder.competitor_row("Unknown Co", |_| {}).build()
}
