//! Exact decimals. Source `numeric` values never pass through `f64`: in binary
//! floating point 0.455 is 0.45499999…, which would round to 0.45 where Postgres
//! writes 0.46. Values stay decimal text from the database to the rounding step.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// An exact source `numeric` value, kept as normalized decimal text.
///
/// Accepts what Postgres prints for `numeric` (`-12.3400`, `0`, `NaN`,
/// `Infinity`, `-Infinity`). The text is normalized (no leading zeros in the
/// integer part, no trailing zeros in the fraction, no `-0`) so that `0.4550`
/// and `0.455` are the same value and hash the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal(String);

impl Decimal {
    /// The normalized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rounds to two places, half away from zero (as Postgres casts to
    /// `numeric(5,2)`), or says why the value does not fit.
    pub fn to_numeric_5_2(&self) -> Option<Numeric52> {
        let text = self.0.as_str();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if !digits.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            return None; // NaN, Infinity, -Infinity
        }
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        // At most three integer digits can fit; normalization removed leading zeros.
        if int_part.len() > 3 {
            return None;
        }
        let mut hundredths: i32 = 0;
        for b in int_part.bytes() {
            hundredths = hundredths * 10 + i32::from(b - b'0');
        }
        let frac = frac_part.as_bytes();
        for i in 0..2 {
            let d = frac.get(i).map_or(0, |b| i32::from(b - b'0'));
            hundredths = hundredths * 10 + d;
        }
        // Half away from zero: only the third fractional digit decides.
        if frac.get(2).is_some_and(|b| *b >= b'5') {
            hundredths += 1;
        }
        if hundredths > Numeric52::MAX_HUNDREDTHS {
            return None;
        }
        Some(Numeric52(if negative { -hundredths } else { hundredths }))
    }
}

impl FromStr for Decimal {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidDecimal {
            input: input.to_owned(),
        };
        match input {
            "NaN" | "Infinity" | "-Infinity" => return Ok(Decimal(input.to_owned())),
            _ => {}
        }
        let (negative, body) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let int_part = int_part.trim_start_matches('0');
        let frac_part = frac_part.trim_end_matches('0');
        let mut out = String::with_capacity(int_part.len() + frac_part.len() + 3);
        if negative && !(int_part.is_empty() && frac_part.is_empty()) {
            out.push('-');
        }
        out.push_str(if int_part.is_empty() { "0" } else { int_part });
        if !frac_part.is_empty() {
            out.push('.');
            out.push_str(frac_part);
        }
        Ok(Decimal(out))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A value of Postgres type `numeric(5,2)`, held as hundredths
/// (−999.99 ..= 999.99).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Numeric52(i32);

impl Numeric52 {
    /// The largest magnitude in hundredths: 999.99.
    pub const MAX_HUNDREDTHS: i32 = 99_999;

    /// From hundredths; `None` outside −99999 ..= 99999.
    pub fn from_hundredths(hundredths: i32) -> Option<Self> {
        (hundredths.unsigned_abs() <= Self::MAX_HUNDREDTHS.unsigned_abs())
            .then_some(Self(hundredths))
    }

    /// The value in hundredths (12.30 is 1230).
    pub fn hundredths(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Numeric52 {
    /// As Postgres prints `numeric(5,2)`: always two places.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Numeric52 {
    type Err = Error;

    /// Parses and rounds like a cast to `numeric(5,2)`; out of range is an error.
    fn from_str(input: &str) -> Result<Self, Error> {
        let decimal: Decimal = input.parse()?;
        decimal
            .to_numeric_5_2()
            .ok_or_else(|| Error::InvalidDecimal {
                input: input.to_owned(),
            })
    }
}

impl Serialize for Numeric52 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i32(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Numeric52 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            let hundredths = i32::deserialize(d)?;
            Numeric52::from_hundredths(hundredths).ok_or_else(|| {
                serde::de::Error::custom(format!("{hundredths} hundredths is outside numeric(5,2)"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> Option<String> {
        let d: Decimal = text.parse().unwrap();
        d.to_numeric_5_2().map(|n| n.to_string())
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_exact() {
        assert_eq!(round("0.455").as_deref(), Some("0.46"));
        assert_eq!(round("-0.455").as_deref(), Some("-0.46"));
        assert_eq!(round("0.454").as_deref(), Some("0.45"));
        assert_eq!(round("0.4549999999999999999").as_deref(), Some("0.45"));
        assert_eq!(round("99.995").as_deref(), Some("100.00"));
        assert_eq!(round("999.994").as_deref(), Some("999.99"));
        assert_eq!(round("-999.994").as_deref(), Some("-999.99"));
        assert_eq!(round("0.005").as_deref(), Some("0.01"));
        assert_eq!(round("-0.004").as_deref(), Some("0.00"));
        assert_eq!(round("12").as_deref(), Some("12.00"));
        assert_eq!(round("007.10").as_deref(), Some("7.10"));
    }

    #[test]
    fn out_of_range_values_do_not_fit() {
        assert_eq!(round("999.995"), None);
        assert_eq!(round("-999.995"), None);
        assert_eq!(round("1000"), None);
        assert_eq!(round("123456789012345678901234567890"), None);
        assert_eq!(round("NaN"), None);
        assert_eq!(round("Infinity"), None);
        assert_eq!(round("-Infinity"), None);
    }

    #[test]
    fn parsing_normalizes_scale_and_sign() {
        let a: Decimal = "0.4550".parse().unwrap();
        let b: Decimal = "+000.455".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "0.455");
        assert_eq!("-0.000".parse::<Decimal>().unwrap().as_str(), "0");
        assert_eq!(".5".parse::<Decimal>().unwrap().as_str(), "0.5");
        assert_eq!("5.".parse::<Decimal>().unwrap().as_str(), "5");
    }

    #[test]
    fn parsing_rejects_what_postgres_never_prints() {
        for bad in ["", "-", ".", "1e3", "1.2.3", " 1", "0x10", "nan", "1,5"] {
            let err = bad.parse::<Decimal>().unwrap_err();
            assert!(
                matches!(err, Error::InvalidDecimal { ref input } if input == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn regression_fuzz_decode_of_i32_min_hundredths_does_not_panic() {
        // Found by the decode_event fuzz target: abs() of i32::MIN overflowed.
        assert!(Numeric52::from_hundredths(i32::MIN).is_none());
        assert!(Numeric52::from_hundredths(i32::MAX).is_none());
        let bytes = crate::encode(&Some(i32::MIN)).unwrap();
        assert!(crate::decode::<Option<Numeric52>>(&bytes).is_err());
    }

    #[test]
    fn numeric52_bounds_and_text() {
        assert!(Numeric52::from_hundredths(99_999).is_some());
        assert!(Numeric52::from_hundredths(-99_999).is_some());
        assert!(Numeric52::from_hundredths(100_000).is_none());
        assert_eq!(Numeric52::from_hundredths(-5).unwrap().to_string(), "-0.05");
        assert_eq!("12.30".parse::<Numeric52>().unwrap().hundredths(), 1230);
        assert!("1000.00".parse::<Numeric52>().is_err());
    }
}
