//! Cron schedules of triggered jobs: parsing (5 or 6 fields, `@` macros, a time zone)
//! and the next fire time, as pure functions over `DateTime<Utc>`. Walking a schedule
//! over the wall clock (the last fire, late wakes, missed fires after downtime) is
//! [`cursor`]'s job; the triggered job task acts on what the cursor says.
//!
//! Fields are `sec min hour day month weekday`; with 5 fields the seconds are 0.
//! Weekdays 0 and 7 are both Sunday (POSIX, and Kudu's NCRONTAB). When both the day
//! and the weekday field are restricted, a day matching either fires (POSIX); croner's
//! `+` prefix on the weekday field (`0 0 9 1-7 * +MON`) asks for both instead.
//!
//! Daylight saving time, as croner resolves local times in the schedule's zone:
//! - a fixed local time (single second, minute and hour, e.g. `0 30 2 * * *`) that a
//!   spring-forward skips fires once, at the first real instant after the gap;
//! - a fixed local time repeated by a fall-back fires once, at its first occurrence;
//! - interval and wildcard patterns (`0 */15 * * * *`, `0 0 * * * *`) fire on every
//!   real occurrence: none in the skipped hour, both in the repeated one.
//!
//! So no fire is lost or doubled beyond what the zone change itself forces. The tests
//! at the bottom prove this on real zone data for a northern and a southern zone.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

pub mod cursor;

pub use cursor::{CATCH_UP, Clock, Cursor, MAX_SLEEP, ManualClock, Poll, SystemClock};

/// A parsed schedule, read in one time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

/// Two schedules are equal when written the same and read in the same zone.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.tz == other.tz
    }
}

impl Eq for Schedule {}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error(
        "schedule `{expr}` has {count} field(s): write 6 fields `sec min hour day month weekday` \
         (e.g. `0 */5 * * * *`), 5 fields `min hour day month weekday`, or a macro such as `@daily`"
    )]
    WrongFieldCount { expr: String, count: usize },
    #[error("schedule `{expr}` is not valid: {reason}")]
    Invalid { expr: String, reason: String },
    #[error(
        "timezone `{name}` is not a known IANA time zone name: use a name such as `UTC`, \
         `Europe/Lisbon` or `America/New_York`"
    )]
    UnknownTimezone { name: String },
}

const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day", "1-31, L or W"),
    ("month", "1-12 or JAN-DEC"),
    ("weekday", "0-7 or SUN-SAT, 0 and 7 both Sunday"),
];

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

fn parser() -> CronParser {
    // Our own field count check runs first; this keeps croner from ever taking a
    // 7th field as a year.
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl Schedule {
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: String| ScheduleError::Invalid {
            expr: expr.to_string(),
            reason,
        };
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(invalid(
                "it is empty: write a cron expression such as `0 */5 * * * *` or a macro such as `@daily`"
                    .to_string(),
            ));
        }
        let fields: Vec<&str> = if trimmed.starts_with('@') {
            let (_, expansion) = MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
                .ok_or_else(|| {
                    invalid(format!(
                        "unknown macro `{trimmed}`: use one of {}",
                        MACROS.map(|(name, _)| name).join(" ")
                    ))
                })?;
            expansion.split_whitespace().collect()
        } else {
            let mut fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.len() {
                6 => {}
                5 => fields.insert(0, "0"),
                count => {
                    return Err(ScheduleError::WrongFieldCount {
                        expr: expr.to_string(),
                        count,
                    });
                }
            }
            fields
        };
        let normalized = fields.join(" ");
        let cron = parser()
            .parse(&normalized)
            .map_err(|_| invalid(explain(&fields)))?;
        let schedule = Schedule {
            expr: trimmed.to_string(),
            cron,
            tz,
        };
        // A pattern without a year repeats within 28 years, so one that finds nothing
        // after a fixed instant names a date that does not exist (30 February).
        let reference = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).single();
        if reference.and_then(|t| schedule.next_after(t)).is_none() {
            return Err(invalid(
                "it never matches a real date (such as 30 February): fix the day and month fields"
                    .to_string(),
            ));
        }
        Ok(schedule)
    }

    /// First occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        let next = next.with_timezone(&Utc);
        // croner promises this; a scheduler that got `t` back would spin.
        (next > t).then_some(next)
    }

    /// Latest occurrence at or before `t` (what a scheduler that woke late owes).
    pub fn prev_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        let prev = prev.with_timezone(&Utc);
        (prev <= t).then_some(prev)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// croner's English description, e.g. for `jobhost check` and the dashboard.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// croner's errors do not say which field is wrong, and say what they do say in its
