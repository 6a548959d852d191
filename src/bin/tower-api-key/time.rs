//! Times and durations as people type and read them: RFC 3339 (`2026-11-29T05:21:00Z`, or with
//! an offset such as `2026-11-29T00:21:00-05:00`) and short durations (`30d`, `24h`, `15m`,
//! `90s`).
//!
//! [jiff] reads and writes them and does all the calendar arithmetic. What is left here is the
//! tool's own syntax, narrower than jiff's (jiff also reads `2026-11-29T05:21Z`, `+0100`,
//! `[Europe/Paris]`, `1h30m`, `1.5h`, `1 hour` and more, which the tool refuses), and the step
//! between `SystemTime` and jiff's civil time in UTC.
//!
//! Times go through jiff's civil `DateTime` in UTC rather than its `Timestamp`: a `Timestamp`
//! ends at 9999-12-30T22:00:00Z, 26 hours before the last second the stores keep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::DateTime;
use jiff::fmt::{strtime, temporal::DateTimeParser};
use jiff::{SignedDuration, Span, SpanRelativeTo};

/// `UNIX_EPOCH` as a civil time in UTC.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// The latest time the SQL stores keep as it is, to the second.
const LATEST_STORABLE: DateTime = DateTime::constant(9999, 12, 31, 23, 59, 59, 0);

/// How the tool prints a time: UTC, to the second.
const UTC_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// An RFC 3339 time up to its seconds, byte by byte: `0` is a digit, `T` the separator between
/// date and time (`T`, `t` or a space).
const DATE_AND_TIME: &[u8; 19] = b"0000-00-00T00:00:00";

/// The latest time the SQL stores keep as it is: 9999-12-31T23:59:59Z.
pub(crate) fn latest_storable() -> SystemTime {
    // 253,402,300,799 s after the epoch: within `SystemTime` on every platform Rust supports.
    UNIX_EPOCH + LATEST_STORABLE.duration_since(EPOCH).unsigned_abs()
}

/// `at` in UTC, to the second (cut, not rounded): `2026-11-29T05:21:00Z`.
pub(crate) fn format_utc(at: SystemTime) -> String {
    // `%S` writes whole seconds: the fraction is cut, towards the past before 1970 too.
    let formatted = SignedDuration::system_until(UNIX_EPOCH, at)
        .and_then(|since_epoch| EPOCH.checked_add(since_epoch))
        .and_then(|utc| strtime::format(UTC_FORMAT, utc));
    // No store keeps such a time; it can only come from a clock gone wrong.
    formatted.unwrap_or_else(|_| {
        if at > UNIX_EPOCH {
            "after 9999-12-31T23:59:59Z".to_owned()
        } else {
            "before -9999-01-01T00:00:00Z".to_owned()
        }
    })
}

/// Parses an RFC 3339 time such as `2026-12-31T23:59:59Z` or `2026-12-31T18:00:00-05:00`
/// (fractions of a second allowed).
pub(crate) fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let invalid = || {
        format!(
            "invalid time {text:?}: expected RFC 3339 such as 2026-12-31T23:59:59Z or \
             2026-12-31T18:00:00-05:00"
        )
    };
    let parts = Rfc3339::split(text).ok_or_else(invalid)?;
    // Nanoseconds are the finest jiff and `SystemTime` keep; further digits are cut.
    let fraction = parts.fraction.get(..10).unwrap_or(parts.fraction);
    let for_jiff = format!("{}{fraction}{}", parts.date_and_time, parts.offset);
    let pieces = DateTimeParser::new()
        .parse_pieces(&for_jiff)
        .map_err(|_| invalid())?;
    let (Some(time), Some(offset)) = (pieces.time(), pieces.to_numeric_offset()) else {
        return Err(invalid());
    };
    let offset = SignedDuration::from(offset);
    // RFC 3339 offsets stay within a day; jiff reads up to 25:59.
    if offset.abs() >= SignedDuration::from_hours(24) {
        return Err(invalid());
    }
    // jiff reads the leap second 60 as 59; RFC 3339's 60 is the first second of the next minute.
    let leap_second = SignedDuration::from_secs(i64::from(parts.date_and_time.ends_with("60")));
    let since_epoch = pieces
        .date()
        .to_datetime(time)
        .duration_since(EPOCH)
        .checked_sub(offset)
        .and_then(|since_epoch| since_epoch.checked_add(leap_second))
        .ok_or_else(invalid)?;
    let magnitude = since_epoch.unsigned_abs();
    let at = if since_epoch.is_negative() {
        UNIX_EPOCH.checked_sub(magnitude)
    } else {
        UNIX_EPOCH.checked_add(magnitude)
    };
    at.ok_or_else(invalid)
}

