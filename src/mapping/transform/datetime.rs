//! Reading dates and times in the formats providers send, into UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DateFormat {
    /// RFC 3339, RFC 2822, `YYYY-MM-DD[ HH:MM:SS]`, or Unix seconds / milliseconds.
    Auto,
    UnixSeconds,
    UnixMillis,
    /// A chrono `strftime` pattern; without a zone the time is UTC.
    Pattern(String),
}

/// Reads a date/time; a value without a zone is taken as UTC.
pub(crate) fn parse_datetime(v: &Value, format: &DateFormat) -> Result<DateTime<Utc>, String> {
    let not_a_date = || match format {
        DateFormat::Pattern(p) => format!("not a date/time in the format {p:?}"),
        DateFormat::UnixSeconds => "not a Unix time in seconds".to_string(),
        DateFormat::UnixMillis => "not a Unix time in milliseconds".to_string(),
        DateFormat::Auto => "not a date/time".to_string(),
    };
    let number = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let s = match v {
        Value::String(s) => s.trim(),
        Value::Number(_) => "",
        _ => return Err(not_a_date()),
    };
    let parsed = match format {
        DateFormat::UnixSeconds => number.and_then(|n| from_unix_millis(n * 1000.0)),
        DateFormat::UnixMillis => number.and_then(from_unix_millis),
        DateFormat::Auto => match number {
            // Below 1e11 a number is seconds (until the year 5138), above it milliseconds.
            Some(n) if n.abs() < 1e11 => from_unix_millis(n * 1000.0),
            Some(n) => from_unix_millis(n),
            None => auto_datetime(s),
        },
        DateFormat::Pattern(p) => DateTime::parse_from_str(s, p)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(s, p)
                    .ok()
                    .map(|n| n.and_utc())
            })
            .or_else(|| {
                NaiveDate::parse_from_str(s, p)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|n| n.and_utc())
            }),
    };
    parsed.ok_or_else(not_a_date)
}

fn from_unix_millis(ms: f64) -> Option<DateTime<Utc>> {
    if !ms.is_finite() {
        return None;
    }
    DateTime::from_timestamp_millis(ms.round() as i64)
}

fn auto_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(s) {
        return Some(d.with_timezone(&Utc));
    }
    for p in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(s, p) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for p in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, p) {
            return Some(n.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

/// RFC 3339 in UTC, with sub-second digits only when there are some.
pub(crate) fn format_datetime(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
