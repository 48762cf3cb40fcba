//! `settings.job` (docs/settings.md), read in two stages: the text is made plain JSON
//! by [`jsonc`] (BOM and comments removed, positions kept) and parsed into a
//! `serde_json::Value`; then every key of the table in [`keys`] is validated into
//! `JobSettings`, collecting *every* problem at once so one edit can fix them all.
//! Unknown keys and keys meant for the other job type are warnings: the job still
//! runs.

pub mod jsonc;
pub mod keys;
pub mod queue;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::schedule::Schedule;
use crate::spec::JobType;
pub use crate::spec::problem::Problem;
use jsonc::{KeyPositions, key_positions, line_col, strip_comments};
use keys::{Applies, Fault, KEYS};

pub const FILE_NAME: &str = "settings.job";
/// Largest settings.job the host reads. A real one is a few hundred bytes; a larger
/// file is the job's error, never parsed nor kept (the API would echo it in every
/// listing).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Longest accepted duration: 10 years, far beyond any sane setting, and small
/// enough that adding it to any timestamp or doubling it cannot overflow.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 60 * 60;
pub const MIN_LOG_MAX_BYTES: u64 = 65_536;
pub const MAX_LOG_MAX_BYTES: u64 = 1 << 40;
pub const MAX_HISTORY_SIZE: u64 = 100_000;
pub const MAX_LOG_KEEP: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// A fire or trigger while a run is going is dropped (and logged).
    #[default]
    Skip,
    /// It is kept as one pending run.
    Queue,
}

impl Overlap {
    /// As written in `settings.job`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub stopping_wait_time: Duration,
    pub is_singleton: bool,
    /// Triggered jobs only; `None` on continuous jobs and when absent.
    pub schedule: Option<Schedule>,
    pub timezone: Tz,
    pub is_in_place: bool,
    pub restart_delay: Duration,
    pub restart_max_delay: Duration,
    /// `None` when 0 or absent.
    pub timeout: Option<Duration>,
    /// `None` when 0 or absent.
    pub idle_timeout: Option<Duration>,
    pub overlap: Overlap,
    pub history_size: u32,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub env: BTreeMap<String, String>,
    /// Triggered jobs only: the job's message queue, when it has one.
    pub queue: Option<queue::QueueSettings>,
}

/// The defaults of [`keys::KEYS`] (a unit test holds the two together).
impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            stopping_wait_time: Duration::from_secs(5),
            is_singleton: false,
            schedule: None,
            timezone: Tz::UTC,
            is_in_place: false,
            restart_delay: Duration::from_secs(1),
            restart_max_delay: Duration::from_secs(60),
            timeout: None,
            idle_timeout: None,
            overlap: Overlap::Skip,
            history_size: 50,
            log_max_bytes: 10_485_760,
            log_keep: 5,
            env: BTreeMap::new(),
            queue: None,
        }
    }
}

pub type Warning = Problem;

#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct SettingsError {
    pub problems: Vec<Problem>,
}

impl SettingsError {
    fn whole_file(file: &Path, message: impl Into<String>, fix: &str) -> Self {
        SettingsError {
            problems: vec![Problem::whole_file(file, message, fix)],
        }
    }

