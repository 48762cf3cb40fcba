//! `settings.job` (docs/settings.md), read in two stages: the text is made plain JSON
//! (BOM and comments removed, positions kept) and parsed into a `serde_json::Value`;
//! then every key is validated into `JobSettings`, collecting *every* problem at once
//! so one edit can fix them all. Unknown keys and keys meant for the other job type
//! are warnings: the job still runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::{Map, Number, Value};

use crate::schedule::{Schedule, parse_timezone};
use crate::spec::JobType;

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
}

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
        }
    }
}

/// One error or warning about a settings file. `line`/`column` are 1-based; the
/// column counts bytes, as serde_json and most editors' status lines do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

pub type Warning = Problem;

#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct SettingsError {
    pub problems: Vec<Problem>,
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which job types a key means something for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Both,
    Only(JobType),
}

const KEYS: [(&str, Applies); 14] = [
    ("stopping_wait_time", Applies::Both),
    ("is_singleton", Applies::Both),
    ("schedule", Applies::Only(JobType::Triggered)),
    ("timezone", Applies::Both),
    ("is_in_place", Applies::Both),
    ("restart_delay", Applies::Only(JobType::Continuous)),
    ("restart_max_delay", Applies::Only(JobType::Continuous)),
    ("timeout", Applies::Only(JobType::Triggered)),
    ("idle_timeout", Applies::Only(JobType::Triggered)),
    ("overlap", Applies::Only(JobType::Triggered)),
    ("history_size", Applies::Only(JobType::Triggered)),
    ("log_max_bytes", Applies::Both),
    ("log_keep", Applies::Both),
    ("env", Applies::Both),
];

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
    let problem = |message: String| SettingsError {
        problems: vec![Problem {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message,
        }],
    };
    let unreadable = |err: io::Error| {
        problem(format!(
            "reading it failed: {err}; make it a readable file (chmod a+r) or remove it"
        ))
    };
    let too_big = |size: String| {
        problem(format!(
            "is {size} bytes; the limit is {MAX_FILE_BYTES}: shorten it"
        ))
    };
    let meta = match fs::metadata(file) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(unreadable(err)),
    };
    // Opening a FIFO would wait for a writer; a folder cannot be read.
    if !meta.is_file() {
        return Err(problem(
            "reading it failed: it is not a regular file; make it a file or remove it".into(),
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
    let whole_file = |line: Option<usize>, column: Option<usize>, message: String| SettingsError {
        problems: vec![Problem {
            file: file.to_path_buf(),
            line,
            column,
            key: None,
            message,
        }],
    };
    // Windows editors write a BOM; Kudu accepts it, so users' files have it.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|err| {
        let (line, column) = line_col(text, err.valid_up_to());
        whole_file(
            Some(line),
            Some(column),
            "is not valid UTF-8: save the file as UTF-8".to_string(),
        )
    })?;
    let json = strip_comments(text).map_err(|(line, column)| {
        whole_file(
            Some(line),
            Some(column),
            "has a `/*` comment that is never closed: add `*/` where the comment ends".to_string(),
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
        whole_file(
            Some(err.line()),
            Some(err.column()),
            format!("is not valid JSON: {message}; fix the syntax"),
        )
    })?;
    let Value::Object(map) = value else {
        let start = json.len() - json.trim_start().len();
        let (line, column) = line_col(json.as_bytes(), start);
        return Err(whole_file(
            Some(line),
            Some(column),
            format!(
                "must be a JSON object such as {{\"schedule\": \"0 */5 * * * *\"}}, found {}; \
                 wrap the settings in {{ }}",
                kind_of(&value)
            ),
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

/// 1-based line and byte column of `offset` in `text`.
fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    (line, before.len() - line_start + 1)
}

/// Replaces `//` and `/* */` comments outside strings with spaces, byte for byte, and
/// keeps their newlines, so serde_json's line/column match the file. Returns the
/// position of an unterminated `/*` as the error.
fn strip_comments(text: &str) -> Result<String, (usize, usize)> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Str,
        Escape,
        Line,
        Block,
    }
    let blank = |out: &mut String, c: char| {
        if c == '\n' {
            out.push('\n');
        } else {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        }
    };
    let mut out = String::with_capacity(text.len());
    let mut state = State::Code;
    let mut block_start = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            State::Code => match (c, chars.peek()) {
                ('"', _) => {
                    out.push(c);
                    state = State::Str;
                }
                ('/', Some('/')) => {
                    chars.next();
                    out.push_str("  ");
                    state = State::Line;
                }
                ('/', Some('*')) => {
                    chars.next();
                    block_start = out.len();
                    out.push_str("  ");
                    state = State::Block;
                }
                _ => out.push(c),
            },
            State::Str => {
                out.push(c);
                match c {
                    '\\' => state = State::Escape,
                    '"' => state = State::Code,
                    _ => {}
                }
            }
            State::Escape => {
                out.push(c);
                state = State::Str;
            }
            State::Line => {
                blank(&mut out, c);
                if c == '\n' {
                    state = State::Code;
                }
            }
            State::Block => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    out.push_str("  ");
                    state = State::Code;
                } else {
                    blank(&mut out, c);
                }
            }
        }
    }
    if state == State::Block {
        return Err(line_col(text.as_bytes(), block_start));
    }
    Ok(out)
}

