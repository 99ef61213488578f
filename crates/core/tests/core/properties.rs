//! Property tests of the mapping invariants over arbitrary groups.

use std::collections::{BTreeMap, BTreeSet};

use backfill_core::testing::{arb_group, Group};
use backfill_core::{
    decode_event, encode, plan, MigrationEvent, Note, Numeric52, Outcome, Resolution, SourceRow,
};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

fn planned(group: &Group) -> MigrationEvent {
    plan(group.key, &group.rows, &group.directories).expect("plan")
}

fn chosen_brand_row(group: &Group) -> Option<&SourceRow> {
    group
        .rows
        .iter()
        .filter(|r| r.is_brand_row())
        .max_by_key(|r| r.recency())
}

/// The winners by the rules, computed independently of `plan`.
fn expected_winners(group: &Group, brand_id: Uuid) -> BTreeMap<Uuid, &SourceRow> {
    let mut winners: BTreeMap<Uuid, &SourceRow> = BTreeMap::new();
    for row in group.rows.iter().filter(|r| !r.is_brand_row()) {
        let name = row.competitor_name.as_deref().unwrap();
        if let Resolution::Resolved(id) = group.directories.resolve_competitor(brand_id, name) {
            let entry = winners.entry(id).or_insert(row);
            if row.recency() > entry.recency() {
                *entry = row;
            }
        }
    }
    winners
}

