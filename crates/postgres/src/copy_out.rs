//! Binary `COPY … TO STDOUT`: the source reader's way of reading rows.
//!
//! Why: the source read carries every column of every row, and sqlx's row
//! path builds a `PgRow` per row and resolves and clones type information
//! per value; in a profile of the initial load at 5M rows, decoding rows
//! that way was a fifth of the client's time (docs/performance.md, run L).
//! COPY's binary stream carries the same bytes (the types' send functions)
//! without a message per row, and is read here field by field in place.
//!
//! The stream carries no column types: the reader checks them from a
//! describe of the same `SELECT`, in the same transaction as the COPY (the
//! describe's lock on the table keeps its columns' types until the COPY has
//! run). The decoders below check every length, so bytes of another type
//! are an error, never a misread value.

/// Signature of the binary COPY format.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// A binary COPY result, held whole, with where each tuple starts.
#[derive(Debug)]
pub(crate) struct CopyOut {
    data: Vec<u8>,
    /// Offset of each tuple's first field (after its field count).
    tuples: Vec<usize>,
}

impl CopyOut {
    /// Checks the framing of `data` (header, every tuple of `columns` fields
    /// within bounds, the trailer) and indexes its tuples.
    pub(crate) fn parse(data: Vec<u8>, columns: usize) -> Result<Self, String> {
        let mut at = 0;
        let header = take(&data, &mut at, SIGNATURE.len() + 8)?;
        if &header[..SIGNATURE.len()] != SIGNATURE {
            return Err("the COPY stream does not start with the binary signature".into());
        }
        // No flag is asked for (bit 16 would add OIDs; bits 0-15 must make
        // a reader stop, the format says).
        let flags = be_u32(&header[SIGNATURE.len()..]);
        if flags != 0 {
            return Err(format!(
                "the COPY stream has flags {flags:#x}; none were asked for"
            ));
        }
        let extension = be_u32(&header[SIGNATURE.len() + 4..]);
        take(
            &data,
            &mut at,
            usize::try_from(extension).unwrap_or(usize::MAX),
        )?;
        let mut tuples = Vec::new();
        loop {
            let count = i16::from_be_bytes(take(&data, &mut at, 2)?.try_into().unwrap_or([0; 2]));
            if count == -1 {
                if at != data.len() {
                    return Err("the COPY stream has bytes after its trailer".into());
                }
                break;
            }
            if usize::try_from(count).ok() != Some(columns) {
                return Err(format!(
                    "a COPY tuple has {count} fields where {columns} were expected"
                ));
            }
            tuples.push(at);
            for _ in 0..columns {
                let len = i32::from_be_bytes(take(&data, &mut at, 4)?.try_into().unwrap_or([0; 4]));
                if len >= 0 {
                    take(&data, &mut at, usize::try_from(len).unwrap_or(usize::MAX))?;
                } else if len != -1 {
                    return Err(format!("a COPY field has length {len}"));
                }
            }
        }
        Ok(Self { data, tuples })
    }

    /// Number of tuples.
    pub(crate) fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Tuple `index`'s fields, in order.
    pub(crate) fn fields(&self, index: usize) -> Fields<'_> {
        Fields {
            data: &self.data,
            at: self.tuples[index],
        }
    }
}

/// A cursor over one tuple's fields (framing already checked by `parse`).
pub(crate) struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// The next field's bytes, `None` for NULL.
    pub(crate) fn next_field(&mut self) -> Option<&'a [u8]> {
        let len = i32::from_be_bytes(self.data[self.at..self.at + 4].try_into().unwrap_or([0; 4]));
        self.at += 4;
        let len = usize::try_from(len).ok()?;
        let value = &self.data[self.at..self.at + len];
        self.at += len;
        Some(value)
    }
}

fn take<'a>(data: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(len)
        .filter(|end| *end <= data.len())
        .ok_or("the COPY stream ends inside a tuple")?;
    let bytes = &data[*at..end];
    *at = end;
    Ok(bytes)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap_or([0; 4]))
}