/// Where each top-level key's value starts (line, column), every occurrence in order.
/// Best effort over comment-free text: keys written with escapes are not matched.
type KeyPositions = HashMap<String, Vec<(usize, usize)>>;

fn key_positions(json: &str) -> KeyPositions {
    let bytes = json.as_bytes();
    let mut positions = KeyPositions::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let end = end.min(bytes.len());
                let after = end + 1;
                if depth == 1 {
                    let colon = bytes
                        .get(after..)
                        .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
                        .map(|p| after + p)
                        .filter(|&p| bytes[p] == b':');
                    if let (Some(colon), Some(key)) = (colon, json.get(start..end)) {
                        let value = bytes[colon + 1..]
                            .iter()
                            .position(|b| !b.is_ascii_whitespace())
                            .map_or(colon + 1, |p| colon + 1 + p);
                        positions
                            .entry(key.to_string())
                            .or_default()
                            .push(line_col(bytes, value));
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    positions
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value as the user wrote it, short enough for one line.
fn shown(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => kind_of(value).to_string(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("\"{}...\"", s.chars().take(40).collect::<String>())
        }
        _ => value.to_string(),
    }
}

/// A whole number in `min..=max`, given as a JSON number or a numeric string.
/// Numbers past `u64` reach us as `f64` (serde_json without arbitrary precision),
/// so floats are checked for fractions and size instead of being cast blindly.
fn whole_number(value: &Value, what: &str, min: u64, max: u64) -> Result<u64, String> {
    let wrong = || format!("must be {what}, got {}; fix the value", shown(value));
    let number = match value {
        Value::Number(n) => n.clone(),
        Value::String(s) => s.trim().parse::<Number>().map_err(|_| wrong())?,
        _ => return Err(wrong()),
    };
    let too_large = || match value {
        // serde_json would print 18446744073709551616 as 1.8446744073709552e19, which
        // is not what the user wrote.
        Value::Number(n) if !n.is_u64() => {
            format!("must be at most {max}, got a number far beyond that; use a smaller value")
        }
        _ => format!(
            "must be at most {max}, got {}; use a smaller value",
            shown(value)
        ),
    };
    let n = if let Some(n) = number.as_u64() {
        n
    } else if number.is_i64() {
        return Err(wrong());
    } else {
        let f = number.as_f64().ok_or_else(wrong)?;
        if f.fract() != 0.0 {
            return Err(format!(
                "must be {what}, got {}, which is not a whole number; fix the value",
                shown(value)
            ));
        }
        if f < 0.0 {
            return Err(wrong());
        }
        if f > max as f64 {
            return Err(too_large());
        }
        // Whole, non-negative and at most `max`, so the cast is exact.
        f as u64
    };
    if n > max {
        return Err(too_large());
    }
    if n < min {
        return Err(wrong());
    }
    Ok(n)
}

fn seconds(value: &Value) -> Result<Duration, String> {
    whole_number(
        value,
        "a whole number of seconds >= 0",
        0,
        MAX_DURATION_SECS,
    )
    .map(Duration::from_secs)
}

/// JSON booleans; the strings "true"/"false" too, because Kudu's parser converts them
/// and settings files copied from Kudu contain them.
fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(format!(
            "must be true or false, got {}; fix the value",
            shown(value)
        )),
    }
}

