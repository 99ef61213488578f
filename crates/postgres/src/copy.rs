//! Binary `COPY … FROM STDIN`: the initial load's way of writing rows.
//!
//! Why: into tables without unique indexes or foreign keys, most of an
//! `INSERT … SELECT FROM unnest(…)`'s time is the executor (unnesting the
//! arrays, casting text to numeric); `COPY` in binary format hands each value
//! to the column type's receive function directly. Measured here over the
//! 654k competitor_metrics rows of 1M source rows: 2.4–2.7 s against
//! 5.1–5.5 s (docs/performance.md, run K).
//!
//! The values are encoded by sqlx's own `Encode` implementations (the same
//! bytes a bound parameter carries); this module only frames them as the
//! COPY binary format says: a header, per row a field count, per field a
//! length (-1 for NULL) and the bytes, and a trailer.

use sqlx::encode::IsNull;
use sqlx::postgres::PgArgumentBuffer;
use sqlx::{Encode, Postgres, Transaction};

/// Signature, flags (no OIDs) and header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Bytes per `CopyData` message.
const SEND_PIECE: usize = 64 << 10;

/// COPY data in binary format for one statement.
pub(crate) struct CopyData {
    buf: PgArgumentBuffer,
    fields: i16,
}

impl CopyData {
    /// Data for rows of `fields` columns.
    pub(crate) fn new(fields: i16) -> Self {
        let mut buf = PgArgumentBuffer::default();
        buf.extend_from_slice(HEADER);
        Self { buf, fields }
    }

    /// Starts a row; its `fields` values follow.
    pub(crate) fn row(&mut self) {
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
    }

    /// One value, as sqlx encodes it for a parameter (`None` is NULL).
    pub(crate) fn value<'q, T: Encode<'q, Postgres>>(
        &mut self,
        value: &T,
    ) -> Result<(), sqlx::Error> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let null = value
            .encode_by_ref(&mut self.buf)
            .map_err(sqlx::Error::Encode)?;
        let length = match null {
            IsNull::Yes => {
                self.buf.truncate(start + 4);
                -1
            }
            IsNull::No => i32::try_from(self.buf.len() - start - 4).map_err(|_| {
                sqlx::Error::Encode("a value is longer than COPY's 2 GiB field limit".into())
            })?,
        };
        self.buf[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    /// A `jsonb` value from its text (`None` is NULL): format version 1,
    /// then the text, which the server parses as a `::jsonb` cast would.
    pub(crate) fn jsonb(&mut self, text: Option<&str>) -> Result<(), sqlx::Error> {
        match text {
            None => {
                self.buf.extend_from_slice(&(-1_i32).to_be_bytes());
            }
            Some(text) => {
                let length = i32::try_from(text.len() + 1).map_err(|_| {
                    sqlx::Error::Encode("a value is longer than COPY's 2 GiB field limit".into())
                })?;
                self.buf.extend_from_slice(&length.to_be_bytes());
                self.buf.push(1);
                self.buf.extend_from_slice(text.as_bytes());
            }
        }
        Ok(())
    }

    /// Sends the data with `statement` (a `COPY … FROM STDIN (FORMAT
    /// binary)`) in `tx`; returns the rows copied.
    pub(crate) async fn send(
        mut self,
        tx: &mut Transaction<'_, Postgres>,
        statement: &str,
    ) -> Result<u64, sqlx::Error> {
        self.buf.extend_from_slice(&(-1_i16).to_be_bytes());
        let mut copy = tx.copy_in_raw(statement).await?;
        // In pieces: sqlx copies each message into the connection's write
        // buffer, which keeps the size of the largest message it held.
        for piece in self.buf.chunks(SEND_PIECE) {
            copy.send(piece).await?;
        }
        copy.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_values_as_the_binary_format_says() {
        let mut data = CopyData::new(3);
        data.row();
        data.value(&7_i32).unwrap();
        data.value(&None::<i64>).unwrap();
        data.jsonb(Some("[]")).unwrap();
        let bytes: &[u8] = &data.buf;
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 3, 1, b'[', b']']);
        assert_eq!(bytes, expected.as_slice());
    }
}
