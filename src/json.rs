//! JSON exactly as Go's `encoding/json` writes and reads it.
//!
//! [`to_json`] and [`to_json_writer`] write any `Serialize` value with Go's
//! escapes and number forms. [`go_json_struct!`] gives a struct the
//! `Serialize` and `Deserialize` of a Go struct with `json` tags: Go's time
//! format, `omitempty`, and the leniency of Go's decoder (missing fields and
//! `null` leave the zero value, keys match case-insensitively, the last of a
//! repeated key wins, unknown keys are ignored). [`GoJson`] says how each
//! field type behaves.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, Serializer};
use serde_json::ser::Formatter;

use crate::agent::AgentStatus;

/// Go's zero `time.Time`, `0001-01-01T00:00:00Z`: the heartbeat of an
/// [`AgentInfo::default()`](crate::AgentInfo) and of an agent decoded from
/// JSON without one. The command line shows it as `never`.
pub const ZERO_TIME: DateTime<Utc> = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(date) => NaiveDateTime::new(date, NaiveTime::MIN).and_utc(),
    None => panic!("0001-01-01 is a valid date"),
};

/// Serialises `value` as compact JSON, byte for byte as Go's `json.Marshal`
/// writes the same data.
///
/// It differs from `serde_json::to_string` only where Go does:
///
/// - `<`, `>` and `&` are written `\u003c`, `\u003e`, `\u0026`, and U+2028
///   and U+2029 `\u2028`, `\u2029`, in keys and values;
/// - floating-point numbers take Go's shortest form: `1`, not `1.0`; `-0`;
///   `1e+21` and `1e-7` from 1e21 up and below 1e-6.
///
/// Other escapes are the same in both: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
/// `\f` and `\u00XX` (lowercase hex) for the other control characters, as
/// Go has written them since 1.22 (earlier versions wrote `\u0008` and
/// `\u000c` for `\b` and `\f`). An [`AgentInfo`](crate::AgentInfo), or a
/// `Vec` of them, comes out exactly as the Go registry writes it.
///
/// What Go's types decide rather than its encoder is up to the value's
/// `Serialize`: Go sorts map keys (use a `BTreeMap`), writes `[]byte` as
/// base64 and refuses NaN and infinities, which serde_json writes as `null`.
///
/// # Errors
///
/// Whatever the value's `Serialize` reports, for example for an
/// `AgentInfo` whose `last_heartbeat` Go could not write either (a year
/// outside 0000..=9999), or a map whose keys are not strings.
///
/// # Examples
///
/// ```
/// let json = roster::to_json(&vec!["<a> & b", "\u{2028}"])?;
/// assert_eq!(json, r#"["\u003ca\u003e \u0026 b","\u2028"]"#);
/// assert_eq!(roster::to_json(&(1.0, 1e21, 0.5))?, "[1,1e+21,0.5]");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn to_json<T: ?Sized + Serialize>(value: &T) -> serde_json::Result<String> {
    let mut bytes = Vec::with_capacity(128);
    to_json_writer(&mut bytes, value)?;
    String::from_utf8(bytes).map_err(|e| ser::Error::custom(format!("JSON is not UTF-8: {e}")))
}

/// Writes `value` to `writer` exactly as [`to_json`] returns it (no
/// newline).
///
/// # Errors
///
/// What [`to_json`] reports, and errors writing to `writer`.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// roster::to_json_writer(&mut out, &serde_json::json!({ "a&b": 1.5 }))?;
/// assert_eq!(out, br#"{"a\u0026b":1.5}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn to_json_writer<W: io::Write, T: ?Sized + Serialize>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(
        writer,
        GoFormatter,
    ))
}

