//! Dates as LiveStore encodes them: ISO-8601 text on the wire (`Schema.Date`), epoch milliseconds in SQLite
//! (`Schema.DateFromNumber`).
//!
//! Only the proleptic Gregorian calendar in UTC is needed, so the conversion is a few lines of arithmetic rather
//! than a date library. Parsing accepts what JavaScript's `Date.toISOString` writes plus `±HH:MM` offsets.

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.sssZ`, exactly like `Date.prototype.toISOString`.
pub fn format_iso_millis(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let ms_of_day = epoch_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second, millis) =
        (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
    } else {
        // JavaScript's expanded-year form.
        let sign = if year < 0 { '-' } else { '+' };
        format!(
            "{sign}{:06}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z",
            year.abs()
        )
    }
}

/// Parses an ISO-8601 date-time (or a bare date) into epoch milliseconds; `None` if it is not one.
pub fn parse_iso_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = parse_fixed(date_parts.next()?, 2)?;
    let day: u32 = parse_fixed(date_parts.next()?, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut epoch_ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let (clock, offset_minutes) = split_offset(time)?;
        let mut clock_parts = clock.splitn(3, ':');
        let hour: i64 = parse_fixed(clock_parts.next()?, 2)?;
        let minute: i64 = parse_fixed(clock_parts.next()?, 2)?;
        let (second, millis) = match clock_parts.next() {
            Some(seconds) => match seconds.split_once('.') {
                Some((whole, fraction)) => {
                    if fraction.is_empty() || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
                        return None;
                    }
                    let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
                    (parse_fixed::<i64>(whole, 2)?, padded.parse::<i64>().ok()?)
                }
                None => (parse_fixed::<i64>(seconds, 2)?, 0),
            },
            None => (0, 0),
        };
        if hour > 24 || minute > 59 || second > 59 {
            return None;
        }
        epoch_ms +=
            hour * 3_600_000 + minute * 60_000 + second * 1000 + millis - offset_minutes * 60_000;
    }
    Some(epoch_ms)
}

/// Serde adapter for an `i64` epoch-millisecond field encoded as an ISO string (LiveStore's `Schema.Date`).
///
/// Decoding also accepts a JSON number of milliseconds, which some clients send for dates.
pub mod iso_millis {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the ISO string.
    pub fn serialize<S: Serializer>(epoch_ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_iso_millis(*epoch_ms))
    }

    /// Reads an ISO string or a number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Encoded {
            Text(String),
            Millis(i64),
        }
        match Encoded::deserialize(deserializer)? {
            Encoded::Millis(epoch_ms) => Ok(epoch_ms),
            Encoded::Text(text) => super::parse_iso_millis(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid ISO-8601 date {text:?}"))),
        }
    }
}

fn parse_fixed<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
    if text.len() != width || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Splits `HH:MM:SS.sss` from a trailing `Z`, `+HH:MM` or `-HH:MM`; returns the offset east of UTC in minutes.
fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    if let Some(sign_idx) = time.rfind(['+', '-']) {
        let (clock, offset) = time.split_at(sign_idx);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':').unwrap_or((&offset[1..], "00"));
        let hours: i64 = parse_fixed(hours, 2)?;
        let minutes: i64 = parse_fixed(minutes, 2)?;
        return Some((clock, sign * (hours * 60 + minutes)));
    }
    // No designator: JavaScript reads date-times without an offset as local time; we have no zone, so UTC.
    Some((time, 0))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_javascript_to_iso_string() {
        assert_eq!(format_iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso_millis(1_795_833_621_361), "2026-11-28T02:40:21.361Z");
        assert_eq!(format_iso_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_iso_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(parse_iso_millis("2026-11-28T02:40:21.361Z"), Some(1_795_833_621_361));
        assert_eq!(parse_iso_millis("2026-11-28T03:40:21.361+01:00"), Some(1_795_833_621_361));
        assert_eq!(parse_iso_millis("1970-01-01"), Some(0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30T00:00:00Z",
            "2026-01-01T25:00:00Z",
            "2026-1-1",
        ] {
            assert_eq!(parse_iso_millis(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(epoch_ms in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_iso_millis(&format_iso_millis(epoch_ms)), Some(epoch_ms));
        }
    }
}
