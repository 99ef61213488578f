//! Plans arbitrary groups: never panics, and planning twice (and in reverse
//! row order) gives the same event, which round-trips through its bytes.
#![no_main]

use backfill_core::{decode, decode_event, encode, plan, Directories, SourceRow, Timestamp};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

#[derive(serde::Deserialize)]
struct FuzzGroup {
    key: i64,
    rows: Vec<SourceRow>,
    competitors: Vec<(Uuid, Uuid, String)>,
    brands: Vec<(Uuid, Option<Uuid>)>,
    results: Vec<(i64, i64)>,
}

fuzz_target!(|data: &[u8]| {
    // The input is a canonical encoding of a group; inputs that do not
    // decode are simply not groups.
    let Ok(group) = decode::<FuzzGroup>(data) else { return };
    let mut dirs = Directories::new();
    for (brand, id, name) in &group.competitors {
        dirs.add_competitor(*brand, *id, name);
    }
    for (id, customer) in &group.brands {
        dirs.add_brand(*id, *customer);
    }
    for (id, at) in &group.results {
        dirs.add_collector_result(*id, Timestamp(*at));
    }
    let first = plan(group.key, &group.rows, &dirs);
    let mut reversed = group.rows.clone();
    reversed.reverse();
    let second = plan(group.key, &reversed, &dirs);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            let bytes = encode(&a).expect("encode");
            assert_eq!(bytes, encode(&b).expect("encode"), "order changed the event");
            assert_eq!(decode_event(&bytes).expect("round trip"), a);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("order changed success: {:?} vs {:?}", a.is_ok(), b.is_ok()),
    }
});