/// serde_json's compact formatter with Go's HTML-safe escapes and float
/// forms.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already escaped quotes, backslashes and control
        // characters; what is left is what Go adds. U+2028 and U+2029 are
        // E2 80 A8 and E2 80 A9 in UTF-8.
        let bytes = fragment.as_bytes();
        let mut written = 0;
        let mut i = 0;
        while i < bytes.len() {
            let (escape, len): (&[u8], usize) = match bytes[i..] {
                [b'<', ..] => (b"\\u003c", 1),
                [b'>', ..] => (b"\\u003e", 1),
                [b'&', ..] => (b"\\u0026", 1),
                [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
                [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
                _ => {
                    i += 1;
                    continue;
                }
            };
            writer.write_all(&bytes[written..i])?;
            writer.write_all(escape)?;
            i += len;
            written = i;
        }
        writer.write_all(&bytes[written..])
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let abs = value.abs();
        let exponent_form = abs != 0.0 && !(1e-6..1e21).contains(&abs);
        writer.write_all(go_float(value, exponent_form, 800).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        let abs = value.abs();
        let exponent_form = abs != 0.0 && !(1e-6..1e21).contains(&abs);
        writer.write_all(go_float(value, exponent_form, 160).as_bytes())
    }
}

/// A finite float as Go's `strconv.FormatFloat(value, 'e' or 'f', -1, bits)`
/// writes it, with the `e-07` to `e-7` trim of Go's JSON encoder.
///
/// Both languages write the fewest digits that read back as the same number
/// and, of those, the nearest to it; on an exact tie between two such
/// digit strings, Go takes the even last digit where Rust rounds up
/// (`133234.625_f32` is `133234.62` in Go, `133234.63` in Rust). `exact_digits`
/// is enough digits to write any value of the type exactly.
fn go_float<F>(value: F, exponent_form: bool, exact_digits: usize) -> String
where
    F: fmt::LowerExp + std::str::FromStr + PartialEq + Copy,
{
    let shortest = format!("{value:e}");
    let (negative, shortest) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest.as_str()),
    };
    let (mut digits, mut exponent) = split_exponent_form(shortest);
    if let Some((even, even_exponent)) = tie_to_even(value, negative, &digits, exact_digits) {
        (digits, exponent) = (even, even_exponent);
    }
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    let count = digits.len() as i64;
    if exponent_form {
        out.push_str(&digits[..1]);
        if count > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        if exponent >= 0 {
            out.push('+');
        }
        out.push_str(&exponent.to_string());
    } else if exponent >= count - 1 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (exponent - (count - 1)) as usize));
    } else if exponent >= 0 {
        let point = (exponent + 1) as usize;
        out.push_str(&digits[..point]);
        out.push('.');
        out.push_str(&digits[point..]);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits);
    }
    out
}

/// "1.2345e-7" -> ("12345", -7): the significant digits and the power of ten
/// of the first one.
fn split_exponent_form(text: &str) -> (String, i64) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// When `value` lies exactly halfway between the two shortest digit strings
/// of its length (`digits` being Rust's choice for it, `negative` its sign),
/// the one with the even last digit, as Go chooses it, with its exponent;
/// `None` otherwise.
fn tie_to_even<F>(
    value: F,
    negative: bool,
    digits: &str,
    exact_digits: usize,
) -> Option<(String, i64)>
where
    F: fmt::LowerExp + std::str::FromStr + PartialEq + Copy,
{
    let length = digits.len();
    // Cheap test first: to two more digits, a tie reads "...50".
    let near = format!("{value:.*e}", length + 1);
    let (near_digits, _) = split_exponent_form(near.trim_start_matches('-'));
    if !near_digits.ends_with("50") {
        return None;
    }
    let exact = format!("{value:.*e}", exact_digits);
    let (exact_digits, exact_exponent) = split_exponent_form(exact.trim_start_matches('-'));
    let exact_digits = exact_digits.trim_end_matches('0');
    if exact_digits.len() != length + 1 || !exact_digits.ends_with('5') {
        return None;
    }
    let below: u64 = exact_digits[..length].parse().ok()?;
    let even = if below.is_multiple_of(2) {
        below
    } else {
        below + 1
    };
    let mut even_digits = even.to_string();
    let mut exponent = exact_exponent;
    if even_digits.len() > length {
        exponent += 1;
    }
    even_digits.truncate(even_digits.trim_end_matches('0').len().max(1));
    let sign = if negative { "-" } else { "" };
    let reread: F = format!(
        "{sign}{}.{}e{exponent}",
        &even_digits[..1],
        &even_digits[1..]
    )
    .parse()
    .ok()?;
    (reread == value).then_some((even_digits, exponent))
}

