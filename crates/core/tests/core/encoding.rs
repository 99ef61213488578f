//! The canonical encoding and the pinned hashes: if one of these fails, every
//! existing journal's checkpoints just changed meaning. Bump the domain tag or
//! MAPPING_VERSION instead of editing the expected values.

use backfill_core::testing::{dec, GroupBuilder};
use backfill_core::{
    content_hash, decode, decode_event, encode, plan, Digest, Error, MigrationEvent, Outcome,
    SkipReason, MAPPING_VERSION,
};

fn fixture() -> MigrationEvent {
    let group = GroupBuilder::new(4242)
        .brand(|r| {
            r.visibility_index = Some(dec("45.455"));
            r.sentiment_label = Some("positive".into());
            r.sentiment_score = Some(dec("0.8"));
        })
        .competitor("Acme", Some("12.345"))
        .competitor_row("Nobody", |_| {})
        .build();
    plan(group.key, &group.rows, &group.directories).unwrap()
}

#[test]
fn pinned_hashes_of_a_fixture_group() {
    let event = fixture();
    assert_eq!(MAPPING_VERSION, 1);
    assert_eq!(
        event.source_hash.to_hex(),
        "bd09a23452892fa3e629eb8d157b2af9b8bff6fd8c6b277968f6b7e8e239084a",
        "source hash scheme changed: bump backfill/source/vN"
    );
    assert_eq!(
        event.content_hash.to_hex(),
        "dadcc22485e40edafa65af0a27cb3828c32f552ed755ec2b708cedf0ac461d76",
        "content hash scheme changed: bump backfill/content/vN"
    );
}

#[test]
fn pinned_hash_of_a_skip_outcome() {
    let digest = content_hash(1, &Outcome::Skip(SkipReason::NoBrandRow)).unwrap();
    assert_eq!(
        digest.to_hex(),
        "956a31ad6adfef59273ce6105b03d232d8279e54cbe6a056125d6391a59dd073"
    );
}

#[test]
fn mapping_version_is_part_of_both_hashes() {
    let outcome = Outcome::Skip(SkipReason::NoBrandRow);
    assert_ne!(
        content_hash(1, &outcome).unwrap(),
        content_hash(2, &outcome).unwrap()
    );
}

#[test]
fn event_round_trips_through_canonical_bytes() {
    let event = fixture();
    let bytes = encode(&event).unwrap();
    assert_eq!(decode_event(&bytes).unwrap(), event);
    assert_eq!(encode(&decode_event(&bytes).unwrap()).unwrap(), bytes);
}

#[test]
fn decoding_rejects_trailing_bytes_truncation_and_tampering() {
    let event = fixture();
    let mut bytes = encode(&event).unwrap();
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode_event(&longer),
        Err(Error::TrailingBytes { .. })
    ));
    assert!(matches!(
        decode_event(&bytes[..bytes.len() - 1]),
        Err(Error::Decode { .. })
    ));
    // Flip a bit inside the collector_type text ("chatgpt" → "chatgpu"): still
    // decodes, but no longer matches its content hash.
    let at = bytes.windows(7).position(|w| w == b"chatgpt").unwrap() + 6;
    bytes[at] ^= 1;
    assert!(matches!(
        decode_event(&bytes),
        Err(Error::ConflictingHash { key: 4242, .. })
    ));
}

#[test]
fn digest_text_form_is_hex_and_parses_back() {
    let event = fixture();
    let hex = event.content_hash.to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex.parse::<Digest>().unwrap(), event.content_hash);
    assert!("xyz".parse::<Digest>().is_err());
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["content_hash"], hex);
    assert_eq!(
        json["outcome"]["migrate"]["brand_metrics"]["visibility_index"],
        "45.46"
    );
}

#[test]
fn raw_decode_of_garbage_is_an_error() {
    for bytes in [&b""[..], &[0xff; 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]] {
        assert!(decode::<MigrationEvent>(bytes).is_err());
    }
}

proptest::proptest! {
    /// The decode_event fuzz target's property, run on every test (CI does
    /// not fuzz): arbitrary bytes and mutated real events never panic.
    #[test]
    fn decoding_arbitrary_or_mutated_bytes_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4),
    ) {
        let _ = decode_event(&bytes);
        let mut real = encode(&fixture()).unwrap();
        for (at, value) in flips {
            let i = at % real.len();
            real[i] = value;
        }
        if let Ok(event) = decode_event(&real) {
            proptest::prop_assert_eq!(decode_event(&encode(&event).unwrap()).unwrap(), event);
        }
    }
}