/// A fixed-size value: exactly `N` bytes.
fn fixed<const N: usize>(bytes: &[u8], type_name: &str) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("a binary {type_name} is {} bytes, not {N}", bytes.len()))
}

/// `int8`.
pub(crate) fn int8(bytes: &[u8]) -> Result<i64, String> {
    fixed::<8>(bytes, "int8").map(i64::from_be_bytes)
}

/// `int4`.
pub(crate) fn int4(bytes: &[u8]) -> Result<i32, String> {
    fixed::<4>(bytes, "int4").map(i32::from_be_bytes)
}

/// `bool`.
pub(crate) fn boolean(bytes: &[u8]) -> Result<bool, String> {
    fixed::<1>(bytes, "bool").map(|[b]| b != 0)
}

/// `uuid`.
pub(crate) fn uuid(bytes: &[u8]) -> Result<uuid::Uuid, String> {
    fixed::<16>(bytes, "uuid").map(uuid::Uuid::from_bytes)
}

/// `text` (and the other string types): UTF-8, as the connection's
/// client encoding makes it.
pub(crate) fn text(bytes: &[u8]) -> Result<String, String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| format!("the text is not UTF-8: {e}"))
}

/// `numeric`, as the decimal text `numeric_out` would print (less its
/// padding zeros), written into `text`, which [`backfill_core::Decimal`]
/// parses and normalizes as it did the server's text: read in binary, the
/// server does not format every value for the source read (`numeric_out`,
/// about a tenth of the read's server time, decision 78). The binary form is
/// a count of base-10000 digits, the weight of the first, a sign word and
/// the display scale, then the digits; as `numeric_out` does, no digit past
/// the scale is printed.
pub(crate) fn numeric(bytes: &[u8], text: &mut String) -> Result<(), String> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const PLUS_INFINITY: u16 = 0xD000;
    const MINUS_INFINITY: u16 = 0xF000;
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("a binary numeric of {} bytes is cut short", bytes.len()))
    };
    text.clear();
    let count = usize::from(word(0)?);
    let weight = i64::from(i16::from_be_bytes(word(1)?.to_be_bytes()));
    let sign = word(2)?;
    let scale = usize::from(word(3)?);
    if bytes.len() != 8 + 2 * count {
        return Err(format!(
            "a binary numeric of {count} digits is {} bytes, not {}",
            bytes.len(),
            8 + 2 * count
        ));
    }
    let negative = match sign {
        POSITIVE => false,
        NEGATIVE => true,
        special @ (NAN | PLUS_INFINITY | MINUS_INFINITY) => {
            text.push_str(match special {
                NAN => "NaN",
                PLUS_INFINITY => "Infinity",
                _ => "-Infinity",
            });
            return Ok(());
        }
        other => return Err(format!("a binary numeric has the sign word {other:#06x}")),
    };
    if count == 0 {
        text.push('0');
        return Ok(());
    }
    // Digit `i` is worth 10000^(weight - i): those with a non-negative
    // exponent form the integer part, zero groups standing in for the ones
    // not stored on either side of the point.
    let digit = |i: usize| -> Result<u16, String> {
        match word(4 + i)? {
            digit @ 0..=9999 => Ok(digit),
            digit => Err(format!("a binary numeric has the base-10000 digit {digit}")),
        }
    };
    if negative {
        text.push('-');
    }
    let int_groups = weight + 1;
    if int_groups <= 0 {
        text.push('0');
    }
    let stored_before_point = usize::try_from(int_groups.max(0)).unwrap_or(usize::MAX);
    for i in 0..stored_before_point {
        push_group(text, if i < count { digit(i)? } else { 0 });
    }
    if count > stored_before_point {
        text.push('.');
        let point = text.len();
        for _ in int_groups..0 {
            text.push_str("0000");
        }
        for i in stored_before_point..count {
            push_group(text, digit(i)?);
        }
        // `numeric_out` prints `scale` digits after the point and no more
        // (a value stored with digits past its scale prints cut off).
        text.truncate(point + scale.min(text.len() - point));
        if scale == 0 {
            text.pop();
        }
    }
    Ok(())
}