/// Writes a time as Go's `time.Time.MarshalJSON` writes a UTC time: RFC 3339
/// with nanoseconds, trailing fractional zeros trimmed, no fraction when it is
/// zero, and `Z`.
///
/// # Errors
///
/// For what Go cannot write either: a year outside 0000..=9999, or a leap
/// second (Go's time has none).
pub(crate) fn format_go_time(time: &DateTime<Utc>) -> Result<String, String> {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        return Err(format!(
            "time {time:?} cannot be written as JSON: year {year} is outside 0000..=9999"
        ));
    }
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return Err(format!(
            "time {time:?} cannot be written as JSON: it is a leap second"
        ));
    }
    let mut text = format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    Ok(text)
}

/// Parses a time as Go's `time.Time.UnmarshalJSON` does (Go 1.20 and later,
/// which follow RFC 3339 strictly): `YYYY-MM-DDTHH:MM:SS`, an optional
/// fraction of one or more digits (digits past the ninth are dropped), then
/// `Z` or an offset `+HH:MM` / `-HH:MM`. The result is in UTC.
///
/// # Errors
///
/// A message saying what is wrong, for anything else: a lowercase `t` or
/// `z`, a space for `T`, one-digit fields, a comma before the fraction, a
/// missing offset, an out-of-range field (month 13, February 30, hour 24,
/// second 60, offset hour 24).
/// Serialises a time as Go writes a UTC `time.Time` (for `#[serde(serialize_with)]`).
pub(crate) fn serialize_time<S: Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_go_time(time).map_err(ser::Error::custom)?)
}

/// [`serialize_time`], or `null` for `None`.
pub(crate) fn serialize_optional_time<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serialize_time(time, serializer),
        None => serializer.serialize_none(),
    }
}

pub(crate) fn parse_go_time(text: &str) -> Result<DateTime<Utc>, String> {
    let fail = |reason: &str| {
        Err(format!(
            "invalid time {text:?}: {reason} (expected RFC 3339, such as \"2026-02-20T07:16:53Z\" or \"2026-02-20T09:16:53.123+02:00\")"
        ))
    };
    let bytes = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes.get(from..to)?.iter().try_fold(0_u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if bytes.len() < 20 || separators.iter().any(|&(at, sep)| bytes[at] != sep) {
        return fail("not in the form YYYY-MM-DDTHH:MM:SS followed by Z or an offset");
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4),
        number(5, 7),
        number(8, 10),
        number(11, 13),
        number(14, 16),
        number(17, 19),
    ) else {
        return fail("a date or time field is not all digits");
    };
    if !(1..=12).contains(&month) {
        return fail("month out of range");
    }
    let Some(date) = i32::try_from(year)
        .ok()
        .and_then(|year| NaiveDate::from_ymd_opt(year, month, day))
    else {
        return fail("day out of range");
    };
    if hour > 23 || minute > 59 || second > 59 {
        return fail("hour, minute or second out of range");
    }
    let mut rest = &bytes[19..];
    let mut nanos = 0;
    if let [b'.', first, ..] = rest
        && first.is_ascii_digit()
    {
        let digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        for position in 0..9 {
            let digit = rest.get(1 + position).filter(|_| position < digits);
            nanos = nanos * 10 + digit.map_or(0, |&b| u32::from(b - b'0'));
        }
        rest = &rest[1 + digits..];
    }
    let offset_seconds = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (Some(hours), Some(minutes)) = (two(*h1, *h2), two(*m1, *m2)) else {
                return fail("the offset is not +HH:MM or -HH:MM");
            };
            if hours > 23 || minutes > 59 {
                return fail("offset out of range");
            }
            let seconds = (hours * 60 + minutes) * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return fail("expected Z or an offset +HH:MM / -HH:MM after the time"),
    };
    let Some(local) = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos) else {
        return fail("time out of range");
    };
    match NaiveDateTime::new(date, local)
        .and_utc()
        .checked_sub_signed(TimeDelta::seconds(offset_seconds))
    {
        Some(utc) => Ok(utc),
        None => fail("out of range"),
    }
}