/// own terms ("Component error: Number out of bounds."): find the first field that
/// fails on its own (all others `*`), name it with its allowed values, and say in
/// our words what is wrong with it.
fn explain(fields: &[&str]) -> String {
    let culprit = (0..fields.len()).find(|&i| {
        let mut probe = ["*"; 6];
        probe[i] = fields[i];
        parser().parse(&probe.join(" ")).is_err()
    });
    match culprit.and_then(|i| FIELDS.get(i).map(|field| (i, fields[i], field))) {
        Some((i, value, (name, range))) => format!(
            "the {name} field `{value}` is wrong: {}; allowed: {range}, \
             with `*`, `,`, `-` and `*/N` or `A-B/N` steps (N >= 1)",
            field_problem(i, value)
        ),
        None => "the fields are each valid but not together; fields are \
                 `sec min hour day month weekday`: check each one"
            .to_string(),
    }
}

/// Numeric bounds of each field, in [`FIELDS`] order.
const BOUNDS: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// What is wrong with field number `index` written as `value`, in a few words. The
/// first problem found is named; croner has already said there is one.
fn field_problem(index: usize, value: &str) -> String {
    let (min, max) = BOUNDS[index];
    let names: &[&str] = match index {
        4 => &MONTHS,
        5 => &WEEKDAYS,
        _ => &[],
    };
    let value = if index == 5 {
        value.strip_prefix('+').unwrap_or(value)
    } else {
        value
    };
    for part in value.split(',') {
        if part.is_empty() {
            return "it has an empty item (two commas, or a comma at an end)".to_string();
        }
        let (base, step) = match part.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n >= 1 => {}
                Ok(_) => return format!("the step `/{step}` must be 1 or more"),
                Err(_) => return format!("the step `/{step}` is not a whole number"),
            }
        }
        if base == "*" || base == "?" {
            continue;
        }
        let ends: Vec<&str> = base.split('-').collect();
        if ends.len() > 2 || ends.iter().any(|e| e.is_empty()) {
            return format!("`{base}` is not a value or a range A-B");
        }
        let mut numbers = Vec::new();
        for end in &ends {
            if let Ok(n) = end.parse::<u32>() {
                if n < min || n > max {
                    return format!("{n} is outside {min}-{max}");
                }
                numbers.push(n);
            } else if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(end)) {
                numbers.push(pos as u32 + u32::from(index == 4));
            } else if !special(index, end) {
                return match index {
                    4 => format!("`{end}` is not a month number or a name such as JAN"),
                    5 => format!("`{end}` is not a weekday number or a name such as MON"),
                    _ => format!("`{end}` is not a number"),
                };
            }
        }
        if let [a, b] = numbers[..]
            && a > b
        {
            return format!("the range {base} runs backwards: write the smaller value first");
        }
    }
    "it is not a value this field accepts".to_string()
}

/// The letters croner accepts in a day (`L`, `15W`, `LW`) or weekday (`5L`, `5#2`)
/// field, roughly: enough to not call them "not a number".
fn special(index: usize, token: &str) -> bool {
    let t = token.to_ascii_uppercase();
    match index {
        3 => {
            t == "L"
                || t == "LW"
                || t.strip_suffix('W')
                    .is_some_and(|d| d.parse::<u32>().is_ok())
        }
        5 => {
            t.strip_suffix('L')
                .is_some_and(|d| d.parse::<u32>().is_ok() || WEEKDAYS.contains(&d))
                || t.split_once('#').is_some()
        }
        _ => false,
    }
}

pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::UnknownTimezone {
        name: name.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{Datelike, Duration, NaiveDate, Timelike};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: Tz, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let s = Schedule::parse(expr, tz).unwrap();
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t);
        }
        out
    }

    /// Fires of `expr` from local midnight of `day` to the next local midnight.
    fn fires_on_local_day(expr: &str, tz: Tz, day: NaiveDate) -> Vec<DateTime<Tz>> {
        let s = Schedule::parse(expr, tz).unwrap();
        let start = tz
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        // Start one second early so a fire at midnight itself counts.
        let mut t = start - Duration::seconds(1);
        loop {
            t = s.next_after(t).unwrap();
            let local = t.with_timezone(&tz);
            if local.date_naive() != day {
                return out;
            }
            out.push(local);
        }
    }

    /// The zone's offset change on `day`, in seconds (positive = clocks go forward).
    fn offset_change(tz: Tz, day: NaiveDate) -> i64 {
        use chrono::Offset;
        let at = |d: NaiveDate| {
            let t = tz
                .from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap())
                .single()
                .unwrap();
            i64::from(t.offset().fix().local_minus_utc())
        };
        at(day) - at(day.pred_opt().unwrap())
    }

    #[test]
    fn field_counts() {
        let cases: &[(&str, Result<(), usize>)] = &[
            ("0 0 * * * *", Ok(())),
            ("0 * * * *", Ok(())),
            ("* * * *", Err(4)),
            ("0 0 0 * * * 2030", Err(7)),
            ("0", Err(1)),
        ];
        for (expr, want) in cases {
            let got = Schedule::parse(expr, Tz::UTC)
                .map(|_| ())
                .map_err(|e| match e {
                    ScheduleError::WrongFieldCount { count, .. } => count,
                    other => panic!("{expr}: {other}"),
                });
            assert_eq!(&got, want, "{expr}");
        }
    }

    #[test]
    fn invalid_expressions_name_the_field() {
        let cases = [
            ("*/0 * * * * *", "second field `*/0`"),
            ("61 * * * * *", "second field `61`"),
            ("0 60 * * * *", "minute field `60`"),
            ("0 0 24 * * *", "hour field `24`"),
            ("0 0 0 32 * *", "day field `32`"),
            ("0 0 0 * 13 *", "month field `13`"),
            ("0 0 0 * * 8", "weekday field `8`"),
            ("0 0 0 * * MONDAY", "weekday field `MONDAY`"),
            ("*/0 * * * *", "minute field `*/0`"),
            ("@every", "unknown macro `@every`"),
            ("", "it is empty"),
            ("0 0 0 30 2 *", "never matches"),
        ];
        for (expr, want) in cases {
            let err = Schedule::parse(expr, Tz::UTC).unwrap_err();
            assert!(
                matches!(err, ScheduleError::Invalid { .. }),
                "{expr}: {err}"
            );
            assert!(err.to_string().contains(want), "{expr}: {err}");
        }
    }

    /// croner's own words ("Component error: Number out of bounds.") never reach a
    /// user: each error says which field, what is wrong with it, and what it allows.
    #[test]
    fn errors_are_in_our_words_not_cronerss() {
        let cases = [
            (
                "0 70 * * * *",
                "minute field `70` is wrong: 70 is outside 0-59",
            ),
            (
                "61 * * * * *",
                "second field `61` is wrong: 61 is outside 0-59",
            ),
            (
                "0 0 24 * * *",
                "hour field `24` is wrong: 24 is outside 0-23",
            ),
            ("0 0 0 0 * *", "day field `0` is wrong: 0 is outside 1-31"),
            (
                "0 0 0 * 13 *",
                "month field `13` is wrong: 13 is outside 1-12",
            ),
            (
                "0 0 0 * * 8",
                "weekday field `8` is wrong: 8 is outside 0-7",
            ),
            (
                "0 0 0 * * 1-9",
                "weekday field `1-9` is wrong: 9 is outside 0-7",
            ),
            (
                "*/0 * * * * *",
                "second field `*/0` is wrong: the step `/0` must be 1 or more",
            ),
            ("0 */x * * * *", "the step `/x` is not a whole number"),
            (
                "0 0 0 * * MONDAY",
                "`MONDAY` is not a weekday number or a name such as MON",
            ),
            (
                "0 0 0 * JANUARY *",
                "`JANUARY` is not a month number or a name such as JAN",
            ),
            (
                "0 a * * * *",
                "minute field `a` is wrong: `a` is not a number",
            ),
            ("0 1-2-3 * * * *", "`1-2-3` is not a value or a range A-B"),
        ];
        for (expr, want) in cases {
            let Err(err) = Schedule::parse(expr, Tz::UTC) else {
                panic!("{expr} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains(want), "{expr}: {err}");
            for theirs in [
                "Component error",
                "out of bounds",
                "Invalid pattern",
                "illegal",
            ] {
                assert!(!err.contains(theirs), "{expr}: croner's words in {err}");
            }
        }
    }

    #[test]
    fn five_and_six_fields_are_equivalent() {
        let from = utc("2026-03-01T10:17:23Z");
        for (five, six) in [
            ("*/5 * * * *", "0 */5 * * * *"),
            ("30 9 * * 1-5", "0 30 9 * * 1-5"),
            ("0 0 1 * *", "0 0 0 1 * *"),
        ] {
            assert_eq!(
                fires(five, Tz::UTC, from, 20),
                fires(six, Tz::UTC, from, 20),
                "{five}"
            );
        }
    }

    #[test]
    fn macros() {
        let from = utc("2026-05-13T10:17:23Z"); // a Wednesday
        let cases = [
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@monthly", "2026-06-01T00:00:00Z"),
            ("@weekly", "2026-05-17T00:00:00Z"),
            ("@daily", "2026-05-14T00:00:00Z"),
            ("@midnight", "2026-05-14T00:00:00Z"),
            ("@hourly", "2026-05-13T11:00:00Z"),
            ("@DAILY", "2026-05-14T00:00:00Z"),
        ];
        for (expr, want) in cases {
            assert_eq!(fires(expr, Tz::UTC, from, 1)[0], utc(want), "{expr}");
        }
    }

    #[test]
    fn daily_in_a_zone_fires_at_local_midnight() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let got = fires("@daily", tz, utc("2026-01-10T12:00:00Z"), 2);
        // EST is UTC-5.
        assert_eq!(
            got,
            vec![utc("2026-01-11T05:00:00Z"), utc("2026-01-12T05:00:00Z")]
        );
        let s = Schedule::parse("@daily", tz).unwrap();
        assert_eq!(s.timezone(), tz);
        assert_eq!(s.expr(), "@daily");
    }

    #[test]
    fn weekday_0_and_7_are_sunday() {
        let from = utc("2026-05-13T10:00:00Z"); // a Wednesday
        for expr in [
            "0 0 12 * * 0",
            "0 0 12 * * 7",
            "0 0 12 * * SUN",
            "0 12 * * 7",
        ] {
            let got = fires(expr, Tz::UTC, from, 3);
            assert!(
                got.iter().all(|t| t.weekday() == chrono::Weekday::Sun),
                "{expr}: {got:?}"
            );
            assert_eq!(got[0], utc("2026-05-17T12:00:00Z"), "{expr}");
        }
        // And 1 is Monday, not Sunday as in the `cron` crate.
        assert_eq!(
            fires("0 0 12 * * 1", Tz::UTC, from, 1)[0].weekday(),
            chrono::Weekday::Mon
        );
    }

    #[test]
    fn day_and_weekday_are_or_unless_plus() {
        let from = utc("2026-05-13T10:00:00Z"); // Wednesday 13 May
        // POSIX: the 1st-7th or any Monday.
        assert_eq!(
            fires("0 0 9 1-7 * MON", Tz::UTC, from, 1)[0],
            utc("2026-05-18T09:00:00Z")
        );
        // `+`: a Monday within the 1st-7th, i.e. the first Monday.
        assert_eq!(
            fires("0 0 9 1-7 * +MON", Tz::UTC, from, 1)[0],
            utc("2026-06-01T09:00:00Z")
        );
    }

    #[test]
    fn every_second() {
        let from = utc("2026-05-13T10:00:00.500Z");
        let got = fires("* * * * * *", Tz::UTC, from, 3);
        assert_eq!(
            got,
            vec![
                utc("2026-05-13T10:00:01Z"),
                utc("2026-05-13T10:00:02Z"),
                utc("2026-05-13T10:00:03Z")
            ]
        );
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = Schedule::parse("0 0 10 * * *", Tz::UTC).unwrap();
        let t = utc("2026-05-13T10:00:00Z");
        assert_eq!(s.next_after(t), Some(utc("2026-05-14T10:00:00Z")));
        let just_before = utc("2026-05-13T09:59:59.999Z");
        assert_eq!(s.next_after(just_before), Some(t));
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
        assert_eq!(parse_timezone("Europe/Lisbon"), Ok(Tz::Europe__Lisbon));
        let err = parse_timezone("Mars/Olympus").unwrap_err();
        assert_eq!(
            err,
            ScheduleError::UnknownTimezone {
                name: "Mars/Olympus".to_string()
            }
        );
        assert!(err.to_string().contains("IANA"));
    }

    #[test]
    fn describe_uses_croner() {
        let s = Schedule::parse("0 30 9 * * 1-5", Tz::UTC).unwrap();
        assert!(!s.describe().is_empty());
    }

    // Lisbon (northern): 2026-03-29 01:00 WET -> 02:00 WEST skips 01:00-02:00 local;
    // 2026-10-25 02:00 WEST -> 01:00 WET repeats 01:00-02:00 local.
    // Sydney (southern): 2026-10-04 02:00 AEST -> 03:00 AEDT skips 02:00-03:00;
    // 2026-04-05 03:00 AEDT -> 02:00 AEST repeats 02:00-03:00.
    struct Zone {
        tz: Tz,
        spring: NaiveDate,
        fall: NaiveDate,
        /// A fixed time inside both the skipped and the repeated hour.
        fixed: &'static str,
        /// Where a fire of `fixed` lands on the spring-forward day: the first
        /// real instant after the gap, as UTC.
        spring_fire: &'static str,
        /// The first occurrence of `fixed` on the fall-back day, as UTC.
        fall_fire: &'static str,
    }

    fn zones() -> [Zone; 2] {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        [
            Zone {
                tz: Tz::Europe__Lisbon,
                spring: d(2026, 3, 29),
                fall: d(2026, 10, 25),
                fixed: "0 30 1 * * *",
                spring_fire: "2026-03-29T01:00:00Z", // 02:00 WEST
                fall_fire: "2026-10-25T00:30:00Z",   // 01:30 WEST, not 01:30 WET
            },
            Zone {
                tz: Tz::Australia__Sydney,
                spring: d(2026, 10, 4),
                fall: d(2026, 4, 5),
                fixed: "0 30 2 * * *",
                spring_fire: "2026-10-03T16:00:00Z", // 03:00 AEDT
                fall_fire: "2026-04-04T15:30:00Z",   // 02:30 AEDT, not 02:30 AEST
            },
        ]
    }

    #[test]
    fn zone_data_has_the_transitions_the_tests_assume() {
        for z in zones() {
            assert_eq!(offset_change(z.tz, z.spring), 3600, "{} spring", z.tz);
            assert_eq!(offset_change(z.tz, z.fall), -3600, "{} fall", z.tz);
        }
    }

    #[test]
    fn dst_fixed_time_in_spring_gap_fires_once_after_the_gap() {
        for z in zones() {
            let got = fires_on_local_day(z.fixed, z.tz, z.spring);
            assert_eq!(got.len(), 1, "{}: {got:?}", z.tz);
            assert_eq!(got[0].with_timezone(&Utc), utc(z.spring_fire), "{}", z.tz);
            // The days around it are untouched.
            for day in [z.spring.pred_opt().unwrap(), z.spring.succ_opt().unwrap()] {
                let got = fires_on_local_day(z.fixed, z.tz, day);
                assert_eq!(got.len(), 1, "{} {day}", z.tz);
                assert_eq!(got[0].time().minute(), 30, "{} {day}", z.tz);
            }
        }
    }

    #[test]
    fn dst_fixed_time_in_fall_overlap_fires_once_at_first_occurrence() {
        for z in zones() {
            let got = fires_on_local_day(z.fixed, z.tz, z.fall);
            assert_eq!(got.len(), 1, "{}: {got:?}", z.tz);
            assert_eq!(got[0].with_timezone(&Utc), utc(z.fall_fire), "{}", z.tz);
            // Asking from inside the repeated hour, after the first 01:30/02:30, must
            // not give its second occurrence.
            let s = Schedule::parse(z.fixed, z.tz).unwrap();
            let tomorrow = z.fall.succ_opt().unwrap();
            let next = s.next_after(utc(z.fall_fire)).unwrap();
            assert_eq!(next.with_timezone(&z.tz).date_naive(), tomorrow, "{}", z.tz);
            // Nor from the second pass of the hour, just before the repeated time.
            let between = utc(z.fall_fire) + Duration::minutes(45);
            let next = s.next_after(between).unwrap();
            assert_eq!(next.with_timezone(&z.tz).date_naive(), tomorrow, "{}", z.tz);
        }
    }

    #[test]
    fn dst_interval_fires_on_each_real_occurrence() {
        for z in zones() {
            // (schedule, fires on the spring day, fires on the fall day)
            for (expr, spring, fall) in [("0 0 * * * *", 23, 25), ("0 */15 * * * *", 92, 100)] {
                let fires = |day| fires_on_local_day(expr, z.tz, day).len();
                assert_eq!(
                    (fires(z.spring), fires(z.fall)),
                    (spring, fall),
                    "{expr} {}",
                    z.tz
                );
            }
        }
    }

    #[test]
    fn dst_hourly_for_a_year_is_increasing_without_duplicates() {
        for z in zones() {
            let s = Schedule::parse("0 0 * * * *", z.tz).unwrap();
            let start = utc("2026-01-01T00:00:00Z");
            let end = utc("2027-01-01T00:00:00Z");
            let mut t = start;
            let mut count = 0;
            loop {
                let next = s.next_after(t).unwrap();
                assert!(next > t, "{}: {next} after {t}", z.tz);
                // Every real hour boundary of a whole-hour-offset zone fires.
                assert_eq!(next - t, Duration::hours(1), "{}: gap after {t}", z.tz);
                if next >= end {
                    break;
                }
                count += 1;
                t = next;
            }
            assert_eq!(count, 365 * 24 - 1, "{}", z.tz);
        }
    }

    #[test]
    fn fixed_daily_for_a_year_fires_once_per_local_day() {
        for z in zones() {
            let s = Schedule::parse(z.fixed, z.tz).unwrap();
            let mut t = utc("2026-01-01T00:00:00Z");
            let mut days = Vec::new();
            while t < utc("2027-01-01T00:00:00Z") {
                t = s.next_after(t).unwrap();
                days.push(t.with_timezone(&z.tz).date_naive());
            }
            let mut dedup = days.clone();
            dedup.dedup();
            assert_eq!(days, dedup, "{}: a local day fired twice", z.tz);
            assert!(
                days.windows(2).all(|w| w[1] == w[0].succ_opt().unwrap()),
                "{}",
                z.tz
            );
        }
    }
}
