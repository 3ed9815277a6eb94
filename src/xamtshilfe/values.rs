//! Value types that check their own form when they are read, so a parsed message can only
//! hold well-formed amounts, UUIDs, IBANs and timestamps.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// An amount of money in euro cents. Written and read as a decimal with at most two places
/// (`412.50`, `12`, `0.5`); anything else is refused when the message is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i64);

impl Cents {
    /// Adds without overflowing; `None` when the sum does not fit.
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Why a text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("'{0}' is not a decimal amount (expected digits with at most two decimal places, e.g. 412.50)")]
    NotDecimal(String),
    #[error("'{0}' has more than two decimal places")]
    TooManyDecimals(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

impl FromStr for Cents {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        // As xs:decimal in our XSD: an optional minus, no plus sign.
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
            return Err(AmountError::NotDecimal(clip(text)));
        }
        if frac.len() > 2 {
            return Err(AmountError::TooManyDecimals(clip(text)));
        }
        // 15 digits of euros is far beyond any claim and keeps the cents inside i64.
        if whole.trim_start_matches('0').len() > 15 {
            return Err(AmountError::TooLarge(clip(text)));
        }
        let euros: i64 = whole.parse().map_err(|_| AmountError::TooLarge(clip(text)))?;
        let mut cents = 0i64;
        for (i, b) in frac.bytes().enumerate() {
            cents += i64::from(b - b'0') * if i == 0 { 10 } else { 1 };
        }
        let value = euros * 100 + cents;
        Ok(Cents(if negative { -value } else { value }))
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The UUID of a message (`nachrichtenUUID`), in the canonical hyphenated form
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` that XÖV asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageUuid(pub uuid::Uuid);

impl MessageUuid {
    pub fn new_v4() -> Self {
        MessageUuid(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for MessageUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for MessageUuid {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let hyphens_ok = s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() }
            });
        if !hyphens_ok {
            return Err(format!(
                "'{}' is not a UUID in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                clip(text)
            ));
        }
        uuid::Uuid::parse_str(s).map(MessageUuid).map_err(|e| format!("'{}' is not a UUID: {e}", clip(text)))
    }
}

impl Serialize for MessageUuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageUuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A point in time with its UTC offset, written with milliseconds as XÖV asks
/// (`2026-11-27T10:15:00.000+01:00`). A time without a zone is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<FixedOffset>);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3f%:z"))
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        // RFC 3339 allows a space or a lowercase 't' between date and time; xs:dateTime
        // (and so our XSD) does not.
        if s.as_bytes().get(10) != Some(&b'T') {
            return Err(format!("'{}' is not a date-time of the form 2026-11-27T10:15:00.000+01:00", clip(text)));
        }
        DateTime::parse_from_rfc3339(s)
            .map(Timestamp)
            .map_err(|e| format!("'{}' is not a date-time with time zone (e.g. 2026-11-27T10:15:00.000+01:00): {e}", clip(text)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A calendar date (`2026-05-15`), read strictly as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub chrono::NaiveDate);

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl FromStr for Date {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let shape_ok = s.len() == 10
            && s.char_indices().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
        if !shape_ok {
            return Err(format!("'{}' is not a date in the form YYYY-MM-DD", clip(text)));
        }
        // The shape is checked: the fields are plain digits (chrono's format parser costs
        // about a microsecond per date, a third of the time a whole claim takes to read).
        let digits = |r: std::ops::Range<usize>| s.as_bytes()[r].iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        chrono::NaiveDate::from_ymd_opt(digits(0..4) as i32, digits(5..7), digits(8..10))
            .map(Date)
            .ok_or_else(|| format!("'{}' is not a calendar date", clip(text)))
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Checks an IBAN: country letters, check digits, at most 34 characters, and the ISO 7064
/// mod-97 checksum. Spaces (as in printed IBANs) are ignored.
pub fn check_iban(text: &str) -> Result<(), String> {
    let compact = || text.bytes().filter(|b| !b.is_ascii_whitespace());
    let len = compact().count();
    let shape_ok = (15..=34).contains(&len)
        && compact().enumerate().all(|(i, b)| match i {
            0 | 1 => b.is_ascii_uppercase(),
            2 | 3 => b.is_ascii_digit(),
            _ => b.is_ascii_alphanumeric(),
        });
    if !shape_ok {
        return Err(format!("'{}' is not an IBAN (two letters, two check digits, up to 30 letters or digits)", clip(text)));
    }
    if compact().take(2).eq(*b"DE") && len != 22 {
        return Err(format!("a German IBAN has 22 characters, '{}' has {len}", clip(text)));
    }
    // ISO 7064 mod 97-10 over the account part followed by country and check digits.
    let mut remainder: u32 = 0;
    for b in compact().skip(4).chain(compact().take(4)) {
        let value = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b.to_ascii_uppercase() - b'A') + 10 };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    if remainder == 1 { Ok(()) } else { Err(format!("IBAN checksum is wrong for '{}'", clip(text))) }
}

/// Shortens an input text for an error message, so that a huge value never floods a report.
pub fn clip(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!("412.50".parse::<Cents>(), Ok(Cents(41250)));
        assert_eq!("12".parse::<Cents>(), Ok(Cents(1200)));
        assert_eq!("0.5".parse::<Cents>(), Ok(Cents(50)));
        assert_eq!("-3.07".parse::<Cents>(), Ok(Cents(-307)));
        assert!(matches!("1.005".parse::<Cents>(), Err(AmountError::TooManyDecimals(_))));
        for bad in ["", ".5", "1.", "1,50", "abc", "1e3", "1.2.3", "--1"] {
            assert!(bad.parse::<Cents>().is_err(), "{bad}");
        }
        assert!("9999999999999999999999".parse::<Cents>().is_err());
        assert_eq!(Cents(41250).to_string(), "412.50");
        assert_eq!(Cents(-5).to_string(), "-0.05");
    }

    #[test]
    fn ibans() {
        assert!(check_iban("DE02120300000000202051").is_ok());
        assert!(check_iban("DE02 1203 0000 0000 2020 51").is_ok());
        assert!(check_iban("DE03120300000000202051").is_err());
        assert!(check_iban("DE0212030000000020205").is_err());
        assert!(check_iban("GB33BUKB20201555555555").is_ok());
        assert!(check_iban("X").is_err());
    }

    #[test]
    fn uuids_and_dates() {
        assert!("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11".parse::<MessageUuid>().is_ok());
        assert!("7d3c1f0e2b7a4c559a510c2f5f7e9b11".parse::<MessageUuid>().is_err());
        assert!("{7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11}".parse::<MessageUuid>().is_err());
        assert!("2026-02-30".parse::<Date>().is_err());
        assert!("2026-2-3".parse::<Date>().is_err());
        let t: Timestamp = "2026-11-27T10:15:00.000+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-27T10:15:00.000+01:00");
        assert!("2026-11-27T10:15:00".parse::<Timestamp>().is_err());
        assert!("2026-11-27 10:15:00+01:00".parse::<Timestamp>().is_err());
        assert!("+12.00".parse::<Cents>().is_err());
    }
}