/// How one field type behaves in Go's `encoding/json`: its zero value, what
/// `omitempty` leaves out, how it is written and read, and what `null` does
/// to it. Implemented for the types [`go_json_struct!`] fields may have.
pub(crate) trait GoJson: Sized {
    /// Whether `null` resets the field to its zero value, as it does for Go's
    /// slices, maps and pointers; for every other type Go leaves the field as
    /// it was.
    const NULL_RESETS: bool = false;

    /// Go's zero value: what a field holds when its key is missing.
    fn go_zero() -> Self;

    /// Whether `omitempty` leaves the field out: `false`, 0, `""`, an empty
    /// slice or map, a nil pointer. Never for a time (a Go struct).
    fn go_is_empty(&self) -> bool;

    /// Writes the value as Go does.
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;

    /// Reads a value that is not `null`, accepting what Go accepts for the
    /// type.
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;

    /// Stores a decoded value in a field that already holds one (the key was
    /// repeated): the new one replaces it, except that Go merges the entries
    /// of a repeated map.
    fn go_merge(&mut self, decoded: Self) {
        *self = decoded;
    }
}

/// Types whose Go form is their serde form, zero their `Default`, empty
/// their zero.
macro_rules! plain_go_json {
    ($($ty:ty),*) => {$(
        impl GoJson for $ty {
            fn go_zero() -> Self {
                Self::default()
            }
            fn go_is_empty(&self) -> bool {
                *self == Self::default()
            }
            fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
            fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::deserialize(deserializer)
            }
        }
    )*};
}

plain_go_json!(bool, String, u32, u64, i64);

impl GoJson for AgentStatus {
    /// roster's status has no empty value: its zero value is `Available`.
    fn go_zero() -> Self {
        Self::default()
    }
    fn go_is_empty(&self) -> bool {
        false
    }
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }
    /// A status name; `""`, the Go registry's zero status, reads as
    /// `Available`.
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = AgentStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status: \"available\", \"busy\" or \"offline\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AgentStatus, E> {
                if text.is_empty() {
                    return Ok(AgentStatus::default());
                }
                text.parse()
                    .map_err(|_| E::unknown_variant(text, &["available", "busy", "offline"]))
            }
        }
        deserializer.deserialize_str(StatusVisitor)
    }
}

impl GoJson for DateTime<Utc> {
    fn go_zero() -> Self {
        ZERO_TIME
    }
    fn go_is_empty(&self) -> bool {
        false
    }
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_go_time(self).map_err(ser::Error::custom)?)
    }
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
                parse_go_time(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TimeVisitor)
    }
}

impl<T: GoJson> GoJson for Option<T> {
    const NULL_RESETS: bool = true;
    fn go_zero() -> Self {
        None
    }
    fn go_is_empty(&self) -> bool {
        self.is_none()
    }
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(value) => value.go_serialize(serializer),
            None => serializer.serialize_none(),
        }
    }
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::go_deserialize(deserializer).map(Some)
    }
}

/// A slice. An empty one is written `[]` (a Go nil slice would be `null`;
/// with `omitempty` both are left out); a `null` element reads as the
/// element's zero value.
impl<T: GoJson> GoJson for Vec<T> {
    const NULL_RESETS: bool = true;
    fn go_zero() -> Self {
        Vec::new()
    }
    fn go_is_empty(&self) -> bool {
        self.is_empty()
    }
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Go))
    }
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: GoJson> Visitor<'de> for SeqVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(value) = seq.next_element_seed(Element(PhantomData))? {
                    values.push(value);
                }
                Ok(values)
            }
        }
        deserializer.deserialize_seq(SeqVisitor(PhantomData))
    }
}

/// A map with string keys, written in key order as Go sorts them; a `null`
/// value reads as the value's zero, and a repeated map merges.
impl<T: GoJson> GoJson for BTreeMap<String, T> {
    const NULL_RESETS: bool = true;
    fn go_zero() -> Self {
        BTreeMap::new()
    }
    fn go_is_empty(&self) -> bool {
        self.is_empty()
    }
    fn go_serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(key, value)| (key, Go(value))))
    }
    fn go_deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: GoJson> Visitor<'de> for MapVisitor<T> {
            type Value = BTreeMap<String, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut values = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value_seed(Element(PhantomData))?;
                    values.insert(key, value);
                }
                Ok(values)
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
    fn go_merge(&mut self, decoded: Self) {
        self.extend(decoded);
    }
}