/// An RFC 3339 time taken apart, before jiff reads its values.
struct Rfc3339<'a> {
    /// `2026-11-29T05:21:00`.
    date_and_time: &'a str,
    /// `.25`, or empty.
    fraction: &'a str,
    /// `Z`, `z`, or an offset such as `-05:00`.
    offset: &'a str,
}

impl<'a> Rfc3339<'a> {
    /// `text`'s parts if it is laid out as RFC 3339 says; `None` if not.
    fn split(text: &'a str) -> Option<Self> {
        let date_and_time = text.get(..DATE_AND_TIME.len())?;
        let laid_out = date_and_time
            .bytes()
            .zip(DATE_AND_TIME)
            .all(|(byte, expected)| match expected {
                b'0' => byte.is_ascii_digit(),
                b'T' => matches!(byte, b'T' | b't' | b' '),
                _ => byte == *expected,
            });
        let rest = &text[DATE_AND_TIME.len()..];
        let fraction_len = match rest.strip_prefix('.') {
            Some(digits) => match digits.bytes().take_while(u8::is_ascii_digit).count() {
                0 => return None,
                count => 1 + count,
            },
            None => 0,
        };
        let (fraction, offset) = rest.split_at(fraction_len);
        let offset_laid_out = match offset.as_bytes() {
            [b'Z' | b'z'] => true,
            [b'+' | b'-', h1, h2, b':', m1, m2] => {
                [h1, h2, m1, m2].into_iter().all(u8::is_ascii_digit)
            }
            _ => false,
        };
        (laid_out && offset_laid_out).then_some(Rfc3339 {
            date_and_time,
            fraction,
            offset,
        })
    }
}