/// Four decimal digits of a base-10000 digit (at most 9999), zero-padded.
fn push_group(text: &mut String, digit: u16) {
    for power in [1000, 100, 10, 1] {
        text.push(char::from(
            b'0' + u8::try_from(digit / power % 10).unwrap_or(0),
        ));
    }
}

/// A one-dimensional `int4[]` with nullable elements, as sqlx reads one:
/// an empty array has no dimensions; more than one dimension, or a lower
/// bound other than 1, is refused.
pub(crate) fn int4_array(bytes: &[u8]) -> Result<Vec<Option<i32>>, String> {
    let mut at = 0;
    let word = |at: &mut usize| -> Result<i32, String> {
        take(bytes, at, 4).map(|b| i32::from_be_bytes(b.try_into().unwrap_or([0; 4])))
    };
    let dimensions = word(&mut at)?;
    let _has_nulls = word(&mut at)?;
    let element_type = word(&mut at)?;
    if dimensions == 0 {
        return Ok(Vec::new());
    }
    if dimensions != 1 {
        return Err(format!(
            "an array of {dimensions} dimensions; only one-dimensional arrays are read"
        ));
    }
    // int4's oid is 23 in every Postgres.
    if element_type != 23 {
        return Err(format!(
            "an array of elements of type oid {element_type}, not int4"
        ));
    }
    let len = usize::try_from(word(&mut at)?).map_err(|_| "a negative array length")?;
    let lower = word(&mut at)?;
    if lower != 1 {
        return Err(format!(
            "an array with a lower bound of {lower}; only arrays starting at 1 are read"
        ));
    }
    let mut elements = Vec::with_capacity(len.min(bytes.len() / 4));
    for _ in 0..len {
        let element_len = word(&mut at)?;
        if element_len == -1 {
            elements.push(None);
        } else {
            let element = take(bytes, &mut at, usize::try_from(element_len).unwrap_or(0))?;
            elements.push(Some(int4(element)?));
        }
    }
    if at != bytes.len() {
        return Err("an int4[] with bytes after its last element".into());
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tuples: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0; 8]);
        for tuple in tuples {
            data.extend_from_slice(&i16::try_from(tuple.len()).unwrap().to_be_bytes());
            for field in *tuple {
                match field {
                    Some(bytes) => {
                        data.extend_from_slice(&i32::try_from(bytes.len()).unwrap().to_be_bytes());
                        data.extend_from_slice(bytes);
                    }
                    None => data.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    /// numeric_send's layout: count, weight, sign, scale, base-10000 digits.
    fn numeric_bytes(weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = u16::try_from(digits.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&scale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_binary_numeric_becomes_the_text_of_its_value() {
        let cases: [(i16, u16, u16, &[u16], &str); 11] = [
            (0, 0, 0, &[], "0"),
            (0, 0, 4, &[12, 3400], "0012.3400"),
            (-1, 0x4000, 4, &[5], "-0.0005"),
            (-2, 0, 8, &[1], "0.00000001"),
            (1, 0, 0, &[1], "00010000"),
            (2, 0x4000, 1, &[1, 0, 0, 1000], "-000100000000.1"),
            (0, 0xC000, 0, &[], "NaN"),
            (0, 0xD000, 0, &[], "Infinity"),
            (0, 0xF000, 0, &[], "-Infinity"),
            // Digits past the scale are not printed (`numeric_out`).
            (0, 0, 0, &[1, 5000], "0001"),
            (0, 0, 2, &[1, 5678], "0001.56"),
        ];
        // One buffer for all: each value replaces the one before.
        let mut buffer = String::from("left over");
        for (weight, sign, scale, digits, text) in cases {
            let bytes = numeric_bytes(weight, sign, scale, digits);
            numeric(&bytes, &mut buffer).unwrap();
            assert_eq!(buffer, text, "{digits:?} at {weight}");
        }
        // What the source reader makes of the text (normalized).
        numeric(&numeric_bytes(2, 0x4000, 1, &[1, 0, 0, 1000]), &mut buffer).unwrap();
        let value: backfill_core::Decimal = buffer.parse().unwrap();
        assert_eq!(value.as_str(), "-100000000.1");
    }

    #[test]
    fn a_binary_numeric_that_is_not_one_is_refused() {
        let refused = |bytes: &[u8]| numeric(bytes, &mut String::new()).unwrap_err();
        assert!(refused(&[0, 1]).contains("cut short"));
        let mut long = numeric_bytes(0, 0, 0, &[1]);
        long.push(0);
        assert!(refused(&long).contains("not 10"));
        assert!(refused(&numeric_bytes(0, 0x1234, 0, &[1])).contains("0x1234"));
        assert!(refused(&numeric_bytes(1, 0, 0, &[3, 10000])).contains("10000"));
        assert!(refused(&numeric_bytes(-1, 0, 0, &[10000])).contains("10000"));
    }

    #[test]
    fn tuples_are_framed_and_read_in_order() {
        let data = stream(&[&[Some(b"ab"), None], &[Some(b""), Some(b"xyz")]]);
        let copy = CopyOut::parse(data, 2).unwrap();
        assert_eq!(copy.len(), 2);
        let mut first = copy.fields(0);
        assert_eq!(first.next_field(), Some(&b"ab"[..]));
        assert_eq!(first.next_field(), None);
        let mut second = copy.fields(1);
        assert_eq!(second.next_field(), Some(&b""[..]));
        assert_eq!(second.next_field(), Some(&b"xyz"[..]));
    }

    #[test]
    fn bad_framing_is_an_error_not_a_panic() {
        let good = stream(&[&[Some(b"abc")]]);
        assert!(CopyOut::parse(good.clone(), 2)
            .unwrap_err()
            .contains("1 fields where 2"));
        for cut in 0..good.len() - 2 {
            assert!(CopyOut::parse(good[..cut].to_vec(), 1).is_err(), "{cut}");
        }
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert!(CopyOut::parse(wrong, 1).is_err());
        let mut flagged = good.clone();
        flagged[SIGNATURE.len() + 1] = 1; // bit 16: OIDs
        assert!(CopyOut::parse(flagged, 1).unwrap_err().contains("flags"));
        let mut longer = good;
        longer.push(0);
        assert!(CopyOut::parse(longer, 1)
            .unwrap_err()
            .contains("after its trailer"));
    }

    #[test]
    fn fixed_size_values_check_their_length() {
        assert_eq!(int8(&7i64.to_be_bytes()), Ok(7));
        assert!(int8(&7i32.to_be_bytes())
            .unwrap_err()
            .contains("4 bytes, not 8"));
        assert_eq!(int4(&(-3i32).to_be_bytes()), Ok(-3));
        assert_eq!(boolean(&[1]), Ok(true));
        assert!(uuid(&[0; 15]).is_err());
        assert!(text(&[0xff]).is_err());
    }

    fn array(dims: &[(i32, i32)], elements: &[Option<i32>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i32::try_from(dims.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&23i32.to_be_bytes());
        for (len, lower) in dims {
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&lower.to_be_bytes());
        }
        for e in elements {
            match e {
                Some(v) => {
                    b.extend_from_slice(&4i32.to_be_bytes());
                    b.extend_from_slice(&v.to_be_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn int4_arrays_read_as_sqlx_reads_them() {
        assert_eq!(int4_array(&array(&[], &[])), Ok(vec![]));
        assert_eq!(
            int4_array(&array(&[(3, 1)], &[Some(2), None, Some(-1)])),
            Ok(vec![Some(2), None, Some(-1)])
        );
        assert!(int4_array(&array(&[(1, 0)], &[Some(2)]))
            .unwrap_err()
            .contains("lower bound of 0"));
        assert!(int4_array(&array(&[(1, 1), (1, 1)], &[Some(2)]))
            .unwrap_err()
            .contains("2 dimensions"));
        let full = array(&[(2, 1)], &[Some(1), Some(2)]);
        assert!(int4_array(&full[..full.len() - 1]).is_err());
    }
}