fn env_map(value: &Value) -> Result<BTreeMap<String, String>, Vec<String>> {
    let Value::Object(vars) = value else {
        return Err(vec![format!(
            "must be an object of names to strings such as {{\"MODE\": \"prod\"}}, got {}; \
             fix the value",
            shown(value)
        )]);
    };
    let mut env = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, v) in vars {
        if name.is_empty() {
            problems.push("has a variable with an empty name: give it a name".to_string());
            continue;
        }
        if name.contains(['=', '\0']) {
            problems.push(format!(
                "variable name `{}` contains `=` or a NUL byte, which a name cannot hold: \
                 rename it",
                name.escape_debug()
            ));
            continue;
        }
        match v {
            Value::String(s) if s.contains('\0') => problems.push(format!(
                "variable `{name}` has a NUL byte in its value, which the environment cannot \
                 hold: remove it"
            )),
            Value::String(s) => {
                env.insert(name.clone(), s.clone());
            }
            _ => problems.push(format!(
                "variable `{name}` must be a string, got {}; write it in quotes, e.g. \"{}\"",
                shown(v),
                match v {
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => "value".to_string(),
                }
            )),
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(problems)
    }
}

/// Levenshtein distance, for "did you mean" on unknown keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest known key within edit distance 2, ignoring case and `-` vs `_`.
fn suggest(key: &str) -> Option<&'static str> {
    let norm = key.to_ascii_lowercase().replace('-', "_");
    KEYS.iter()
        .map(|(known, _)| (distance(&norm, known), *known))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