    fn at(file: &Path, (line, column): (usize, usize), message: String, fix: &str) -> Self {
        SettingsError {
            problems: vec![Problem::whole_file(file, message, fix).at(line, column)],
        }
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads `JOB_DIR/settings.job`; a missing file gives defaults; an unreadable or
/// oversized one is an error.
pub fn load(
    job_dir: &Path,
    job_type: JobType,
) -> Result<(JobSettings, Vec<Warning>), SettingsError> {
    load_with_raw(job_dir, job_type).0
}

/// [`load`], plus the file as written ([`raw_value`], `{}` when absent, invalid or
/// too large), from one read of the file.
pub fn load_with_raw(
    job_dir: &Path,
    job_type: JobType,
) -> (Result<(JobSettings, Vec<Warning>), SettingsError>, Value) {
    let file = job_dir.join(FILE_NAME);
    let empty = || Value::Object(Map::new());
    match read_file(&file) {
        Ok(Some(bytes)) => (
            parse(&bytes, &file, job_type),
            raw_value(&bytes).unwrap_or_else(empty),
        ),
        Ok(None) => (Ok((JobSettings::default(), Vec::new())), empty()),
        Err(e) => (Err(e), empty()),
    }
}

/// The bytes of a settings file, at most [`MAX_FILE_BYTES`] of them; `Ok(None)`
/// when there is no file.
pub fn read_file(file: &Path) -> Result<Option<Vec<u8>>, SettingsError> {
    use io::Read;
    let unreadable = |err: io::Error| {
        SettingsError::whole_file(
            file,
            format!("reading it failed: {err}"),
            "make it a readable file (chmod a+r) or remove it",
        )
    };
    let too_big = |size: String| {
        SettingsError::whole_file(
            file,
            format!("is {size} bytes; the limit is {MAX_FILE_BYTES}"),
            "shorten it",
        )
    };
    let meta = match fs::metadata(file) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(unreadable(err)),
    };
    // Opening a FIFO would wait for a writer; a folder cannot be read.
    if !meta.is_file() {
        return Err(SettingsError::whole_file(
            file,
            "reading it failed: it is not a regular file",
            "make it a file or remove it",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(meta.len().to_string()));
    }
    let f = fs::File::open(file).map_err(unreadable)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the stat and the read: never take more than the cap.
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(format!("more than {MAX_FILE_BYTES}")));
    }
    Ok(Some(bytes))
}

/// The file as a JSON value (BOM and comments removed), for showing it as written;
/// `None` when it is not valid JSON.
pub fn raw_value(text: &[u8]) -> Option<Value> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let json = strip_comments(std::str::from_utf8(text).ok()?).ok()?;
    if json.trim().is_empty() {
        return Some(Value::Object(Default::default()));
    }
    serde_json::from_str(&json).ok()
}

pub fn parse(
    text: &[u8],
    file: &Path,
    job_type: JobType,
) -> Result<(JobSettings, Vec<Warning>), SettingsError> {
    // Windows editors write a BOM; Kudu accepts it, so users' files have it.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|err| {
        SettingsError::at(
            file,
            line_col(text, err.valid_up_to()),
            "is not valid UTF-8".to_string(),
            "save the file as UTF-8",
        )
    })?;
    let json = strip_comments(text).map_err(|at| {
        SettingsError::at(
            file,
            at,
            "has a `/*` comment that is never closed".to_string(),
            "add `*/` where the comment ends",
        )
    })?;
    // An empty file (or one with only comments) is how people "reset" settings.
    if json.trim().is_empty() {
        return Ok((JobSettings::default(), Vec::new()));
    }
    let value: Value = serde_json::from_str(&json).map_err(|err| {
        let message = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        SettingsError::at(
            file,
            (err.line(), err.column()),
            format!("is not valid JSON: {message}"),
            "fix the syntax",
        )
    })?;
    let Value::Object(map) = value else {
        let start = json.len() - json.trim_start().len();
        return Err(SettingsError::at(
            file,
            line_col(json.as_bytes(), start),
            format!(
                "must be a JSON object such as {{\"schedule\": \"0 */5 * * * *\"}}, found {}",
                keys::kind_of(&value)
            ),
            "wrap the settings in { }",
        ));
    };
    let mut checker = Checker {
        file,
        positions: key_positions(&json),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let settings = checker.settings(&map, job_type);
    // serde_json's map order is not the file's: report in file order.
    let in_file_order =
        |p: &Problem| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(usize::MAX));
    checker.problems.sort_by_key(in_file_order);
    checker.warnings.sort_by_key(in_file_order);
    if checker.problems.is_empty() {
        Ok((settings, checker.warnings))
    } else {
        Err(SettingsError {
            problems: checker.problems,
        })
    }
}

