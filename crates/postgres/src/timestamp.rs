//! `timestamptz` as the core's microseconds since the Unix epoch, in
//! Postgres's binary format.
//!
//! Why: the text route (`extract(epoch from …) * 1000000)::int8` on the way
//! in, `'epoch' + n * interval '1 microsecond'` on the way out) makes the
//! server do numeric and interval arithmetic for every source row and every
//! fact; the binary value is already microseconds (since 2000-01-01), so one
//! checked addition on the client does the same, exactly. sqlx's `chrono`
//! and `time` types would do it too, but panic (chrono) or need a calendar
//! type the core does not use; an infinite timestamp must instead be a
//! named error.

use backfill_core::Timestamp;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// Microseconds from the Unix epoch to Postgres's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` read or written as [`Timestamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTimestamp(pub Timestamp);

// By oid (1184 and 1185 are fixed in Postgres's catalog): a type known by
// name is compared by name on every value decoded.
impl Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1184))
    }
}

impl PgHasArrayType for PgTimestamp {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1185))
    }
}

impl Decode<'_, Postgres> for PgTimestamp {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            return Err("a timestamptz arrived as text; the reader expects binary results".into());
        }
        Ok(Self(from_binary(value.as_bytes()?)?))
    }
}

/// A binary `timestamptz` (microseconds since 2000-01-01) as [`Timestamp`];
/// ±infinity and out-of-range values are errors saying so.
pub(crate) fn from_binary(bytes: &[u8]) -> Result<Timestamp, String> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| "a binary timestamptz is not 8 bytes".to_owned())?;
    let since_2000 = i64::from_be_bytes(bytes);
    if since_2000 == i64::MAX || since_2000 == i64::MIN {
        return Err("the timestamp is infinite (±infinity has no instant to migrate)".into());
    }
    since_2000
        .checked_add(POSTGRES_EPOCH_MICROS)
        .map(Timestamp)
        .ok_or_else(|| "the timestamp is out of range".into())
}

impl Encode<'_, Postgres> for PgTimestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let since_2000 = self
            .0
            .micros()
            .checked_sub(POSTGRES_EPOCH_MICROS)
            .ok_or_else(|| {
                format!(
                    "{} µs since 1970 is out of range for timestamptz",
                    self.0.micros()
                )
            })?;
        buf.extend(&since_2000.to_be_bytes());
        Ok(IsNull::No)
    }

    fn size_hint(&self) -> usize {
        8
    }
}