/// Parses a duration of whole seconds, minutes, hours or days: `90s`, `15m`, `24h`, `30d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {text:?}: {why}; expected a whole number and a unit, such as \
             90s, 15m, 24h or 30d"
        )
    };
    let Some(unit) = text.chars().last() else {
        return Err(invalid("it is empty"));
    };
    if !matches!(unit, 's' | 'm' | 'h' | 'd') {
        return Err(invalid("the unit is missing or unknown"));
    }
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("the number is missing or not a whole number"));
    }
    // jiff's "friendly" format reads this form. A day is 24 hours here: keys expire after a
    // span of time, not at a time of day.
    text.parse::<Span>()
        .and_then(|span| span.to_duration(SpanRelativeTo::days_are_24_hours()))
        .ok()
        .and_then(|duration| Duration::try_from(duration).ok())
        .ok_or_else(|| {
            // jiff's limits (about 20,000 years of days, 2^63 seconds) are far past what a store
            // keeps.
            format!(
                "invalid duration {text:?}: it is too long: it would end after \
                 9999-12-31T23:59:59Z, the latest time a store keeps"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_utc_to_the_second() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(at(1_795_929_660)), "2026-11-29T05:21:00Z");
        // Cut, not rounded.
        assert_eq!(
            format_utc(at(1_795_929_660) + Duration::from_millis(999)),
            "2026-11-29T05:21:00Z"
        );
        // A leap day, the end of a leap year, and the 400-year rule.
        assert_eq!(format_utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(at(1_735_689_599)), "2024-12-31T23:59:59Z");
        assert_eq!(format_utc(at(4_107_542_400)), "2100-03-01T00:00:00Z");
        assert_eq!(format_utc(latest_storable()), "9999-12-31T23:59:59Z");
        // Beyond any calendar jiff keeps: said, not wrapped or clamped.
        assert_eq!(
            format_utc(latest_storable() + Duration::from_secs(1)),
            "after 9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn formats_times_before_the_epoch() {
        let before = |secs| UNIX_EPOCH - Duration::from_secs(secs);
        assert_eq!(format_utc(before(1)), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(format_utc(before(62_135_596_800)), "0001-01-01T00:00:00Z");
    }

    /// The number of days in a month, worked out here by the Gregorian rules so that the test
    /// does not check jiff against itself.
    fn days_in_month(year: i64, month: u32) -> u32 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_of_five_centuries_goes_round_trip() {
        // 1900-01-01T00:00:00Z, before the epoch; 1900 and 2100 are not leap years, 2000 is.
        let first: i64 = -2_208_988_800;
        let (mut year, mut month, mut day) = (1900, 1, 1);
        let mut secs = first;
        while year <= 2400 {
            let magnitude = Duration::from_secs(secs.unsigned_abs());
            let midnight = if secs < 0 {
                UNIX_EPOCH - magnitude
            } else {
                UNIX_EPOCH + magnitude
            };
            let text = format!("{year:04}-{month:02}-{day:02}T00:00:00Z");
            assert_eq!(format_utc(midnight), text, "{secs}");
            assert_eq!(parse_rfc3339(&text), Ok(midnight), "{text}");
            (year, month, day) = if day < days_in_month(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
            secs += 86_400;
        }
        assert_eq!(format_utc(at(secs.unsigned_abs())), "2401-01-01T00:00:00Z");
    }

    #[test]
    fn parses_rfc3339() {
        let expected = at(1_795_929_660);
        for text in [
            "2026-11-29T05:21:00Z",
            "2026-11-29t05:21:00z",
            "2026-11-29 05:21:00Z",
            "2026-11-29T06:21:00+01:00",
            "2026-11-29T00:21:00-05:00",
            "2026-11-29T05:21:00-00:00",
            "2026-11-30T05:20:00+23:59",
        ] {
            assert_eq!(parse_rfc3339(text), Ok(expected), "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-29T05:21:00.25Z"),
            Ok(expected + Duration::from_millis(250))
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T05:21:00.1234567891Z"),
            Ok(expected + Duration::from_nanos(123_456_789))
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(at(1_709_164_800)));
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Ok(UNIX_EPOCH - Duration::from_secs(1))
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Ok(UNIX_EPOCH - Duration::from_secs(62_135_596_800))
        );
        // A leap second is the first second of the next minute.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
        // The last second a store keeps, and times after it, which the caller refuses.
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(latest_storable()));
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59-01:00"),
            Ok(latest_storable() + Duration::from_secs(3600))
        );
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for text in [
            "",
            "2026-11-29",
            "2026-11-29T05:21:00",
            "2026-11-29T05:21Z",
            "2026-11-29T05:21:00+0100",
            "2026-11-29T05:21:00+01",
            "2026-11-29T05:21:00.Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T05:60:00Z",
            "2026-11-29T05:21:61Z",
            "2026-11-29T05:21:00+24:00",
            "2026-11-29T05:21:00-25:00",
            "2026-11-29T05:21:00+01:60",
            "+026-11-29T05:21:00Z",
            "2026-11-29T05:21:00Z ",
            "2026/11/29T05:21:00Z",
            "yesterday",
            "2026-11-29T05:21:00\u{e9}",
            // Forms jiff reads but RFC 3339 does not have.
            "2026-11-29T05Z",
            "20261129T052100Z",
            "2026-11-29T05:21:00,25Z",
            "2026-11-29T05:21:00Z[UTC]",
            "2026-11-29T05:21:00+01:00[Europe/Paris]",
            "+002026-11-29T05:21:00Z",
            "2026-11-29T05:21:00+01:00:00",
        ] {
            let err = parse_rfc3339(text).expect_err(text);
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007m"), Ok(Duration::from_secs(7 * 60)));
        // Far enough for any expiry a store keeps.
        assert_eq!(
            parse_duration("3000000d"),
            Ok(Duration::from_secs(3_000_000 * 86_400))
        );
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in [
            "", "30", "d", "30x", "30D", "1.5h", "-1h", "+1h", " 1h", "1h ", "1h30m", "1 h", "h1",
            "30é", "ten days", // Forms jiff reads that the tool does not take:
            "1 hour", "1hr", "2 days", "P1D", "PT1H", "1d ago", "1_000s",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("such as 90s, 15m, 24h or 30d"), "{err}");
        }
        for text in [
            "99999999999999999999d".to_owned(),
            format!("{}d", u64::MAX / 86_400 + 1),
            // Past jiff's limits: about 20,000 years of days, 2^63 seconds.
            "99999999d".to_owned(),
            "9223372036854775808s".to_owned(),
        ] {
            let err = parse_duration(&text).unwrap_err();
            assert!(err.contains("too long"), "{err}");
            assert!(err.contains("9999-12-31T23:59:59Z"), "{err}");
        }
    }
}