struct Checker<'a> {
    file: &'a Path,
    positions: KeyPositions,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Checker<'_> {
    fn at(&self, key: &str, message: String, fix: String) -> Problem {
        // serde_json keeps the last of duplicate keys, so point at the last one.
        let pos = self.positions.get(key).and_then(|p| p.last());
        Problem {
            file: self.file.to_path_buf(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            key: Some(key.to_string()),
            message,
            fix,
        }
    }

    fn warn(&mut self, key: &str, message: String, fix: String) {
        let warning = self.at(key, message, fix);
        self.warnings.push(warning);
    }

    fn settings(&mut self, map: &Map<String, Value>, job_type: JobType) -> JobSettings {
        let mut s = JobSettings::default();
        let mut duplicates: Vec<(String, usize)> = self
            .positions
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .map(|(key, at)| (key.clone(), at.len()))
            .collect();
        duplicates.sort();
        for (key, count) in duplicates {
            self.warn(
                &key,
                format!("appears {count} times; the last one is used"),
                "remove the others".into(),
            );
        }
        for key in map.keys().filter(|k| keys::lookup(k).is_none()) {
            let fix = match keys::suggest(key) {
                Some(known) => format!("did you mean `{known}`?"),
                None => format!(
                    "check the spelling; known keys are {}",
                    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                ),
            };
            self.warn(key, "unknown key, ignored".into(), fix);
        }
        // The table's order, not the file's: it validates `timezone` before
        // `schedule`.
        for key in KEYS {
            let Some(value) = map.get(key.name).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Applies::Only(only) = key.applies
                && only != job_type
            {
                self.warn(
                    key.name,
                    format!("applies to {only} jobs only, so this {job_type} job ignores it"),
                    format!("remove it, or move the job to {only}/"),
                );
                continue;
            }
            for Fault { message, fix } in key.apply(value, &mut s) {
                let problem = self.at(key.name, message, fix);
                self.problems.push(problem);
            }
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "jobs/triggered/x/settings.job";

    fn ok(text: &str, job_type: JobType) -> (JobSettings, Vec<Warning>) {
        match parse(text.as_bytes(), Path::new(FILE), job_type) {
            Ok(r) => r,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn trig(text: &str) -> JobSettings {
        let (s, w) = ok(text, JobType::Triggered);
        assert!(w.is_empty(), "{text}: {w:?}");
        s
    }

    fn cont(text: &str) -> JobSettings {
        let (s, w) = ok(text, JobType::Continuous);
        assert!(w.is_empty(), "{text}: {w:?}");
        s
    }

    fn errs(text: &str, job_type: JobType) -> Vec<Problem> {
        match parse(text.as_bytes(), Path::new(FILE), job_type) {
            Ok(r) => panic!("{text}: expected an error, got {r:?}"),
            Err(e) => e.problems,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults() {
        let d = JobSettings::default();
        assert_eq!(d.stopping_wait_time, secs(5));
        assert!(!d.is_singleton && !d.is_in_place);
        assert_eq!(d.schedule, None);
        assert_eq!(d.timezone, Tz::UTC);
        assert_eq!((d.restart_delay, d.restart_max_delay), (secs(1), secs(60)));
        assert_eq!((d.timeout, d.idle_timeout), (None, None));
        assert_eq!(d.overlap.as_str(), "skip");
        assert_eq!(Overlap::Queue.as_str(), "queue");
        assert_eq!(
            (d.history_size, d.log_max_bytes, d.log_keep),
            (50, 10_485_760, 5)
        );
        assert!(d.env.is_empty());
        for text in ["{}", "", "  \n", "// nothing\n/* here */"] {
            assert_eq!(trig(text), d, "{text:?}");
        }
    }

    #[test]
    fn good_values() {
        let s = trig(
            r#"{
              "stopping_wait_time": 30,
              "is_singleton": true,
              "schedule": "0 */5 * * * *",
              "timezone": "Europe/Lisbon",
              "is_in_place": true,
              "timeout": 600,
              "idle_timeout": 120,
              "overlap": "queue",
              "history_size": 7,
              "log_max_bytes": 65536,
              "log_keep": 0,
              "env": {"MODE": "prod", "EMPTY": ""}
            }"#,
        );
        assert_eq!(s.stopping_wait_time, secs(30));
        assert!(s.is_singleton && s.is_in_place);
        let schedule = s.schedule.unwrap();
        assert_eq!(schedule.expr(), "0 */5 * * * *");
        assert_eq!(schedule.timezone(), Tz::Europe__Lisbon);
        assert_eq!(s.timezone, Tz::Europe__Lisbon);
        assert_eq!(
            (s.timeout, s.idle_timeout),
            (Some(secs(600)), Some(secs(120)))
        );
        assert_eq!(s.overlap, Overlap::Queue);
        assert_eq!((s.history_size, s.log_max_bytes, s.log_keep), (7, 65536, 0));
        assert_eq!(s.env.get("MODE").map(String::as_str), Some("prod"));
        assert_eq!(s.env.get("EMPTY").map(String::as_str), Some(""));

        let c = cont(r#"{"restart_delay": 0, "restart_max_delay": 300, "stopping_wait_time": 0}"#);
        assert_eq!((c.restart_delay, c.restart_max_delay), (secs(0), secs(300)));
        assert_eq!(c.stopping_wait_time, secs(0));
    }

    #[test]
    fn zero_timeouts_mean_none_and_null_means_absent() {
        let s = trig(r#"{"timeout": 0, "idle_timeout": "0"}"#);
        assert_eq!((s.timeout, s.idle_timeout), (None, None));
        let s = trig(
            r#"{"timeout": null, "schedule": null, "timezone": null, "env": null,
                "history_size": null, "is_singleton": null}"#,
        );
        assert_eq!(s, JobSettings::default());
    }

    #[test]
    fn numeric_strings_and_bool_strings() {
        let s = trig(
            r#"{"stopping_wait_time": "60", "timeout": " 90 ", "history_size": "3",
                "log_max_bytes": "1e6", "is_singleton": "true", "is_in_place": "False",
                "log_keep": 2.0}"#,
        );
        assert_eq!(
            (s.stopping_wait_time, s.timeout),
            (secs(60), Some(secs(90)))
        );
        assert_eq!(
            (s.history_size, s.log_max_bytes, s.log_keep),
            (3, 1_000_000, 2)
        );
        assert!(s.is_singleton && !s.is_in_place);
    }

    #[test]
    fn bad_values_table() {
        use JobType::{Continuous as C, Triggered as T};
        // The fix every plain bad value gets: the key's example from the table.
        let fix = |key: &str, example: &str| format!("fix the value, e.g. `\"{key}\": {example}`");
        let smaller =
            |key: &str, example: &str| format!("use a smaller value, e.g. `\"{key}\": {example}`");
        let secs = |got: &str| format!("must be a whole number of seconds >= 0, got {got}");
        let fraction = |got: &str| {
            format!(
                "must be a whole number of seconds >= 0, got {got}, which is not a whole number"
            )
        };
        let bool_fix = |key: &str| format!("write true or false, e.g. `\"{key}\": true`");
        // (job type, settings, key, message, fix)
        let cases: Vec<(JobType, &str, &str, String, String)> = vec![
            // Seconds, each kind of bad value.
            (
                T,
                r#"{"stopping_wait_time": -1}"#,
                "stopping_wait_time",
                secs("-1"),
                fix("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"stopping_wait_time": 1.5}"#,
                "stopping_wait_time",
                fraction("1.5"),
                fix("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"stopping_wait_time": "soon"}"#,
                "stopping_wait_time",
                secs(r#""soon""#),
                fix("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"stopping_wait_time": true}"#,
                "stopping_wait_time",
                secs("true"),
                fix("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"stopping_wait_time": [5]}"#,
                "stopping_wait_time",
                secs("an array"),
                fix("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"stopping_wait_time": 315360001}"#,
                "stopping_wait_time",
                "must be at most 315360000, got 315360001".into(),
                smaller("stopping_wait_time", "30"),
            ),
            (
                T,
                r#"{"timeout": 1e30}"#,
                "timeout",
                "must be at most 315360000, got a number far beyond that".into(),
                smaller("timeout", "3600"),
            ),
            (
                T,
                r#"{"timeout": 18446744073709551616}"#,
                "timeout",
                "must be at most 315360000, got a number far beyond that".into(),
                smaller("timeout", "3600"),
            ),
            (
                T,
                r#"{"timeout": "18446744073709551616"}"#,
                "timeout",
                r#"must be at most 315360000, got "18446744073709551616""#.into(),
                smaller("timeout", "3600"),
            ),
            (
                T,
                r#"{"timeout": -1e30}"#,
                "timeout",
                secs("-1e+30"),
                fix("timeout", "3600"),
            ),
            (
                T,
                r#"{"timeout": "-5"}"#,
                "timeout",
                secs(r#""-5""#),
                fix("timeout", "3600"),
            ),
            (
                T,
                r#"{"idle_timeout": 0.5}"#,
                "idle_timeout",
                fraction("0.5"),
                fix("idle_timeout", "600"),
            ),
            (
                C,
                r#"{"restart_delay": -3}"#,
                "restart_delay",
                secs("-3"),
                fix("restart_delay", "5"),
            ),
            (
                C,
                r#"{"restart_max_delay": "x"}"#,
                "restart_max_delay",
                secs(r#""x""#),
                fix("restart_max_delay", "300"),
            ),
            // Booleans.
            (
                T,
                r#"{"is_singleton": 1}"#,
                "is_singleton",
                "must be true or false, got 1".into(),
                bool_fix("is_singleton"),
            ),
            (
                C,
                r#"{"is_singleton": "yes"}"#,
                "is_singleton",
                r#"must be true or false, got "yes""#.into(),
                bool_fix("is_singleton"),
            ),
            (
                T,
                r#"{"is_in_place": {}}"#,
                "is_in_place",
                "must be true or false, got an object".into(),
                bool_fix("is_in_place"),
            ),
            // Whole numbers with their own ranges.
            (
                T,
                r#"{"history_size": 0}"#,
                "history_size",
                "must be a whole number of runs >= 1, got 0".into(),
                fix("history_size", "200"),
            ),
            (
                T,
                r#"{"history_size": 100001}"#,
                "history_size",
                "must be at most 100000, got 100001".into(),
                smaller("history_size", "200"),
            ),
            (
                T,
                r#"{"log_max_bytes": 1000}"#,
                "log_max_bytes",
                "must be a whole number of bytes >= 65536, got 1000".into(),
                fix("log_max_bytes", "1048576"),
            ),
            (
                C,
                r#"{"log_max_bytes": 1099511627777}"#,
                "log_max_bytes",
                "must be at most 1099511627776, got 1099511627777".into(),
                smaller("log_max_bytes", "1048576"),
            ),
            (
                T,
                r#"{"log_keep": -1}"#,
                "log_keep",
                "must be a whole number of files >= 0, got -1".into(),
                fix("log_keep", "10"),
            ),
            (
                T,
                r#"{"log_keep": 1001}"#,
                "log_keep",
                "must be at most 1000, got 1001".into(),
                smaller("log_keep", "10"),
            ),
            (
                T,
                r#"{"log_keep": "many"}"#,
                "log_keep",
                r#"must be a whole number of files >= 0, got "many""#.into(),
                fix("log_keep", "10"),
            ),
            // One of.
            (
                T,
                r#"{"overlap": "Queue"}"#,
                "overlap",
                r#"must be "skip" or "queue", got "Queue""#.into(),
                fix("overlap", r#""queue""#),
            ),
            (
                T,
                r#"{"overlap": true}"#,
                "overlap",
                r#"must be "skip" or "queue", got true"#.into(),
                fix("overlap", r#""queue""#),
            ),
            // Custom validators.
            (
                T,
                r#"{"schedule": 5}"#,
                "schedule",
                r#"must be a cron expression string such as "0 */5 * * * *", got 5"#.into(),
                fix("schedule", r#""0 0 3 * * *""#),
            ),
            (
                T,
                r#"{"schedule": "* * * *"}"#,
                "schedule",
                "schedule `* * * *` has 4 field(s)".into(),
                "write 6 fields `sec min hour day month weekday` (e.g. `0 */5 * * * *`), 5 fields \
                 `min hour day month weekday`, or a macro such as `@daily`"
                    .into(),
            ),
            (
                T,
                r#"{"timezone": "Mars/Base"}"#,
                "timezone",
                "timezone `Mars/Base` is not a known IANA time zone name".into(),
                "use a name such as `UTC`, `Europe/Lisbon` or `America/New_York`".into(),
            ),
            (
                C,
                r#"{"timezone": 1}"#,
                "timezone",
                r#"must be an IANA time zone name such as "Europe/Lisbon", got 1"#.into(),
                fix("timezone", r#""America/New_York""#),
            ),
            (
                T,
                r#"{"env": "A=B"}"#,
                "env",
                r#"must be an object of names to strings such as {"MODE": "prod"}, got "A=B""#
                    .into(),
                fix("env", r#"{"MODE": "prod"}"#),
            ),
            (
                C,
                r#"{"env": {"PORT": 8080}}"#,
                "env",
                "variable `PORT` must be a string, got 8080".into(),
                r#"write it in quotes, e.g. "8080""#.into(),
            ),
            (
                T,
                r#"{"env": {"A": null}}"#,
                "env",
                "variable `A` must be a string, got null".into(),
                r#"write it in quotes, e.g. "value""#.into(),
            ),
            (
                T,
                r#"{"env": {"": "x"}}"#,
                "env",
                "has a variable with an empty name".into(),
                "give it a name".into(),
            ),
            (
                T,
                r#"{"env": {"A=B": "x"}}"#,
                "env",
                "variable name `A=B` contains `=` or a NUL byte, which a name cannot hold".into(),
                "rename it".into(),
            ),
            (
                T,
                r#"{"queue": {"concurrency": 0}}"#,
                "queue",
                "`concurrency` must be a whole number from 1 to 1024, got 0".into(),
                r#"fix the value, e.g. `"queue": {"concurrency": 4}`"#.into(),
            ),
            (
                T,
                r#"{"queue": true}"#,
                "queue",
                r#"must be an object such as {} or {"concurrency": 4}, got true"#.into(),
                r#"write `"queue": {}` for the defaults"#.into(),
            ),
            (
                T,
                r#"{"env": {"A\u0000": "x"}}"#,
                "env",
                "variable name `A\\0` contains `=` or a NUL byte, which a name cannot hold".into(),
                "rename it".into(),
            ),
            (
                T,
                r#"{"env": {"A": "x\u0000y"}}"#,
                "env",
                "variable `A` has a NUL byte in its value, which the environment cannot hold"
                    .into(),
                "remove it".into(),
            ),
        ];
        for (job_type, text, key, message, fix) in &cases {
            let problems = errs(text, *job_type);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            let p = &problems[0];
            assert_eq!(p.key.as_deref(), Some(*key), "{text}");
            assert_eq!(
                (p.line, p.file.as_path()),
                (Some(1), Path::new(FILE)),
                "{text}"
            );
            assert_eq!(&p.message, message, "{text}");
            assert_eq!(&p.fix, fix, "{text}");
        }
        // Errors whose text comes from the cron parser keep it whole, with the key's
        // example as the fix.
        for (text, part) in [
            (r#"{"schedule": "61 * * * * *"}"#, "second field `61`"),
            (r#"{"schedule": ""}"#, "it is empty"),
        ] {
            let p = &errs(text, T)[0];
            assert!(p.message.contains(part), "{text}: {p}");
            assert_eq!(p.fix, fix("schedule", r#""0 0 3 * * *""#), "{text}");
        }
        // Every key of the table has a bad-value case above.
        for k in keys::KEYS {
            assert!(
                cases.iter().any(|c| c.2 == k.name),
                "no bad-value case for `{}`",
                k.name
            );
        }
    }

    #[test]
    fn display_names_file_line_column_key_and_fix() {
        let text = "{\n  \"schedule\": \"@daily\",\n  \"timeout\": -1\n}";
        let problems = errs(text, JobType::Triggered);
        assert_eq!(
            problems[0].to_string(),
            "jobs/triggered/x/settings.job:3:14: key `timeout`: must be a whole number of \
             seconds >= 0, got -1; fix the value, e.g. `\"timeout\": 3600`"
        );
        let p = &problems[0];
        assert_eq!(
            (p.line, p.column, p.key.as_deref()),
            (Some(3), Some(14), Some("timeout"))
        );
        assert_eq!(p.message, "must be a whole number of seconds >= 0, got -1");
        assert_eq!(p.fix, "fix the value, e.g. `\"timeout\": 3600`");
    }

    #[test]
    fn every_problem_is_collected_with_its_line() {
        let text = r#"{
  "stopping_wait_time": -1,
  "env": {"": "x", "B": 2},
  "timezone": "Nowhere/Town",
  "schedule": "0 0 25 * * *",
  "history_size": 0
}"#;
        let problems = errs(text, JobType::Triggered);
        let got: Vec<(Option<&str>, Option<usize>)> = problems
            .iter()
            .map(|p| (p.key.as_deref(), p.line))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("stopping_wait_time"), Some(2)),
                (Some("env"), Some(3)),
                (Some("env"), Some(3)),
                (Some("timezone"), Some(4)),
                (Some("schedule"), Some(5)),
                (Some("history_size"), Some(6)),
            ]
        );
        let e = SettingsError { problems };
        assert_eq!(e.to_string().lines().count(), 6);
    }

    #[test]
    fn schedule_is_read_in_the_timezone_whatever_the_order() {
        let s = trig(r#"{"schedule": "@daily", "timezone": "Australia/Sydney"}"#);
        assert_eq!(s.schedule.unwrap().timezone(), Tz::Australia__Sydney);
    }

    #[test]
    fn bom_and_comments() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(br#"{"timeout": 5}"#);
        let (s, _) = parse(&bytes, Path::new(FILE), JobType::Triggered).unwrap();
        assert_eq!(s.timeout, Some(secs(5)));

        let text = r#"// settings for the nightly export
{
  /* grace time, "quoted" // not a line comment here */ "stopping_wait_time": 9,
  "schedule": "0 */5 * * * *", // every five minutes
  /* multi
     line — ünïcode */
  "env": {"URL": "http://host/*x*/y", "P": "a//b", "Q": "\"/*\""}
}
// trailing"#;
        let s = trig(text);
        assert_eq!(s.stopping_wait_time, secs(9));
        assert_eq!(s.schedule.unwrap().expr(), "0 */5 * * * *");
        assert_eq!(s.env["URL"], "http://host/*x*/y");
        assert_eq!(s.env["P"], "a//b");
        assert_eq!(s.env["Q"], "\"/*\"");
    }

    #[test]
    fn comments_keep_error_positions() {
        let text = "/* a\n b */ {\n  // c\n  \"timeout\": x\n}";
        let problems = errs(text, JobType::Triggered);
        assert_eq!((problems[0].line, problems[0].column), (Some(4), Some(14)));
        let text = "{ /* ü */ \"timeout\": -2 }";
        let p = &errs(text, JobType::Triggered)[0];
        assert_eq!((p.line, p.column), (Some(1), Some(23)));
    }

    #[test]
    fn unterminated_block_comment() {
        let problems = errs("{\n  \"timeout\": 5 /* oops\n}", JobType::Triggered);
        assert_eq!((problems[0].line, problems[0].column), (Some(2), Some(16)));
        assert!(problems[0].message.contains("never closed"), "{problems:?}");
    }

    #[test]
    fn invalid_json_has_line_and_column() {
        let problems = errs("{\n  \"timeout\": 5,\n  \"x\" 1\n}", JobType::Triggered);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(
            (p.line, p.column, p.key.as_deref()),
            (Some(3), Some(7), None)
        );
        assert_eq!(p.message, "is not valid JSON: expected `:`");
        assert_eq!(p.fix, "fix the syntax");
        let p = &errs("{\"timeout\": 5,}", JobType::Triggered)[0];
        assert!(p.message.contains("trailing comma"), "{p}");
    }

    #[test]
    fn top_level_must_be_an_object() {
        for (text, found) in [
            ("[1, 2]", "an array"),
            ("\n  5", "a number"),
            ("\"x\"", "a string"),
        ] {
            let p = &errs(text, JobType::Triggered)[0];
            assert!(p.message.contains(found), "{p}");
            assert!(p.message.contains("must be a JSON object"), "{p}");
        }
        let p = &errs("\n  [1]", JobType::Triggered)[0];
        assert_eq!((p.line, p.column), (Some(2), Some(3)));
    }

    #[test]
    fn non_utf8_file() {
        let p = &errs_bytes(b"{\n\"env\": {\"A\": \"\xff\"}}")[0];
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains("not valid UTF-8"), "{p}");
    }

    fn errs_bytes(bytes: &[u8]) -> Vec<Problem> {
        parse(bytes, Path::new(FILE), JobType::Triggered)
            .unwrap_err()
            .problems
    }

    #[test]
    fn unknown_keys_warn_with_suggestion() {
        let (s, w) = ok(
            "{\n \"timout\": 5,\n \"Schedule\": 1,\n \"stopping-wait-time\": 1,\n \"colour\": 1\n}",
            JobType::Triggered,
        );
        assert_eq!(s, JobSettings::default());
        let got: Vec<(Option<&str>, Option<usize>, &str)> = w
            .iter()
            .map(|p| (p.key.as_deref(), p.line, p.message.as_str()))
            .collect();
        assert_eq!(got[0], (Some("timout"), Some(2), "unknown key, ignored"));
        let fixes: Vec<&str> = w.iter().map(|p| p.fix.as_str()).collect();
        assert_eq!(
            fixes[..3],
            [
                "did you mean `timeout`?",
                "did you mean `schedule`?",
                "did you mean `stopping_wait_time`?"
            ]
        );
        assert!(
            fixes[3].starts_with("check the spelling; known keys are stopping_wait_time, "),
            "{w:?}"
        );
        assert_eq!(
            w[0].to_string(),
            "jobs/triggered/x/settings.job:2:12: key `timout`: unknown key, ignored; did you \
             mean `timeout`?"
        );
    }

    #[test]
    fn keys_of_the_other_job_type_warn_and_are_ignored() {
        let (s, w) = ok(
            r#"{"schedule": "@daily", "timeout": 5, "idle_timeout": 5, "overlap": "queue",
                "history_size": 3, "restart_delay": 2}"#,
            JobType::Continuous,
        );
        assert_eq!(s.schedule, None);
        assert_eq!(
            (s.timeout, s.overlap, s.history_size),
            (None, Overlap::Skip, 50)
        );
        assert_eq!(s.restart_delay, secs(2));
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(
            w[0].message.contains("applies to triggered jobs only"),
            "{w:?}"
        );

        // Ignored means not validated either.
        let (s, w) = ok(
            r#"{"restart_delay": -1, "restart_max_delay": "x"}"#,
            JobType::Triggered,
        );
        assert_eq!(s, JobSettings::default());
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0].fix, "remove it, or move the job to continuous/",
            "{w:?}"
        );
    }

    #[test]
    fn duplicate_keys_warn_and_the_last_wins() {
        let (s, w) = ok("{\"timeout\": 1,\n\"timeout\": 2}", JobType::Triggered);
        assert_eq!(s.timeout, Some(secs(2)));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, Some(2));
        assert!(w[0].message.contains("appears 2 times"), "{w:?}");
    }

    #[test]
    fn load_reads_the_job_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (s, w) = load(dir.path(), JobType::Triggered).unwrap();
        assert_eq!(s, JobSettings::default());
        assert!(w.is_empty());

        fs::write(dir.path().join(FILE_NAME), r#"{"timeout": 7, "tmeout": 1}"#).unwrap();
        let (s, w) = load(dir.path(), JobType::Triggered).unwrap();
        assert_eq!(s.timeout, Some(secs(7)));
        assert_eq!(w[0].file, dir.path().join(FILE_NAME));

        fs::write(dir.path().join(FILE_NAME), r#"{"timeout": -7}"#).unwrap();
        let e = load(dir.path(), JobType::Triggered).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&dir.path().join(FILE_NAME).display().to_string())
        );

        // Past the cap: an error naming size and limit, never parsed.
        let mut big = b"{\"env\": {\"X\": \"".to_vec();
        big.resize(MAX_FILE_BYTES as usize + 1, b'x');
        fs::write(dir.path().join(FILE_NAME), &big).unwrap();
        let (result, raw) = load_with_raw(dir.path(), JobType::Triggered);
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("is 65537 bytes; the limit is 65536; shorten it"),
            "{e}"
        );
        assert_eq!(raw, Value::Object(Map::new()));
        // At the cap: read.
        fs::write(
            dir.path().join(FILE_NAME),
            format!(
                "{{\"timeout\": 3}}{}",
                " ".repeat(MAX_FILE_BYTES as usize - 14)
            ),
        )
        .unwrap();
        let (result, raw) = load_with_raw(dir.path(), JobType::Triggered);
        assert_eq!(result.unwrap().0.timeout, Some(secs(3)));
        assert_eq!(raw["timeout"], 3);

        // A folder where the file should be cannot be read, even by root.
        fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let e = load(dir.path(), JobType::Triggered).unwrap_err();
        assert!(e.to_string().contains("reading it failed"), "{e}");
    }
}
