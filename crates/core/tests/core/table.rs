//! A rule table whose expected values are written here, not taken from the
//! code under test (`rules.rs` took the expected competitor id from
//! `resolve_competitor`, so a wrong resolution agreed with itself). Each row
//! pins one decision of docs/decisions.md that no test pinned before.

use backfill_core::testing::{dec, GroupBuilder};
use backfill_core::{
    plan, Directories, MigrationEvent, Note, Outcome, RejectReason, Timestamp, Unresolved,
};
use uuid::Uuid;

const KEY: i64 = 7;

/// A group whose directories the test writes itself: the brand with a
/// customer, the collector result, and the given competitors in the given
/// insertion order.
fn with_directories(
    builder: GroupBuilder,
    competitors: &[(Uuid, &str)],
    collector_result: bool,
    brand_customer: Option<Uuid>,
) -> MigrationEvent {
    let group = builder.build();
    let mut dirs = Directories::new();
    dirs.add_brand(group.brand_id, brand_customer);
    if collector_result {
        dirs.add_collector_result(KEY, Timestamp(1_700_000_000_000_000));
    }
    for (id, name) in competitors {
        dirs.add_competitor(group.brand_id, *id, name);
    }
    plan(KEY, &group.rows, &dirs).unwrap()
}

fn competitor_ids(event: &MigrationEvent) -> Vec<Uuid> {
    event
        .target_rows()
        .map(|rows| rows.competitors.iter().map(|c| c.competitor_id).collect())
        .unwrap_or_default()
}

const BIG: Uuid = Uuid::from_u128(0xff00_0000_0000_0000_0000_0000_0000_0001);
const SMALL: Uuid = Uuid::from_u128(0x0100_0000_0000_0000_0000_0000_0000_0002);

#[test]
fn exact_duplicate_names_resolve_to_the_smallest_id_whatever_the_insertion_order() {
    for order in [
        [(BIG, "Acme"), (SMALL, "Acme")],
        [(SMALL, "Acme"), (BIG, "Acme")],
    ] {
        let event = with_directories(
            GroupBuilder::new(KEY).competitor_row("Acme", |_| {}),
            &order,
            true,
            Some(Uuid::from_u128(9)),
        );
        assert_eq!(competitor_ids(&event), vec![SMALL], "{order:?}");
    }
}

#[test]
fn normalized_ambiguity_counts_competitor_rows_not_distinct_names() {
    // Two rows with the same exact name: "Acme" resolves exactly (smallest
    // id), but "ACME" matches two rows by normalized name: ambiguous.
    let acme_twice = [(BIG, "Acme"), (SMALL, "Acme")];
    let event = with_directories(
        GroupBuilder::new(KEY).competitor_row("ACME", |_| {}),
        &acme_twice,
        true,
        Some(Uuid::from_u128(9)),
    );
    assert!(competitor_ids(&event).is_empty());
    assert!(
        matches!(
            &event.notes[..],
            [Note::UnresolvedCompetitor {
                resolution: Unresolved::Ambiguous { candidates: 2 },
                ..
            }]
        ),
        "{:?}",
        event.notes
    );
}

#[test]
fn a_no_break_space_name_is_a_competitor_row_not_the_brand_row() {
    // Blank means ASCII whitespace only: "\u{a0}" names a competitor (which
    // resolves to nothing), and the brand row stays the NULL one.
    let event = with_directories(
        GroupBuilder::new(KEY).competitor_row("\u{a0}", |_| {}),
        &[],
        true,
        Some(Uuid::from_u128(9)),
    );
    assert!(event.target_rows().is_some(), "{:?}", event.outcome);
    assert!(
        matches!(&event.notes[..], [Note::UnresolvedCompetitor { name, .. }] if name == "\u{a0}"),
        "{:?}",
        event.notes
    );
}

#[test]
fn the_rule_order_decides_between_several_reasons() {
    // (orphan?, customer?, out of range?) → the one reason, in the order of
    // decision 1: orphan, then customer, then value.
    let cases: [(bool, bool, bool, &str); 6] = [
        (true, true, true, "orphan_collector_result"),
        (true, true, false, "orphan_collector_result"),
        (true, false, true, "orphan_collector_result"),
        (false, true, true, "missing_customer_id"),
        (false, true, false, "missing_customer_id"),
        (false, false, true, "value_out_of_range"),
    ];
    for (orphan, no_customer, out_of_range, expected) in cases {
        let builder = GroupBuilder::new(KEY).brand(|r| {
            if no_customer {
                r.customer_id = None;
            }
            if out_of_range {
                r.visibility_index = Some(dec("1000"));
            }
        });
        let event = with_directories(builder, &[], !orphan, None);
        let Outcome::Reject(reason) = &event.outcome else {
            panic!("{orphan} {no_customer} {out_of_range}: {:?}", event.outcome);
        };
        assert_eq!(
            reason.code(),
            expected,
            "{orphan} {no_customer} {out_of_range}"
        );
    }
}

#[test]
fn out_of_range_on_the_brand_row_is_named_before_the_competitors() {
    let builder = GroupBuilder::new(KEY)
        .brand(|r| r.visibility_index = Some(dec("2000")))
        .competitor_row("Acme", |r| {
            r.visibility_index_competitor = Some(dec("3000"))
        });
    let event = with_directories(builder, &[(SMALL, "Acme")], true, Some(Uuid::from_u128(9)));
    let Outcome::Reject(RejectReason::ValueOutOfRange { value, .. }) = &event.outcome else {
        panic!("{:?}", event.outcome);
    };
    assert_eq!(value, "2000", "the brand row's value is named first");
}

#[test]
fn a_rejected_key_keeps_its_notes() {
    // Decision 5: an operator fixing the rejection sees the rest.
    let builder = GroupBuilder::new(KEY)
        .brand(|r| r.visibility_index = Some(dec("5000")))
        .competitor_row("Nobody", |_| {});
    let event = with_directories(builder, &[], true, Some(Uuid::from_u128(9)));
    assert!(matches!(event.outcome, Outcome::Reject(_)));
    assert!(
        event
            .notes
            .iter()
            .any(|n| matches!(n, Note::UnresolvedCompetitor { name, .. } if name == "Nobody")),
        "{:?}",
        event.notes
    );
}