/// A field or element, serialised the Go way.
pub(crate) struct Go<'a, T>(pub &'a T);

impl<T: GoJson> Serialize for Go<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.go_serialize(serializer)
    }
}

/// Reads one element of an array or map: `null` is the zero value.
struct Element<T>(PhantomData<T>);

impl<'de, T: GoJson> DeserializeSeed<'de> for Element<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        Ok(deserialize_nullable(deserializer)?.unwrap_or_else(T::go_zero))
    }
}

/// Reads `null` as `None`, anything else as `T` does.
fn deserialize_nullable<'de, T: GoJson, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    struct NullableVisitor<T>(PhantomData<T>);
    impl<'de, T: GoJson> Visitor<'de> for NullableVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            T::go_deserialize(d).map(Some)
        }
    }
    deserializer.deserialize_option(NullableVisitor(PhantomData))
}

/// Reads the value of a struct field into the field: `null` resets it or
/// leaves it as it was (see [`GoJson::NULL_RESETS`]), a value replaces it
/// (or merges, see [`GoJson::go_merge`]).
pub(crate) struct Slot<'a, T>(pub &'a mut T);

impl<'de, T: GoJson> DeserializeSeed<'de> for Slot<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match deserialize_nullable(deserializer)? {
            Some(value) => self.0.go_merge(value),
            None if T::NULL_RESETS => *self.0 = T::go_zero(),
            None => {}
        }
        Ok(())
    }
}

/// Reads an object key and finds the field it names the way Go does: an
/// exact match, or else a case-insensitive one (where the Kelvin sign `K`
/// folds to `k` and the long `ſ` to `s`). `None` for a key that names no
/// field. Field names are ASCII.
pub(crate) struct FieldKey(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldKey {
    type Value = Option<&'static str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldKey {
    type Value = Option<&'static str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let exact = self.0.iter().find(|name| **name == key);
        Ok(exact
            .or_else(|| self.0.iter().find(|name| go_fold_equal(key, name)))
            .copied())
    }
}

/// Whether `key` equals the ASCII `name` under Go's case folding.
fn go_fold_equal(key: &str, name: &str) -> bool {
    let mut key = key.chars();
    for expected in name.chars() {
        let folded = match key.next() {
            Some('\u{212A}') => 'k',
            Some('\u{17F}') => 's',
            Some(c) => c.to_ascii_lowercase(),
            None => return false,
        };
        if folded != expected.to_ascii_lowercase() {
            return false;
        }
    }
    key.next().is_none()
}

/// Implements [`GoJson`], `Serialize` and `Deserialize` for a struct the way
/// Go's `encoding/json` handles a struct whose `json` tags are the field
/// names: one line per field, in the struct's order, with `: omitempty`
/// where Go's tag has it. Every field of the struct must be listed.
///
/// Writing follows the listed order and leaves out empty `omitempty`
/// fields. Reading starts from the zero value of every field and accepts an
/// object whose keys match case-insensitively, in any order, repeated (the
/// last wins), unknown (ignored), or `null` (see [`GoJson::NULL_RESETS`]);
/// a whole-document `null` is the zero struct. Anything else, such as a
/// number where a string belongs, is an error naming what was expected.
macro_rules! go_json_struct {
    ($name:ident { $($field:ident $(: $omitempty:ident)?),* $(,)? }) => {
        impl $crate::json::GoJson for $name {
            fn go_zero() -> Self {
                Self { $($field: $crate::json::GoJson::go_zero()),* }
            }
            fn go_is_empty(&self) -> bool {
                false
            }
            fn go_serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeStruct as _;
                let mut out = serializer.serialize_struct(stringify!($name), [$(stringify!($field)),*].len())?;
                $(
                    if $crate::json::go_json_struct!(@omitempty $($omitempty)?)
                        && $crate::json::GoJson::go_is_empty(&self.$field)
                    {
                        out.skip_field(stringify!($field))?;
                    } else {
                        out.serialize_field(stringify!($field), &$crate::json::Go(&self.$field))?;
                    }
                )*
                out.end()
            }
            fn go_deserialize<'de, D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StructVisitor;
                impl<'de> ::serde::de::Visitor<'de> for StructVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("an object (", stringify!($name), ")"))
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        const FIELDS: &[&str] = &[$(stringify!($field)),*];
                        let mut value = <$name as $crate::json::GoJson>::go_zero();
                        while let Some(key) = map.next_key_seed($crate::json::FieldKey(FIELDS))? {
                            $(
                                if key == Some(stringify!($field)) {
                                    map.next_value_seed($crate::json::Slot(&mut value.$field))?;
                                    continue;
                                }
                            )*
                            map.next_value::<::serde::de::IgnoredAny>()?;
                        }
                        Ok(value)
                    }
                }
                deserializer.deserialize_map(StructVisitor)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $crate::json::GoJson::go_serialize(self, serializer)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use ::serde::de::DeserializeSeed as _;
                let mut value = <$name as $crate::json::GoJson>::go_zero();
                $crate::json::Slot(&mut value).deserialize(deserializer)?;
                Ok(value)
            }
        }
    };
    (@omitempty) => { false };
    (@omitempty omitempty) => { true };
}

