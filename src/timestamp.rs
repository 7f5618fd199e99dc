//! The time forms `index shortlist` accepts, parsed without I/O (the time
//! zone and the current time are arguments).
//!
//! RFC 3339 (seconds optional: `2024-05-01T10:00Z`), `YYYY-MM-DD`,
//! `YYYY-MM-DD HH:MM[:SS]` and `YYYY-MM-DDTHH:MM[:SS]` in a given time zone
//! (the shell passes local time), the words `now`, `today` and `yesterday`,
//! times before now (`-30m`, `-2h`, `-3d`, `-1w`, also `-90s`), and unix
//! seconds, plain (`1714564800`) or marked (`@1714564800`, as GNU date has
//! it). A bare 8-digit number that reads as a date (`20240501`) is refused
//! as ambiguous. A bound is inclusive to the precision written: `2024-05-01`
//! or `today` as an end means the whole of that day, `12:30` as an end means
//! up to 12:30:59.999999999; `now` and relative times are instants.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::{Error, Result, bail};

/// Whether a time is the start or the end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

pub const ACCEPTED_FORMS: &str = "use RFC 3339 (2024-05-01T12:00:00Z, seconds optional), \
YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\" or YYYY-MM-DDTHH:MM[:SS] in local time, \
now, today, yesterday, a time before now (-30m, -2h, -3d, -1w), \
or unix seconds (@1714564800)";

