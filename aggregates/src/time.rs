//! Times that come from clients, bounded to what every store of the ledger
//! can hold.
//!
//! chrono holds years -262143 to 262142 and PostgreSQL's `timestamptz` 4713
//! BC to 294276 AD, in microseconds. A time outside both would be appended
//! as an event and then refused by every projection that writes it to a
//! column, on every retry and every rebuild. Two bounds keep that from
//! happening:
//! - at the edge, a client's time must lie in [`TIME_MIN`] to [`TIME_MAX`]
//!   (1970 to 9999: far inside both, and what any client means), at
//!   microsecond precision ([`BoundedTime`]; finer digits are truncated, as
//!   PostgreSQL would round them);
//! - in the decision, whatever the command came from, a time must lie in
//!   [`STORABLE_MIN`] to [`STORABLE_MAX`], the range both hold ([`check`]).
//!   The decision keeps to what storage needs, not to the edge's policy, so
//!   that history accepted under an earlier edge (a 1900 date) is still
//!   re-decided the same by `verify` and `replay`.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The earliest time a client may send: 1970-01-01T00:00:00Z.
pub const TIME_MIN: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// The latest time a client may send: 9999-12-31T23:59:59.999999Z.
pub const TIME_MAX: DateTime<Utc> = utc(9999, 12, 31, 23, 59, 59, 999_999);

/// The range as clients read it in errors and documentation.
pub const TIME_RANGE_TEXT: &str = "1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z";

/// The earliest time a decision accepts: 4713-01-01 BC (astronomical year
/// -4712), after PostgreSQL's earliest `timestamptz` (4714-11-24 BC).
pub const STORABLE_MIN: DateTime<Utc> = utc(-4712, 1, 1, 0, 0, 0, 0);

/// The latest time a decision accepts: chrono's last day, long before
/// PostgreSQL's (294276 AD).
pub const STORABLE_MAX: DateTime<Utc> = utc(262_142, 12, 31, 23, 59, 59, 999_999);

/// The storable range as errors name it.
pub const STORABLE_RANGE_TEXT: &str = "-4712-01-01T00:00:00Z to +262142-12-31T23:59:59.999999Z";

/// A UTC time from its fields, for the constants above (whose fields are
/// valid: the unit tests pin each one's text).
const fn utc(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micro: u32,
) -> DateTime<Utc> {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => match date.and_hms_micro_opt(hour, minute, second, micro) {
            Some(time) => time.and_utc(),
            None => DateTime::UNIX_EPOCH,
        },
        None => DateTime::UNIX_EPOCH,
    }
}

/// A time in a command that no store of the ledger could hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be a time PostgreSQL and chrono both hold: {STORABLE_RANGE_TEXT}")]
pub struct TimeOutOfRange {
    /// The field that held it.
    pub field: &'static str,
}

/// Whether `time` lies in the range a client may send.
pub fn in_range(time: DateTime<Utc>) -> bool {
    (TIME_MIN..=TIME_MAX).contains(&time)
}

/// Whether `time` lies in the range every store holds.
pub fn storable(time: DateTime<Utc>) -> bool {
    (STORABLE_MIN..=STORABLE_MAX).contains(&time)
}

/// `time`, or an error naming `field` when no store could hold it (what a
/// decision checks, whatever the command came from).
pub fn check(field: &'static str, time: DateTime<Utc>) -> Result<(), TimeOutOfRange> {
    if storable(time) {
        Ok(())
    } else {
        Err(TimeOutOfRange { field })
    }
}

/// A client's time in [`TIME_MIN`]..=[`TIME_MAX`], truncated to
/// microseconds. Deserializing anything else fails, naming the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BoundedTime(DateTime<Utc>);

impl BoundedTime {
    /// `time` truncated to microseconds, if in range.
    pub fn new(time: DateTime<Utc>) -> Option<Self> {
        let time = time.trunc_subsecs(6);
        in_range(time).then_some(Self(time))
    }

    /// The time.
    pub const fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<BoundedTime> for DateTime<Utc> {
    fn from(time: BoundedTime) -> Self {
        time.0
    }
}

impl fmt::Display for BoundedTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl std::str::FromStr for BoundedTime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // chrono's own parser, as for any `DateTime` field: it reads RFC 3339
        // and also years beyond four digits, which are then refused by range.
        let outside = || format!("{text:?} is not a time in {TIME_RANGE_TEXT}");
        let time = text
            .parse::<DateTime<chrono::FixedOffset>>()
            .map_err(|error| match error.kind() {
                chrono::format::ParseErrorKind::OutOfRange => outside(),
                _ => format!("{text:?} is not an RFC 3339 time: {error}"),
            })?;
        Self::new(time.with_timezone(&Utc)).ok_or_else(outside)
    }
}

impl<'de> Deserialize<'de> for BoundedTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BoundedTime, String> {
        serde_json::from_value(serde_json::json!(text)).map_err(|error| error.to_string())
    }

    #[test]
    fn the_bounds_are_the_first_and_last_microsecond_of_the_range() {
        assert_eq!(TIME_MIN.to_rfc3339(), "1970-01-01T00:00:00+00:00");
        assert_eq!(TIME_MAX.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
        assert!(parse("1970-01-01T00:00:00Z").is_ok());
        assert!(parse("9999-12-31T23:59:59.999999Z").is_ok());
    }

    #[test]
    fn times_outside_the_range_are_refused_naming_it() {
        for text in [
            "-5000-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "+10000-01-01T00:00:00Z",
            "+275760-09-13T00:00:00Z",
            "2026-13-01T00:00:00Z",
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(TIME_RANGE_TEXT), "{text}: {error}");
        }
        assert!(parse("yesterday")
            .unwrap_err()
            .starts_with("\"yesterday\" is not an RFC 3339 time"));
        assert!(serde_json::from_value::<BoundedTime>(serde_json::json!(5)).is_err());
    }

    #[test]
    fn offsets_are_normalised_and_nanoseconds_truncated_to_microseconds() {
        let time = parse("2026-12-01T01:00:00.123456789+01:00").unwrap();
        assert_eq!(time.to_string(), "2026-12-01T00:00:00.123456Z");
    }

    #[test]
    fn a_decision_refuses_only_times_no_store_could_hold_naming_the_field() {
        let ancient: DateTime<Utc> = "-5000-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            check("effective_at", ancient),
            Err(TimeOutOfRange {
                field: "effective_at"
            })
        );
        let before = STORABLE_MIN - chrono::Duration::microseconds(1);
        assert_eq!(check("at", before), Err(TimeOutOfRange { field: "at" }));
        let old: DateTime<Utc> = "1900-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(check("effective_at", old), Ok(()));
        assert_eq!(check("effective_at", STORABLE_MIN), Ok(()));
        assert_eq!(check("effective_at", STORABLE_MAX), Ok(()));
        assert_eq!(STORABLE_MIN.to_rfc3339(), "-4712-01-01T00:00:00+00:00");
        assert_eq!(
            STORABLE_MAX.to_rfc3339(),
            "+262142-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(
            TimeOutOfRange { field: "at" }.to_string(),
            format!("at must be a time PostgreSQL and chrono both hold: {STORABLE_RANGE_TEXT}")
        );
    }
}