struct Checker<'a> {
    file: &'a Path,
    positions: KeyPositions,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Checker<'_> {
    fn at(&self, key: &str, message: String) -> Problem {
        // serde_json keeps the last of duplicate keys, so point at the last one.
        let pos = self.positions.get(key).and_then(|p| p.last());
        Problem {
            file: self.file.to_path_buf(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            key: Some(key.to_string()),
            message,
        }
    }

    fn error(&mut self, key: &str, message: String) {
        let problem = self.at(key, message);
        self.problems.push(problem);
    }

    fn warn(&mut self, key: &str, message: String) {
        let warning = self.at(key, message);
        self.warnings.push(warning);
    }

    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(key, message)).ok()
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
                format!("appears {count} times; the last one is used: remove the others"),
            );
        }
        // The schedule is read in the timezone, whatever the key order in the file.
        if let Some(value) = map.get("timezone").filter(|v| !v.is_null()) {
            let tz = match value {
                Value::String(name) => parse_timezone(name).map_err(|e| e.to_string()),
                _ => Err(format!(
                    "must be an IANA time zone name such as \"Europe/Lisbon\", got {}; \
                     fix the value",
                    shown(value)
                )),
            };
            if let Some(tz) = self.check("timezone", tz) {
                s.timezone = tz;
            }
        }
        for (key, value) in map {
            let Some((_, applies)) = KEYS.iter().find(|(known, _)| known == key) else {
                let message = match suggest(key) {
                    Some(known) => format!("unknown key, ignored: did you mean `{known}`?"),
                    None => format!(
                        "unknown key, ignored: check the spelling; known keys are {}",
                        KEYS.map(|(k, _)| k).join(", ")
                    ),
                };
                self.warn(key, message);
                continue;
            };
            if value.is_null() {
                continue;
            }
            if let Applies::Only(only) = applies
                && *only != job_type
            {
                self.warn(
                    key,
                    format!(
                        "applies to {only} jobs only, so this {job_type} job ignores it: \
                         remove it, or move the job to {only}/"
                    ),
                );
                continue;
            }
            match key.as_str() {
                "stopping_wait_time" => {
                    if let Some(v) = self.check(key, seconds(value)) {
                        s.stopping_wait_time = v;
                    }
                }
                "is_singleton" => {
                    if let Some(v) = self.check(key, boolean(value)) {
                        s.is_singleton = v;
                    }
                }
                "is_in_place" => {
                    if let Some(v) = self.check(key, boolean(value)) {
                        s.is_in_place = v;
                    }
                }
                "schedule" => {
                    let schedule = match value {
                        Value::String(expr) => {
                            Schedule::parse(expr, s.timezone).map_err(|e| e.to_string())
                        }
                        _ => Err(format!(
                            "must be a cron expression string such as \"0 */5 * * * *\", got \
                             {}; fix the value",
                            shown(value)
                        )),
                    };
                    s.schedule = self.check(key, schedule);
                }
                "timezone" => {}
                "restart_delay" => {
                    if let Some(v) = self.check(key, seconds(value)) {
                        s.restart_delay = v;
                    }
                }
                "restart_max_delay" => {
                    if let Some(v) = self.check(key, seconds(value)) {
                        s.restart_max_delay = v;
                    }
                }
                "timeout" => {
                    if let Some(v) = self.check(key, seconds(value)) {
                        s.timeout = (!v.is_zero()).then_some(v);
                    }
                }
                "idle_timeout" => {
                    if let Some(v) = self.check(key, seconds(value)) {
                        s.idle_timeout = (!v.is_zero()).then_some(v);
                    }
                }
                "overlap" => {
                    let overlap = match value.as_str() {
                        Some("skip") => Ok(Overlap::Skip),
                        Some("queue") => Ok(Overlap::Queue),
                        _ => Err(format!(
                            "must be \"skip\" or \"queue\", got {}; fix the value",
                            shown(value)
                        )),
                    };
                    if let Some(v) = self.check(key, overlap) {
                        s.overlap = v;
                    }
                }
                "history_size" => {
                    let n = whole_number(value, "a whole number of runs >= 1", 1, MAX_HISTORY_SIZE);
                    if let Some(v) = self.check(key, n) {
                        s.history_size = u32::try_from(v).unwrap_or(u32::MAX);
                    }
                }
                "log_max_bytes" => {
                    let n = whole_number(
                        value,
                        "a whole number of bytes >= 65536",
                        MIN_LOG_MAX_BYTES,
                        MAX_LOG_MAX_BYTES,
                    );
                    if let Some(v) = self.check(key, n) {
                        s.log_max_bytes = v;
                    }
                }
                "log_keep" => {
                    let n = whole_number(value, "a whole number of files >= 0", 0, MAX_LOG_KEEP);
                    if let Some(v) = self.check(key, n) {
                        s.log_keep = u32::try_from(v).unwrap_or(u32::MAX);
                    }
                }
                "env" => match env_map(value) {
                    Ok(env) => s.env = env,
                    Err(messages) => {
                        for message in messages {
                            self.error(key, message);
                        }
                    }
                },
                _ => {}
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
        // (settings, key, part of the message)
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"stopping_wait_time": -1}"#,
                "stopping_wait_time",
                ">= 0, got -1",
            ),
            (
                r#"{"stopping_wait_time": 1.5}"#,
                "stopping_wait_time",
                "not a whole number",
            ),
            (
                r#"{"stopping_wait_time": "soon"}"#,
                "stopping_wait_time",
                r#"got "soon""#,
            ),
            (
                r#"{"stopping_wait_time": true}"#,
                "stopping_wait_time",
                "got true",
            ),
            (
                r#"{"stopping_wait_time": [5]}"#,
                "stopping_wait_time",
                "got an array",
            ),
            (
                r#"{"stopping_wait_time": 315360001}"#,
                "stopping_wait_time",
                "at most 315360000",
            ),
            (
                r#"{"timeout": 1e30}"#,
                "timeout",
                "at most 315360000, got a number far beyond",
            ),
            (
                r#"{"timeout": 18446744073709551616}"#,
                "timeout",
                "at most 315360000, got a number far beyond",
            ),
            (
                r#"{"timeout": "18446744073709551616"}"#,
                "timeout",
                "at most",
            ),
            (r#"{"timeout": -1e30}"#, "timeout", ">= 0, got -1e+30"),
            (r#"{"timeout": "-5"}"#, "timeout", r#"got "-5""#),
            (
                r#"{"idle_timeout": 0.5}"#,
                "idle_timeout",
                "not a whole number",
            ),
            (
                r#"{"is_singleton": 1}"#,
                "is_singleton",
                "must be true or false, got 1",
            ),
            (
                r#"{"is_singleton": "yes"}"#,
                "is_singleton",
                "must be true or false",
            ),
            (r#"{"is_in_place": {}}"#, "is_in_place", "got an object"),
            (
                r#"{"schedule": 5}"#,
                "schedule",
                "must be a cron expression string",
            ),
            (r#"{"schedule": "* * * *"}"#, "schedule", "has 4 field(s)"),
            (
                r#"{"schedule": "61 * * * * *"}"#,
                "schedule",
                "second field `61`",
            ),
            (r#"{"schedule": ""}"#, "schedule", "it is empty"),
            (
                r#"{"timezone": "Mars/Base"}"#,
                "timezone",
                "`Mars/Base` is not a known IANA",
            ),
            (
                r#"{"timezone": 1}"#,
                "timezone",
                "must be an IANA time zone name",
            ),
            (
                r#"{"overlap": "Queue"}"#,
                "overlap",
                r#"must be "skip" or "queue", got "Queue""#,
            ),
            (r#"{"overlap": true}"#, "overlap", "got true"),
            (r#"{"history_size": 0}"#, "history_size", ">= 1, got 0"),
            (
                r#"{"history_size": 100001}"#,
                "history_size",
                "at most 100000",
            ),
            (
                r#"{"log_max_bytes": 1000}"#,
                "log_max_bytes",
                ">= 65536, got 1000",
            ),
            (
                r#"{"log_max_bytes": 1099511627777}"#,
                "log_max_bytes",
                "at most",
            ),
            (r#"{"log_keep": -1}"#, "log_keep", ">= 0, got -1"),
            (r#"{"log_keep": 1001}"#, "log_keep", "at most 1000"),
            (
                r#"{"env": "A=B"}"#,
                "env",
                "must be an object of names to strings",
            ),
            (
                r#"{"env": {"PORT": 8080}}"#,
                "env",
                r#"`PORT` must be a string, got 8080; write it in quotes, e.g. "8080""#,
            ),
            (
                r#"{"env": {"A": null}}"#,
                "env",
                "`A` must be a string, got null",
            ),
            (r#"{"env": {"": "x"}}"#, "env", "empty name"),
            (r#"{"env": {"A=B": "x"}}"#, "env", "contains `=`"),
            (r#"{"env": {"A\u0000": "x"}}"#, "env", "NUL"),
            (
                r#"{"env": {"A": "x\u0000y"}}"#,
                "env",
                "NUL byte in its value",
            ),
        ];
        for (text, key, part) in cases {
            let problems = errs(text, JobType::Triggered);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            let p = &problems[0];
            assert_eq!(p.key.as_deref(), Some(*key), "{text}");
            assert_eq!(p.line, Some(1), "{text}");
            assert!(p.message.contains(part), "{text}: {}", p.message);
        }
        let problems = errs(r#"{"restart_delay": -3}"#, JobType::Continuous);
        assert!(problems[0].message.contains(">= 0, got -3"), "{problems:?}");
        let problems = errs(r#"{"restart_max_delay": "x"}"#, JobType::Continuous);
        assert_eq!(problems[0].key.as_deref(), Some("restart_max_delay"));
    }

    #[test]
    fn display_names_file_line_column_key_and_fix() {
        let text = "{\n  \"schedule\": \"@daily\",\n  \"timeout\": -1\n}";
        let problems = errs(text, JobType::Triggered);
        assert_eq!(
            problems[0].to_string(),
            "jobs/triggered/x/settings.job:3:14: key `timeout`: must be a whole number of \
             seconds >= 0, got -1; fix the value"
        );
        let whole = Problem {
            file: PathBuf::from("a/settings.job"),
            line: None,
            column: None,
            key: None,
            message: "m".to_string(),
        };
        assert_eq!(whole.to_string(), "a/settings.job: m");
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
        assert_eq!(p.message, "is not valid JSON: expected `:`; fix the syntax");
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
        assert_eq!(
            got[0],
            (
                Some("timout"),
                Some(2),
                "unknown key, ignored: did you mean `timeout`?"
            )
        );
        assert_eq!(got[1].2, "unknown key, ignored: did you mean `schedule`?");
        assert_eq!(
            got[2].2,
            "unknown key, ignored: did you mean `stopping_wait_time`?"
        );
        assert!(
            got[3].2.contains("check the spelling; known keys are"),
            "{w:?}"
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
        assert!(
            w[0].message.contains("move the job to continuous/"),
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
    fn key_positions_ignore_nested_keys_and_strings() {
        let json = "{\"env\": {\"timeout\": \"x\"},\n \"a\": \"timeout\",\n \"timeout\": 1}";
        let pos = key_positions(json);
        assert_eq!(pos["timeout"], vec![(3, 13)]);
        assert_eq!(pos["env"], vec![(1, 9)]);
        assert!(!pos.contains_key("x"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("timeout", "timeout"), 0);
        assert_eq!(suggest("idle_timeot"), Some("idle_timeout"));
        assert_eq!(suggest("zzz"), None);
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
            e.contains("is 65537 bytes; the limit is 65536: shorten it"),
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