/// Parse one timestamp in any accepted form; naive forms and the days of
/// `today` and `yesterday` are read in `tz`, relative forms from `now`.
pub fn parse_time<Tz: TimeZone>(
    text: &str,
    bound: Bound,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let s = text.trim();
    let unreadable = || Error::new(format!("cannot read {text:?} as a time; {ACCEPTED_FORMS}"));
    if let Some(secs) = s.strip_prefix('@') {
        return unix_seconds(secs, bound).ok_or_else(unreadable);
    }
    if is_integer(s) {
        if s.len() == 8 && NaiveDate::parse_from_str(s, "%Y%m%d").is_ok() {
            bail!(
                "{s} is ambiguous: write {}-{}-{} for a date, or @{s} for unix seconds",
                &s[..4],
                &s[4..6],
                &s[6..]
            );
        }
        return unix_seconds(s, bound).ok_or_else(unreadable);
    }
    let today = now.with_timezone(tz).date_naive();
    match s.to_ascii_lowercase().as_str() {
        "now" => return Ok(now),
        "today" => return day(today, bound, tz, text),
        "yesterday" => return day(today.pred_opt().ok_or_else(unreadable)?, bound, tz, text),
        _ => {}
    }
    if let Some(ago) = before_now(s) {
        return now.checked_sub_signed(ago).ok_or_else(unreadable);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = rfc3339_minutes(s) {
        return end_of(t, bound, Duration::minutes(1)).ok_or_else(unreadable);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return day(d, bound, tz, text);
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

/// An optional minus sign, then digits only.
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Unix seconds; as an end, the whole of that second.
fn unix_seconds(s: &str, bound: Bound) -> Option<DateTime<Utc>> {
    if !is_integer(s) {
        return None;
    }
    let t = DateTime::from_timestamp(s.parse().ok()?, 0)?;
    end_of(t, bound, Duration::seconds(1))
}

/// `-30m`, `-2h`, `-3d`, `-1w`, `-90s`: how long before now.
fn before_now(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('-')?;
    let unit = rest.chars().last()?;
    let n: i64 = rest[..rest.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => None,
    }
}

/// RFC 3339 to the minute, with its offset: `2024-05-01T10:00Z`,
/// `2024-05-01T10:00+02:00` (a space may stand for the `T`).
fn rfc3339_minutes(s: &str) -> Option<DateTime<Utc>> {
    let zoned = match s.strip_suffix(['Z', 'z']) {
        Some(head) => format!("{head}+00:00"),
        None => s.to_string(),
    };
    ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z"]
        .iter()
        .find_map(|fmt| DateTime::parse_from_str(&zoned, fmt).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A whole day in `tz`: its first moment as a start, its last as an end.
fn day<Tz: TimeZone>(d: NaiveDate, bound: Bound, tz: &Tz, text: &str) -> Result<DateTime<Utc>> {
    let Some(start) = d.and_hms_opt(0, 0, 0) else {
        bail!("cannot read {text:?} as a time; {ACCEPTED_FORMS}");
    };
    local(start, bound, Duration::days(1), tz, text)
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
    end_of(start.with_timezone(&Utc), bound, span).ok_or_else(|| {
        Error::new(format!(
            "{text:?} is outside the times this program handles"
        ))
    })
}

/// A bound that covers `span` from `t`: `t` itself as a start, the last
/// nanosecond of the span as an end; `None` past the end of time.
fn end_of(t: DateTime<Utc>, bound: Bound, span: Duration) -> Option<DateTime<Utc>> {
    match bound {
        Bound::Start => Some(t),
        Bound::End => t
            .checked_add_signed(span)?
            .checked_sub_signed(Duration::nanoseconds(1)),
    }
}

/// Parse a `<start> <end>` pair and check that start <= end.
pub fn parse_range<Tz: TimeZone>(
    start: &str,
    end: &str,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let a = parse_time(start, Bound::Start, tz, now)?;
    let b = parse_time(end, Bound::End, tz, now)?;
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

    /// 2024-05-02 08:30:00 at UTC+2.
    fn now() -> DateTime<Utc> {
        "2024-05-02T06:30:00Z".parse().unwrap()
    }

    fn start(s: &str) -> String {
        parse_time(s, Bound::Start, &tz(), now())
            .unwrap()
            .to_rfc3339()
    }

    fn end(s: &str) -> String {
        parse_time(s, Bound::End, &tz(), now())
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn times_at_the_end_of_chrono_s_range_are_errors_not_panics() {
        for text in [
            "+262143-12-31",
            "+262143-12-31T23:59Z",
            "+262143-12-31 23:59",
            "+262143-12-31T23:59:59",
            "-9999999999999w",
            "@9223372036854775807",
        ] {
            for bound in [Bound::Start, Bound::End] {
                // Either a time or a clear error; never a panic.
                if let Err(e) = parse_time(text, bound, &tz(), now()) {
                    assert!(!e.message().is_empty());
                }
            }
        }
        assert!(parse_time("+262143-12-31", Bound::End, &tz(), now()).is_err());
    }

    #[test]
    fn every_form_parses() {
        let t = start;
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
    fn rfc3339_without_seconds_parses() {
        assert_eq!(start("2024-05-01T10:00Z"), "2024-05-01T10:00:00+00:00");
        assert_eq!(start("2024-05-01T10:00+02:00"), "2024-05-01T08:00:00+00:00");
        assert_eq!(start("2024-05-01 10:00z"), "2024-05-01T10:00:00+00:00");
        assert_eq!(
            end("2024-05-01T10:00Z"),
            "2024-05-01T10:00:59.999999999+00:00"
        );
    }

    #[test]
    fn words_and_times_before_now_parse() {
        assert_eq!(start("now"), "2024-05-02T06:30:00+00:00");
        assert_eq!(end("NOW"), "2024-05-02T06:30:00+00:00");
        // Days are local (UTC+2): today began at 2024-05-01T22:00Z.
        assert_eq!(start("today"), "2024-05-01T22:00:00+00:00");
        assert_eq!(end("today"), "2024-05-02T21:59:59.999999999+00:00");
        assert_eq!(start("yesterday"), "2024-04-30T22:00:00+00:00");
        assert_eq!(end("yesterday"), "2024-05-01T21:59:59.999999999+00:00");
        assert_eq!(start("-30m"), "2024-05-02T06:00:00+00:00");
        assert_eq!(start("-2h"), "2024-05-02T04:30:00+00:00");
        assert_eq!(end("-3d"), "2024-04-29T06:30:00+00:00");
        assert_eq!(start("-1w"), "2024-04-25T06:30:00+00:00");
        assert_eq!(start("-90s"), "2024-05-02T06:28:30+00:00");
        assert!(parse_range("yesterday", "today", &tz(), now()).is_ok());
        assert!(parse_range("-2h", "now", &tz(), now()).is_ok());
    }

    #[test]
    fn unix_seconds_plain_or_marked() {
        assert_eq!(start("@1714564800"), "2024-05-01T12:00:00+00:00");
        assert_eq!(start("@20240501"), "1970-08-23T06:21:41+00:00");
        assert_eq!(start("-100"), "1969-12-31T23:58:20+00:00");
        assert_eq!(end("0"), "1970-01-01T00:00:00.999999999+00:00");
        // Eight digits that are no date stay seconds.
        assert_eq!(start("99999999"), "1973-03-03T09:46:39+00:00");
    }

    #[test]
    fn a_number_that_reads_as_a_date_is_refused() {
        let e = parse_time("20240501", Bound::Start, &tz(), now()).unwrap_err();
        assert_eq!(
            e.message(),
            "20240501 is ambiguous: write 2024-05-01 for a date, or @20240501 for unix seconds"
        );
    }

    #[test]
    fn end_bounds_cover_what_was_written() {
        assert_eq!(end("2024-05-01"), "2024-05-01T21:59:59.999999999+00:00");
        assert_eq!(
            end("2024-05-01 12:30"),
            "2024-05-01T10:30:59.999999999+00:00"
        );
    }

    #[test]
    fn bad_input_names_accepted_forms() {
        let z = tz();
        for bad in [
            "tomorrow",
            "2024-13-01",
            "2024-05-01 25:00",
            "",
            "12:00",
            "@",
            "@x",
            "-2y",
            "-h",
            "2h",
        ] {
            let e = parse_time(bad, Bound::Start, &z, now()).unwrap_err();
            assert!(e.message().contains("RFC 3339"), "{bad}: {e}");
            assert!(e.message().contains("yesterday"), "{bad}: {e}");
        }
        let e = parse_range("2024-05-02", "2024-05-01", &z, now()).unwrap_err();
        assert!(e.message().contains("after"), "{e}");
        assert!(parse_range("2024-05-01", "2024-05-01", &z, now()).is_ok());
    }
}
