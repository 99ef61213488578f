//! The canonical encoding and the two hashes. This module is the only place
//! that decides which bytes are hashed: changing anything here changes every
//! checkpoint in every journal, so the tests pin known hashes and such a change
//! must come with a new version tag.
//!
//! Encoding: bincode 2 through serde with one fixed configuration
//! ([`bincode::config::standard`]: little-endian, variable-length integers),
//! decoding with a size limit so that hostile bytes cannot allocate without
//! bound. Hashing: blake3 in key-derivation mode, the context string being the
//! domain tag (`backfill/source/v1`, `backfill/content/v1`), then the mapping
//! version (u32, little-endian), then the canonical bytes.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{MigrationEvent, Outcome};
use crate::source::{Resolution, SourceRow, Timestamp};
use crate::{Error, Result, MAPPING_VERSION};

/// The largest encoded value [`decode`] accepts (16 MiB).
pub const DECODE_LIMIT: usize = 16 << 20;

/// Domain tag of [`source_hash`].
pub const SOURCE_DOMAIN: &str = "backfill/source/v1";
/// Domain tag of [`content_hash`].
pub const CONTENT_DOMAIN: &str = "backfill/content/v1";

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value canonically (bincode 2, the fixed configuration).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|source| Error::Encode { source })
}

/// Appends the canonical encoding of a value to `out` (the same bytes as
/// [`encode`], in one pass and without an allocation of its own).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|source| Error::Encode { source })
}

/// Decodes a canonically encoded value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, config().with_limit::<DECODE_LIMIT>())
            .map_err(|source| Error::Decode { source })?;
    if used != bytes.len() {
        return Err(Error::TrailingBytes {
            used,
            len: bytes.len(),
        });
    }
    Ok(value)
}

/// Decodes an event and checks that its content hash matches its outcome.
pub fn decode_event(bytes: &[u8]) -> Result<MigrationEvent> {
    let event: MigrationEvent = decode(bytes)?;
    let actual = content_hash(event.mapping_version, &event.outcome)?;
    if actual != event.content_hash {
        return Err(Error::ConflictingHash {
            key: event.collector_result_id,
            expected: event.content_hash,
            actual,
        });
    }
    Ok(event)
}

/// A blake3 hash (32 bytes). Hex in text formats, raw bytes in bincode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        blake3::Hash::from_hex(s)
            .map(|h| Digest(*h.as_bytes()))
            .map_err(|_| Error::InvalidDigest {
                input: s.to_owned(),
            })
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

/// The one hashing primitive: blake3 derive-key mode with `domain` as the
/// context, then the mapping version, then the canonical bytes.
fn domain_hash(domain: &str, mapping_version: u32, bytes: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key(domain);
    hasher.update(&mapping_version.to_le_bytes());
    hasher.update(bytes);
    Digest(*hasher.finalize().as_bytes())
}

/// Everything a plan read for one key, in canonical order.
///
/// Rows are sorted by `id`. The directory facts are the ones the plan
/// consulted: the `brands.customer_id` fallback (only when the brand row had
/// none), `collector_results.created_at`, and the resolution of each distinct
/// competitor name (sorted by name). So the source hash changes exactly when
/// an input the output depends on changes, and a new competitor configured for
/// a brand drifts only the keys whose names it changes the resolution of.
#[derive(Serialize)]
pub struct SourceInputs<'a> {
    /// The key.
    pub collector_result_id: i64,
    /// The group's rows, sorted by `id`.
    pub rows: Vec<&'a SourceRow>,
    /// `brands.customer_id` if it was consulted (`Some(None)`: brand unknown
    /// or without customer).
    pub brand_customer: Option<Option<uuid::Uuid>>,
    /// `collector_results.created_at`, if consulted.
    pub collector_result_created_at: Option<Option<Timestamp>>,
    /// Each distinct competitor name with its resolution, sorted by name.
    pub resolutions: Vec<(&'a str, Resolution)>,
}

/// [`domain_hash`] of a value's canonical encoding, encoded into a buffer
/// this thread keeps: planning hashes two encodings per key, and a fresh
/// vector grown by doubling cost an allocation and a copy for each step
/// (decision 75).
fn hash_encoded<T: Serialize + ?Sized>(
    domain: &str,
    mapping_version: u32,
    value: &T,
) -> Result<Digest> {
    /// A buffer grown past this (a key with very many rows) is not kept.
    const KEEP: usize = 1 << 20;
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        let digest =
            encode_into(value, buffer).map(|()| domain_hash(domain, mapping_version, buffer));
        if buffer.capacity() > KEEP {
            *buffer = Vec::new();
        }
        digest
    })
}

/// `source_hash` (domain `backfill/source/v1`): the hash of the canonical
/// encoding of [`SourceInputs`] under the given mapping version.
pub fn source_hash(mapping_version: u32, inputs: &SourceInputs<'_>) -> Result<Digest> {
    hash_encoded(SOURCE_DOMAIN, mapping_version, inputs)
}

/// `content_hash` (domain `backfill/content/v1`): the hash of the canonical
/// encoding of the outcome (for a migration: the target rows) under the given
/// mapping version. `journal verify` rebuilds [`Outcome::Migrate`] from the
/// rows in the target and calls this to compare.
pub fn content_hash(mapping_version: u32, outcome: &Outcome) -> Result<Digest> {
    hash_encoded(CONTENT_DOMAIN, mapping_version, outcome)
}

/// The current [`MAPPING_VERSION`]'s content hash of an outcome.
pub fn current_content_hash(outcome: &Outcome) -> Result<Digest> {
    content_hash(MAPPING_VERSION, outcome)
}
