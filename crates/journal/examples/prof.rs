use backfill_core::testing::realistic_group;
use backfill_core::{plan, MigrationEvent};
use backfill_journal::{Batch, Journal};
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let g = realistic_group(1);
    let e = plan(1, &g.rows, &g.directories).unwrap();
    for round in 0..12i64 {
        let mut b = Batch::new();
        for k in round * 1000..round * 1000 + 1000 {
            b.plan(MigrationEvent { collector_result_id: k, ..e.clone() });
        }
        journal.commit(b).unwrap();
    }
}
