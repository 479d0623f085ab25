//! Instants on the command line: RFC 3339, or a plain date.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

use crate::ReplayError;

/// Which end of a plain date an option means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateEnd {
    /// `--from`: the day's first instant, 00:00:00Z.
    Start,
    /// `--as-of` and `--to`: the day's last instant, 23:59:59.999999Z, so
    /// the whole day counts ("the balance as of March 31" is at its close).
    End,
}

/// Parses `2026-03-31T12:00:00Z` (any RFC 3339 offset, converted to UTC)
/// or `2026-03-31` (UTC, the given end of the day).
pub fn parse_instant(input: &str, end: DateEnd) -> Result<DateTime<Utc>, ReplayError> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || ReplayError::BadTime {
        input: input.to_owned(),
    };
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    let start = date.and_time(NaiveTime::MIN).and_utc();
    Ok(match end {
        DateEnd::Start => start,
        DateEnd::End => start
            .checked_add_signed(TimeDelta::days(1) - TimeDelta::microseconds(1))
            .ok_or_else(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3339_and_plain_dates_are_accepted() {
        let t = parse_instant("2026-03-31T12:00:00+02:00", DateEnd::End).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-31T10:00:00+00:00");
        let start = parse_instant("2026-03-31", DateEnd::Start).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-03-31T00:00:00+00:00");
        let end = parse_instant("2026-03-31", DateEnd::End).unwrap();
        assert_eq!(projections::time_text(end), "2026-03-31T23:59:59.999999Z");
    }

    #[test]
    fn anything_else_is_a_bad_time() {
        for s in [
            "yesterday",
            "2026-13-01",
            "31/03/2026",
            "",
            "2026-03-31T25:00:00Z",
        ] {
            assert!(
                matches!(
                    parse_instant(s, DateEnd::End),
                    Err(ReplayError::BadTime { .. })
                ),
                "{s:?}"
            );
        }
    }
}