pub(crate) use go_json_struct;

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn zero_time_is_go_zero_time() {
        assert_eq!(ZERO_TIME, utc("0001-01-01T00:00:00Z"));
        assert_eq!(
            format_go_time(&ZERO_TIME).as_deref(),
            Ok("0001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn times_are_written_with_trailing_zeros_trimmed() {
        for (time, go) in [
            ("2026-02-20T07:16:53Z", "2026-02-20T07:16:53Z"),
            ("2026-02-20T07:16:53.1Z", "2026-02-20T07:16:53.1Z"),
            ("2026-02-20T07:16:53.120Z", "2026-02-20T07:16:53.12Z"),
            (
                "2026-02-20T07:16:53.000000001Z",
                "2026-02-20T07:16:53.000000001Z",
            ),
            (
                "2026-02-20T07:16:53.123456789Z",
                "2026-02-20T07:16:53.123456789Z",
            ),
            ("0000-01-01T00:00:00.5Z", "0000-01-01T00:00:00.5Z"),
            (
                "9999-12-31T23:59:59.999999999Z",
                "9999-12-31T23:59:59.999999999Z",
            ),
        ] {
            assert_eq!(format_go_time(&utc(time)).as_deref(), Ok(go), "{time}");
        }
    }

    #[test]
    fn times_go_cannot_write_are_errors() {
        let late = utc("9999-12-31T23:00:00Z") + TimeDelta::days(1);
        let err = format_go_time(&late).unwrap_err();
        assert!(err.contains("year 10000 is outside 0000..=9999"), "{err}");
        let early = ZERO_TIME - TimeDelta::days(367);
        let err = format_go_time(&early).unwrap_err();
        assert!(err.contains("year -1 is outside"), "{err}");
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("leap second")
            .and_utc();
        let err = format_go_time(&leap).unwrap_err();
        assert!(err.contains("leap second"), "{err}");
    }

    #[test]
    fn strict_rfc3339_is_read_in_utc() {
        for (text, expected) in [
            ("2026-02-20T07:16:53Z", "2026-02-20T07:16:53Z"),
            ("2026-02-20T09:16:53.5+02:00", "2026-02-20T07:16:53.5Z"),
            ("2026-02-20T01:46:53-05:30", "2026-02-20T07:16:53Z"),
            ("2026-02-20T07:16:53-00:00", "2026-02-20T07:16:53Z"),
            (
                "2026-02-20T07:16:53.1234567891234Z",
                "2026-02-20T07:16:53.123456789Z",
            ),
            (
                "2026-02-20T07:16:53.999999999999Z",
                "2026-02-20T07:16:53.999999999Z",
            ),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ] {
            let parsed = parse_go_time(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, utc(expected), "{text}");
        }
        // The offset can take a time out of 0000..=9999, as in Go; writing it
        // is then the error.
        let parsed = parse_go_time("0000-01-01T00:30:00+01:00");
        assert_eq!(
            parsed,
            Ok(utc("0000-01-01T00:00:00Z") - TimeDelta::minutes(30))
        );
    }

    #[test]
    fn what_go_refuses_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "not in the form"),
            ("2026-02-20", "not in the form"),
            ("2026-02-20t07:16:53Z", "not in the form"),
            ("2026-02-20 07:16:53Z", "not in the form"),
            ("2026-02-20T7:16:53Z", "not in the form"),
            ("2026-02-20T07:16:53", "not in the form"),
            ("2026-02-20T07:16:53z", "expected Z or an offset"),
            ("2026-02-20T07:16:53,5Z", "expected Z or an offset"),
            ("2026-02-20T07:16:53.Z", "expected Z or an offset"),
            ("2026-02-20T07:16:53Z ", "expected Z or an offset"),
            ("2026-02-20T07:16:53+0200", "expected Z or an offset"),
            ("2026-02-20T07:16:53+02", "expected Z or an offset"),
            ("+026-02-20T07:16:53Z", "not all digits"),
            ("2026-13-20T07:16:53Z", "month out of range"),
            ("2026-00-20T07:16:53Z", "month out of range"),
            ("2026-02-30T07:16:53Z", "day out of range"),
            ("2025-02-29T07:16:53Z", "day out of range"),
            ("2026-02-20T24:00:00Z", "out of range"),
            ("2026-02-20T07:60:00Z", "out of range"),
            ("2026-02-20T23:59:60Z", "out of range"),
            ("2026-02-20T07:16:53+24:00", "offset out of range"),
            ("2026-02-20T07:16:53+02:60", "offset out of range"),
            ("2026-02-20T07:16:53+0a:00", "not +HH:MM"),
        ] {
            let err = parse_go_time(text).expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
            assert!(
                err.starts_with(&format!("invalid time {text:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn keys_fold_as_in_go() {
        for (key, matches) in [
            ("max_load", true),
            ("MAX_LOAD", true),
            ("Max_Load", true),
            ("max-load", false),
            ("maxload", false),
            ("max_load ", false),
            ("max_loa", false),
        ] {
            assert_eq!(go_fold_equal(key, "max_load"), matches, "{key}");
        }
        assert!(go_fold_equal("la\u{17F}t", "last"));
        assert!(go_fold_equal("\u{212A}ey", "key"));
        assert!(!go_fold_equal("l\u{C0}st", "last"));
    }

    #[test]
    fn floats_take_go_forms() -> serde_json::Result<()> {
        for (value, go) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.5, "0.5"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-1.25e-10, "-1.25e-10"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(to_json(&value)?, go, "{value:e}");
        }
        // Exactly halfway between two shortest forms: Go takes the even digit.
        let tie = f32::from_bits(0x4802_1ca8); // 133234.625 exactly
        assert_eq!(to_json(&tie)?, "133234.62");
        assert_eq!(to_json(&2_f64.powi(-25))?, "2.9802322387695312e-8");
        assert_eq!(to_json(&1e21_f32)?, "1e+21");
        assert_eq!(to_json(&0.1_f32)?, "0.1");
        Ok(())
    }

    #[test]
    fn html_and_line_separators_are_escaped_like_go() -> serde_json::Result<()> {
        assert_eq!(
            to_json("<a href=\"x\">&amp;</a>\u{2028}\u{2029}")?,
            r#""\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e\u2028\u2029""#
        );
        // Their neighbours, DEL, `/` and the other separators stay as they are.
        let plain = "\u{2027}\u{202A}\u{85}\u{7f}/é";
        assert_eq!(to_json(plain)?, format!("\"{plain}\""));
        assert_eq!(
            to_json("\u{0}\u{8}\u{c}\n\r\t\u{1f}\"\\")?,
            r#""\u0000\b\f\n\r\t\u001f\"\\""#
        );
        let map = BTreeMap::from([("<k>".to_owned(), "&")]);
        assert_eq!(to_json(&map)?, r#"{"\u003ck\u003e":"\u0026"}"#);
        Ok(())
    }

    /// The optional fields a later agent gains, each one line in the table.
    #[derive(Debug, PartialEq)]
    struct Extended {
        id: String,
        drained: bool,
        host: String,
        pid: u32,
        started_at: Option<DateTime<Utc>>,
        metadata: BTreeMap<String, String>,
        labels: Vec<String>,
        seen: DateTime<Utc>,
    }

    go_json_struct!(Extended {
        id,
        drained: omitempty,
        host: omitempty,
        pid: omitempty,
        started_at: omitempty,
        metadata: omitempty,
        labels,
        seen,
    });

    #[test]
    fn empty_omitempty_fields_are_left_out() -> serde_json::Result<()> {
        let zero = Extended::go_zero();
        assert_eq!(
            to_json(&zero)?,
            r#"{"id":"","labels":[],"seen":"0001-01-01T00:00:00Z"}"#
        );
        let full = Extended {
            id: "a".into(),
            drained: true,
            host: "h".into(),
            pid: 7,
            started_at: Some(utc("2026-02-20T07:16:53.5Z")),
            metadata: BTreeMap::from([("z".into(), "1".into()), ("a".into(), "2".into())]),
            labels: vec!["x".into()],
            seen: utc("2026-02-20T07:16:53Z"),
        };
        let json = to_json(&full)?;
        assert_eq!(
            json,
            r#"{"id":"a","drained":true,"host":"h","pid":7,"started_at":"2026-02-20T07:16:53.5Z","metadata":{"a":"2","z":"1"},"labels":["x"],"seen":"2026-02-20T07:16:53Z"}"#
        );
        assert_eq!(serde_json::from_str::<Extended>(&json)?, full);
        assert_eq!(serde_json::from_str::<Extended>("{}")?, zero);
        assert_eq!(serde_json::from_str::<Extended>("null")?, zero);
        Ok(())
    }

    #[test]
    fn null_resets_what_go_resets_and_leaves_the_rest() -> serde_json::Result<()> {
        let decoded: Extended = serde_json::from_str(
            r#"{"id":"a","id":null,"pid":3,"pid":null,"started_at":"2026-02-20T07:16:53Z","started_at":null,
                "labels":["x",null],"labels":null,"metadata":{"a":"1","b":"2"},"metadata":{"b":null,"c":"3"},
                "HOST":"h","Seen":null,"unknown":[1,{"x":null}]}"#,
        )?;
        assert_eq!(
            decoded,
            Extended {
                id: "a".into(),
                pid: 3,
                host: "h".into(),
                metadata: BTreeMap::from([
                    ("a".into(), "1".into()),
                    ("b".into(), String::new()),
                    ("c".into(), "3".into()),
                ]),
                ..Extended::go_zero()
            }
        );
        let labels: Extended = serde_json::from_str(r#"{"labels":["x",null,"y"]}"#)?;
        assert_eq!(labels.labels, ["x", "", "y"]);
        Ok(())
    }

    #[test]
    fn wrong_types_are_refused_as_go_refuses_them() {
        for (json, message) in [
            (
                r#"{"id":1}"#,
                "invalid type: integer `1`, expected a string",
            ),
            (r#"{"pid":"1"}"#, "invalid type: string \"1\", expected u32"),
            (
                r#"{"pid":1.0}"#,
                "invalid type: floating point `1.0`, expected u32",
            ),
            (r#"{"pid":-1}"#, "invalid value: integer `-1`, expected u32"),
            (
                r#"{"drained":0}"#,
                "invalid type: integer `0`, expected a boolean",
            ),
            (
                r#"{"labels":"x"}"#,
                "invalid type: string \"x\", expected an array",
            ),
            (
                r#"{"metadata":[]}"#,
                "invalid type: sequence, expected an object",
            ),
            (
                r#"{"seen":0}"#,
                "invalid type: integer `0`, expected an RFC 3339 time string",
            ),
            (
                r#"[]"#,
                "invalid type: sequence, expected an object (Extended)",
            ),
            (
                r#""x""#,
                "invalid type: string \"x\", expected an object (Extended)",
            ),
        ] {
            let err = serde_json::from_str::<Extended>(json).expect_err(json);
            assert!(err.to_string().starts_with(message), "{json}: {err}");
        }
    }
}