fn all_numbers(event: &MigrationEvent) -> Vec<Numeric52> {
    let Some(rows) = event.target_rows() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let metrics =
        std::iter::once(&rows.brand_metrics).chain(rows.competitors.iter().map(|c| &c.metrics));
    for m in metrics {
        out.extend(m.visibility_index);
        out.extend(m.share_of_answers);
    }
    let sentiments = rows
        .brand_sentiment
        .iter()
        .chain(rows.competitors.iter().filter_map(|c| c.sentiment.as_ref()));
    out.extend(sentiments.map(|s| s.score));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planning_is_deterministic_and_independent_of_row_order(
        group in arb_group(),
        order in vec(any::<u32>(), 12),
    ) {
        let first = planned(&group);
        let mut shuffled = group.clone();
        let mut keyed: Vec<(u32, SourceRow)> = order.into_iter().zip(shuffled.rows).collect();
        keyed.sort_by_key(|(k, _)| *k);
        shuffled.rows = keyed.into_iter().map(|(_, r)| r).collect();
        let second = planned(&shuffled);
        prop_assert_eq!(encode(&first).unwrap(), encode(&second).unwrap());
        prop_assert_eq!(first, planned(&group));
    }

    #[test]
    fn content_hash_changes_iff_outcome_changes(a in arb_group(), b in arb_group()) {
        let (ea, eb) = (planned(&a), planned(&b));
        prop_assert_eq!(ea.outcome == eb.outcome, ea.content_hash == eb.content_hash);
    }

    #[test]
    fn content_hash_changes_when_one_written_value_changes(group in arb_group()) {
        let event = planned(&group);
        if let Outcome::Migrate(rows) = &event.outcome {
            let mut changed = rows.clone();
            changed.brand_metrics.total_mentions = changed.brand_metrics.total_mentions.wrapping_add(1);
            let other = backfill_core::current_content_hash(&Outcome::Migrate(changed)).unwrap();
            prop_assert_ne!(other, event.content_hash);
        }
    }

    #[test]
    fn source_hash_changes_when_a_source_row_changes(group in arb_group()) {
        prop_assume!(!group.rows.is_empty());
        let event = planned(&group);
        let mut changed = group.clone();
        changed.rows[0].topic = Some(format!("{:?}-changed", changed.rows[0].topic));
        prop_assert_ne!(planned(&changed).source_hash, event.source_hash);
    }

    #[test]
    fn encode_decode_round_trips(group in arb_group()) {
        let event = planned(&group);
        let bytes = encode(&event).unwrap();
        prop_assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    #[test]
    fn every_competitor_row_is_written_unresolved_or_a_noted_duplicate(group in arb_group()) {
        let event = planned(&group);
        let Outcome::Migrate(rows) = &event.outcome else { return Ok(()) };
        let competitor_rows: BTreeSet<i64> = group.rows.iter().filter(|r| !r.is_brand_row()).map(|r| r.id).collect();
        let mut unresolved = BTreeSet::new();
        let mut discarded = BTreeSet::new();
        let mut kept = BTreeSet::new();
        for note in &event.notes {
            match note {
                Note::UnresolvedCompetitor { row_id, .. } => prop_assert!(unresolved.insert(*row_id)),
                Note::DuplicateCompetitorRow { discarded_row_id, kept_row_id, .. } => {
                    prop_assert!(discarded.insert(*discarded_row_id));
                    kept.insert(*kept_row_id);
                }
                _ => {}
            }
        }
        let brand = chosen_brand_row(&group).unwrap();
        let winners: BTreeSet<i64> = expected_winners(&group, brand.brand_id).values().map(|r| r.id).collect();
        prop_assert_eq!(winners.len(), rows.competitors.len());
        prop_assert!(winners.is_disjoint(&unresolved));
        prop_assert!(winners.is_disjoint(&discarded));
        prop_assert!(unresolved.is_disjoint(&discarded));
        let all: BTreeSet<i64> = winners.union(&unresolved).chain(discarded.iter()).copied().collect();
        prop_assert_eq!(all, competitor_rows);
    }

    #[test]
    fn a_fact_has_exactly_one_brand_metrics_row_from_the_latest_brand_row(group in arb_group()) {
        let event = planned(&group);
        let brand = chosen_brand_row(&group);
        match &event.outcome {
            Outcome::Migrate(rows) => {
                let brand = brand.expect("migrated without a brand row");
                prop_assert_eq!(rows.fact.collected_at, brand.processed_at);
                prop_assert_eq!(rows.brand_metrics.has_presence, brand.has_brand_presence);
                prop_assert_eq!(rows.brand_metrics.first_position, brand.brand_first_position);
            }
            Outcome::Skip(_) => prop_assert!(brand.is_none()),
            Outcome::Reject(_) => prop_assert!(brand.is_some()),
        }
    }

    // (Was "no two competitors share an id", which a BTreeMap in the code
    // under test guaranteed: it could not fail. Issue 13.)
    #[test]
    fn the_competitor_rows_are_the_resolved_competitors_once_each_in_id_order(group in arb_group()) {
        if let Some(rows) = planned(&group).target_rows() {
            let ids: Vec<Uuid> = rows.competitors.iter().map(|c| c.competitor_id).collect();
            let expected: Vec<Uuid> = expected_winners(&group, rows.fact.brand_id).into_keys().collect();
            prop_assert_eq!(ids, expected);
        }
    }

    #[test]
    fn null_metrics_never_become_zero(group in arb_group()) {
        let event = planned(&group);
        let Some(rows) = event.target_rows() else { return Ok(()) };
        let brand = chosen_brand_row(&group).unwrap();
        prop_assert_eq!(rows.brand_metrics.visibility_index.is_some(), brand.visibility_index.is_some());
        prop_assert_eq!(rows.brand_metrics.share_of_answers.is_some(), brand.share_of_answers_brand.is_some());
        let winners = expected_winners(&group, brand.brand_id);
        for c in &rows.competitors {
            let row = winners[&c.competitor_id];
            prop_assert_eq!(c.metrics.visibility_index.is_some(), row.visibility_index_competitor.is_some());
            prop_assert_eq!(c.metrics.share_of_answers.is_some(), row.share_of_answers_competitor.is_some());
            let first = row.competitor_positions.as_ref().and_then(|p| p.first().copied().flatten());
            prop_assert_eq!(c.metrics.first_position, first);
        }
    }

    #[test]
    fn no_written_value_outside_numeric_5_2(group in arb_group()) {
        for n in all_numbers(&planned(&group)) {
            prop_assert!(n.hundredths().abs() <= 99_999);
        }
    }
}
