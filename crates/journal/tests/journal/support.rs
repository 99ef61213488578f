//! Events for journal tests, built with the core's builders.

use backfill_core::testing::{dec, realistic_group, GroupBuilder};
use backfill_core::{plan, MigrationEvent};

/// A deterministic event for `key`: variant 0/1 migrate (different values),
/// 2 skips (no brand row), 3 rejects (orphan).
pub fn event(key: i64, variant: u8) -> MigrationEvent {
    let builder = GroupBuilder::new(key).competitor("Acme", Some("1.5"));
    let builder = match variant % 4 {
        0 => builder,
        1 => builder.brand(|r| r.visibility_index = Some(dec("7.25"))),
        2 => builder.without_brand_row(),
        _ => builder.orphan(),
    };
    let group = builder.build();
    plan(key, &group.rows, &group.directories).expect("plan")
}

/// A migrating event of roughly 1 KB encoded, like production ones.
pub fn realistic_event(key: i64) -> MigrationEvent {
    let group = realistic_group(key);
    plan(key, &group.rows, &group.directories).expect("plan")
}

pub use backfill_journal::testing::raw_sled;
