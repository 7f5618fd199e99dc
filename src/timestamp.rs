//! The time forms `index shortlist` accepts, parsed without I/O.
//!
//! RFC 3339, unix seconds, and `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]`,
//! `YYYY-MM-DDTHH:MM[:SS]` in a given time zone (the shell passes local time).
//! A bound is inclusive to the precision written: `2024-05-01` as an end means
//! the whole of that day, `12:30` as an end means up to 12:30:59.999999999.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::{Error, Result, bail};

/// Whether a time is the start or the end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

pub const ACCEPTED_FORMS: &str = "use RFC 3339 (2024-05-01T12:00:00Z), YYYY-MM-DD, \
\"YYYY-MM-DD HH:MM[:SS]\" or YYYY-MM-DDTHH:MM[:SS] in local time, or unix seconds";

/// Parse one timestamp in any accepted form; naive forms are read in `tz`.
pub fn parse_time<Tz: TimeZone>(text: &str, bound: Bound, tz: &Tz) -> Result<DateTime<Utc>> {
    let s = text.trim();
    let unreadable = || Error::new(format!("cannot read {text:?} as a time; {ACCEPTED_FORMS}"));
    if !s.is_empty()
        && s.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        let secs: i64 = s.parse().map_err(|_| unreadable())?;
        let t = DateTime::from_timestamp(secs, 0).ok_or_else(unreadable)?;
        return Ok(match bound {
            Bound::Start => t,
            Bound::End => t + Duration::nanoseconds(999_999_999),
        });
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let start = d.and_hms_opt(0, 0, 0).ok_or_else(unreadable)?;
        return local(start, bound, Duration::days(1), tz, text);
    }
    for (fmt, span) in [
        ("%Y-%m-%d %H:%M:%S", Duration::seconds(1)),
        ("%Y-%m-%dT%H:%M:%S", Duration::seconds(1)),
        ("%Y-%m-%d %H:%M", Duration::minutes(1)),
        ("%Y-%m-%dT%H:%M", Duration::minutes(1)),
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return local(t, bound, span, tz, text);
        }
    }
    Err(unreadable())
}

fn local<Tz: TimeZone>(
    t: NaiveDateTime,
    bound: Bound,
    span: Duration,
    tz: &Tz,
    text: &str,
) -> Result<DateTime<Utc>> {
    let Some(start) = tz.from_local_datetime(&t).earliest() else {
        bail!("{text:?} does not exist in local time (a clock change skips it)");
    };
    let start = start.with_timezone(&Utc);
    Ok(match bound {
        Bound::Start => start,
        Bound::End => start + span - Duration::nanoseconds(1),
    })
}

/// Parse a `<start> <end>` pair and check that start <= end.
pub fn parse_range<Tz: TimeZone>(
    start: &str,
    end: &str,
    tz: &Tz,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let a = parse_time(start, Bound::Start, tz)?;
    let b = parse_time(end, Bound::End, tz)?;
    if a > b {
        bail!("the start {start:?} is after the end {end:?}; give the earlier time first");
    }
    Ok((a, b))
}

/// Nanoseconds since the unix epoch, as stored on the wire.
pub fn to_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A moment of this peer's own (a request, a sync round), RFC 3339 in UTC
/// to the millisecond, as in the history log and `sync status`.
pub fn event_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// RFC 3339 in UTC, as printed in JSON.
pub fn rfc3339(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn tz() -> FixedOffset {
        FixedOffset::east_opt(2 * 3600).unwrap()
    }

    #[test]
    fn every_form_parses() {
        let z = tz();
        let t = |s| parse_time(s, Bound::Start, &z).unwrap().to_rfc3339();
        assert_eq!(t("2024-05-01T12:00:00Z"), "2024-05-01T12:00:00+00:00");
        assert_eq!(t("2024-05-01T12:00:00+02:00"), "2024-05-01T10:00:00+00:00");
        assert_eq!(t("2024-05-01"), "2024-04-30T22:00:00+00:00");
        assert_eq!(t("2024-05-01 12:30"), "2024-05-01T10:30:00+00:00");
        assert_eq!(t("2024-05-01 12:30:15"), "2024-05-01T10:30:15+00:00");
        assert_eq!(t("2024-05-01T12:30"), "2024-05-01T10:30:00+00:00");
        assert_eq!(t("2024-05-01T12:30:15"), "2024-05-01T10:30:15+00:00");
        assert_eq!(t("1714564800"), "2024-05-01T12:00:00+00:00");
    }

    #[test]
    fn end_bounds_cover_what_was_written() {
        let z = tz();
        let e = |s| parse_time(s, Bound::End, &z).unwrap();
        assert_eq!(
            e("2024-05-01").to_rfc3339(),
            "2024-05-01T21:59:59.999999999+00:00"
        );
        assert_eq!(
            e("2024-05-01 12:30").to_rfc3339(),
            "2024-05-01T10:30:59.999999999+00:00"
        );
    }

    #[test]
    fn bad_input_names_accepted_forms() {
        let z = tz();
        for bad in ["yesterday", "2024-13-01", "2024-05-01 25:00", "", "12:00"] {
            let e = parse_time(bad, Bound::Start, &z).unwrap_err();
            assert!(e.message().contains("RFC 3339"), "{bad}: {e}");
        }
        let e = parse_range("2024-05-02", "2024-05-01", &z).unwrap_err();
        assert!(e.message().contains("after"), "{e}");
        assert!(parse_range("2024-05-01", "2024-05-01", &z).is_ok());
    }
}
