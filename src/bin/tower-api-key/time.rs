//! Times and durations as people type and read them: RFC 3339 in UTC (`2026-11-29T05:21:00Z`)
//! and short durations (`30d`, `24h`, `15m`, `90s`). Small enough not to need a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_MINUTE: u64 = 60;
const SECS_PER_HOUR: u64 = 60 * SECS_PER_MINUTE;
const SECS_PER_DAY: u64 = 24 * SECS_PER_HOUR;

/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const DAYS_FROM_MARCH_0000_TO_EPOCH: i64 = 719_468;
/// Days in one 400-year cycle of the Gregorian calendar.
const DAYS_PER_ERA: i64 = 146_097;

/// The latest time the SQL stores keep as it is: 9999-12-31T23:59:59Z.
pub(crate) fn latest_storable() -> SystemTime {
    let secs = days_from_civil(9999, 12, 31) * 86_400 + 86_399;
    // Positive and far below `u64::MAX`, so the conversion and the addition cannot fail.
    UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
}

/// `at` in UTC, to the second (cut, not rounded): `2026-11-29T05:21:00Z`.
pub(crate) fn format_utc(at: SystemTime) -> String {
    let secs: i64 = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Towards the past, like times after the epoch: 0.5 s before is second -1.
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let partial = i64::from(before.subsec_nanos() != 0);
            whole.saturating_add(partial).saturating_neg()
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
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
    let bytes = text.as_bytes();
    // `YYYY-MM-DDTHH:MM:SS`, then an optional fraction, then `Z` or `±HH:MM`.
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(invalid());
    }
    let year = digits(&bytes[0..4]).ok_or_else(invalid)?;
    let month = digits(&bytes[5..7]).ok_or_else(invalid)?;
    let day = digits(&bytes[8..10]).ok_or_else(invalid)?;
    let hour = digits(&bytes[11..13]).ok_or_else(invalid)?;
    let minute = digits(&bytes[14..16]).ok_or_else(invalid)?;
    // 60 is a leap second; it is read as the first second of the next minute.
    let second = digits(&bytes[17..19]).ok_or_else(invalid)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(invalid());
    }

    let mut rest = &bytes[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return Err(invalid());
        }
        // Nanoseconds are the finest a `SystemTime` keeps; further digits are cut.
        for (i, &digit) in fraction[..len].iter().take(9).enumerate() {
            nanos += u32::from(digit - b'0') * 10_u32.pow(8 - i as u32);
        }
        rest = &fraction[len..];
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2]).ok_or_else(invalid)?;
            let minutes = digits(&[*m1, *m2]).ok_or_else(invalid)?;
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return Err(invalid()),
    };

    let local = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second);
    let utc = local - offset_secs;
    let whole = Duration::from_secs(utc.unsigned_abs());
    let at = if utc >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    at.and_then(|at| at.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(invalid)
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
    let number = &text[..text.len() - unit.len_utf8()];
    let per_unit = match unit {
        's' => 1,
        'm' => SECS_PER_MINUTE,
        'h' => SECS_PER_HOUR,
        'd' => SECS_PER_DAY,
        _ => return Err(invalid("the unit is missing or unknown")),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("the number is missing or not a whole number"));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(per_unit))
        .map(Duration::from_secs)
        .ok_or_else(|| invalid("it is too long"))
}

/// The value of two to four ASCII digits.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0_u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}

fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar.
///
/// Counts in years that start on 1 March, so that the leap day ends the year, and in eras of
/// 400 years, which all have the same number of days.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    // Months from March: March is 0, February is 11. Their lengths repeat 31 30 31 30 31,
    // which `(153 * m + 2) / 5` counts.
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_FROM_MARCH_0000_TO_EPOCH
}

/// The date `days` days after 1970-01-01 (before it, if negative): the inverse of
/// [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + DAYS_FROM_MARCH_0000_TO_EPOCH;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days - era * DAYS_PER_ERA;
    // The leap days of the era so far are taken out before dividing by 365.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // `day` is 1 to 31 and `month` 1 to 12 by construction.
    (year, month as u32, day as u32)
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

    #[test]
    fn every_day_of_five_centuries_goes_round_trip() {
        let first = days_from_civil(1900, 1, 1);
        let last = days_from_civil(2400, 12, 31);
        let mut expected = (1900, 1, 1);
        for days in first..=last {
            let date = civil_from_days(days);
            assert_eq!(date, expected, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days);
            let (year, month, day) = expected;
            expected = if day < days_in_month(year as u32, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
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
        // A leap second is the first second of the next minute.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
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
            "+026-11-29T05:21:00Z",
            "2026-11-29T05:21:00Z ",
            "2026/11/29T05:21:00Z",
            "yesterday",
            "2026-11-29T05:21:00\u{e9}",
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
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in [
            "", "30", "d", "30x", "30D", "1.5h", "-1h", "+1h", " 1h", "1h ", "1h30m", "1 h", "h1",
            "30é", "ten days",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("such as 90s, 15m, 24h or 30d"), "{err}");
        }
        let err = parse_duration("99999999999999999999d").unwrap_err();
        assert!(err.contains("too long"), "{err}");
        let err = parse_duration(&format!("{}d", u64::MAX / 86_400 + 1)).unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }
}
