//! Every `settings.job` key, declared once: name, type, default, range or allowed
//! values, the job types it applies to, an example and a one-line doc.
//!
//! This table is the only list of keys. Validation walks it (a kind per scalar key, a
//! custom validator for `timezone`, `schedule` and `env`), the problems' fixes quote
//! its examples, unknown keys are matched against it, and the key table of
//! docs/settings.md is generated from it: a unit test fails when the two disagree
//! (`JOBHOST_BLESS=1 cargo test --lib settings` rewrites the doc's table).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Number, Value};

use super::{
    JobSettings, MAX_DURATION_SECS, MAX_HISTORY_SIZE, MAX_LOG_KEEP, MAX_LOG_MAX_BYTES,
    MIN_LOG_MAX_BYTES, Overlap,
};
use crate::schedule::{Schedule, ScheduleError, parse_timezone};
use crate::spec::JobType;

/// Which job types a key means something for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Both,
    Only(JobType),
}

impl Applies {
    pub fn includes(self, job_type: JobType) -> bool {
        match self {
            Applies::Both => true,
            Applies::Only(only) => only == job_type,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Applies::Both => "both",
            Applies::Only(t) => t.as_str(),
        }
    }
}

/// What is wrong with one value and how to fix it; the caller adds file, position
/// and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub message: String,
    pub fix: String,
}

type Setter<T> = fn(&mut JobSettings, T);
/// Validates a value and stores it; every fault at once (`env` can have several).
type Check = fn(&Key, &Value, &mut JobSettings) -> Vec<Fault>;

/// The type of a key's value, with its range; it decides how the value is checked
/// and how the docs describe it.
pub enum Kind {
    /// Whole seconds from 0 to [`MAX_DURATION_SECS`].
    Seconds(Setter<Duration>),
    /// `true`/`false`, or those words as strings (Kudu converts them).
    Bool(Setter<bool>),
    /// A whole number of `unit` in `min..=max`.
    Whole {
        unit: &'static str,
        min: u64,
        max: u64,
        set: Setter<u64>,
    },
    /// One of the strings, exactly.
    OneOf(&'static [&'static str], fn(&mut JobSettings, &str)),
    /// Anything else, with its own validator and its own words for the docs.
    Custom {
        type_doc: &'static str,
        range_doc: &'static str,
        check: Check,
    },
}

pub struct Key {
    pub name: &'static str,
    pub applies: Applies,
    pub kind: Kind,
    /// The default as JSON text (`null`: the key has none); a test checks that it
    /// gives `JobSettings::default()`.
    pub default: &'static str,
    /// A good, non-default value as JSON text, quoted in fixes and the docs.
    pub example: &'static str,
    /// One line for the docs' table.
    pub doc: &'static str,
}

use Applies::{Both, Only};
use JobType::{Continuous, Triggered};

/// In the order they are validated: `timezone` comes before `schedule` because the
/// schedule is read in the timezone, whatever the order in the file.
pub const KEYS: &[Key] = &[
    Key {
        name: "stopping_wait_time",
        applies: Both,
        kind: Kind::Seconds(|s, v| s.stopping_wait_time = v),
        default: "5",
        example: "30",
        doc: "grace time between the stop request and SIGKILL",
    },
    Key {
        name: "is_singleton",
        applies: Both,
        kind: Kind::Bool(|s, v| s.is_singleton = v),
        default: "false",
        example: "true",
        doc: "at most one run of this job across all hosts sharing LOGS",
    },
    Key {
        name: "timezone",
        applies: Both,
        kind: Kind::Custom {
            type_doc: "IANA zone name",
            range_doc: "any name in the tz database",
            check: timezone,
        },
        default: "\"UTC\"",
        example: "\"America/New_York\"",
        doc: "the zone the schedule is read in",
    },
    Key {
        name: "schedule",
        applies: Only(Triggered),
        kind: Kind::Custom {
            type_doc: "cron string",
            range_doc: "5 or 6 fields, or a macro (see below)",
            check: schedule,
        },
        default: "null",
        example: "\"0 0 3 * * *\"",
        doc: "when the job fires; without one it runs only when triggered",
    },
    Key {
        name: "is_in_place",
        applies: Both,
        kind: Kind::Bool(|s, v| s.is_in_place = v),
        default: "false",
        example: "true",
        doc: "run in the job folder itself instead of a private copy",
    },
    Key {
        name: "restart_delay",
        applies: Only(Continuous),
        kind: Kind::Seconds(|s, v| s.restart_delay = v),
        default: "1",
        example: "5",
        doc: "first wait after an exit; doubles on each quick exit",
    },
    Key {
        name: "restart_max_delay",
        applies: Only(Continuous),
        kind: Kind::Seconds(|s, v| s.restart_max_delay = v),
        default: "60",
        example: "300",
        doc: "cap of that wait; a longer run resets it",
    },
    Key {
        name: "timeout",
        applies: Only(Triggered),
        kind: Kind::Seconds(|s, v| s.timeout = (!v.is_zero()).then_some(v)),
        default: "0",
        example: "3600",
        doc: "a run still going after this is stopped, `Aborted`; 0: none",
    },
    Key {
        name: "idle_timeout",
        applies: Only(Triggered),
        kind: Kind::Seconds(|s, v| s.idle_timeout = (!v.is_zero()).then_some(v)),
        default: "0",
        example: "600",
        doc: "a run silent and idle this long is stopped, `Aborted`; 0: none",
    },
    Key {
        name: "overlap",
        applies: Only(Triggered),
        kind: Kind::OneOf(&["skip", "queue"], |s, v| {
            s.overlap = if v == "queue" {
                Overlap::Queue
            } else {
                Overlap::Skip
            }
        }),
        default: "\"skip\"",
        example: "\"queue\"",
        doc: "a fire during a run is dropped (`skip`) or kept as one pending run",
    },
    Key {
        name: "history_size",
        applies: Only(Triggered),
        kind: Kind::Whole {
            unit: "runs",
            min: 1,
            max: MAX_HISTORY_SIZE,
            set: |s, v| s.history_size = u32::try_from(v).unwrap_or(u32::MAX),
        },
        default: "50",
        example: "200",
        doc: "run folders kept; older ones are deleted",
    },
    Key {
        name: "log_max_bytes",
        applies: Both,
        kind: Kind::Whole {
            unit: "bytes",
            min: MIN_LOG_MAX_BYTES,
            max: MAX_LOG_MAX_BYTES,
            set: |s, v| s.log_max_bytes = v,
        },
        default: "10485760",
        example: "1048576",
        doc: "a log file is rotated when it passes this size",
    },
    Key {
        name: "log_keep",
        applies: Both,
        kind: Kind::Whole {
            unit: "files",
            min: 0,
            max: MAX_LOG_KEEP,
            set: |s, v| s.log_keep = u32::try_from(v).unwrap_or(u32::MAX),
        },
        default: "5",
        example: "10",
        doc: "rotated log files kept",
    },
    Key {
        name: "env",
        applies: Both,
        kind: Kind::Custom {
            type_doc: "object of string to string",
            range_doc: "names without `=` or NUL; string values",
            check: env,
        },
        default: "{}",
        example: "{\"MODE\": \"prod\"}",
        doc: "extra environment variables for every run",
    },
    Key {
        name: "queue",
        applies: Only(Triggered),
        kind: Kind::Custom {
            type_doc: "object",
            range_doc: "keys in docs/queues.md",
            check: super::queue::check,
        },
        default: "null",
        example: "{\"concurrency\": 4}",
        doc: "run once per message put on the job's queue (docs/queues.md)",
    },
];

pub fn lookup(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The closest known key within edit distance 2, ignoring case and `-` vs `_`.
pub fn suggest(name: &str) -> Option<&'static str> {
    let norm = name.to_ascii_lowercase().replace('-', "_");
    KEYS.iter()
        .map(|k| (strsim::levenshtein(&norm, k.name), k.name))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

impl Key {
    /// Validates `value` (not null) and stores it in `s`; the faults when it is bad.
    pub fn apply(&self, value: &Value, s: &mut JobSettings) -> Vec<Fault> {
        let result = match &self.kind {
            Kind::Seconds(set) => self
                .whole(value, "seconds", 0, MAX_DURATION_SECS)
                .map(|n| set(s, Duration::from_secs(n))),
            Kind::Bool(set) => self.boolean(value).map(|b| set(s, b)),
            Kind::Whole {
                unit,
                min,
                max,
                set,
            } => self.whole(value, unit, *min, *max).map(|n| set(s, n)),
            Kind::OneOf(allowed, set) => match value.as_str() {
                Some(v) if allowed.contains(&v) => {
                    set(s, v);
                    Ok(())
                }
                _ => Err(self.fault(
                    format!(
                        "must be {}, got {}",
                        one_of(allowed, "\"", "\""),
                        shown(value)
                    ),
                    "fix the value",
                )),
            },
            Kind::Custom { check, .. } => return check(self, value, s),
        };
        result.err().into_iter().collect()
    }

    fn fault(&self, message: String, verb: &str) -> Fault {
        Fault {
            message,
            fix: self.fix(verb),
        }
    }

    /// `VERB, e.g. "key": EXAMPLE`.
    fn fix(&self, verb: &str) -> String {
        format!("{verb}, e.g. `\"{}\": {}`", self.name, self.example)
    }

    /// A whole number in `min..=max`, given as a JSON number or a numeric string.
    /// Numbers past `u64` reach us as `f64` (serde_json without arbitrary
    /// precision), so floats are checked for fractions and size instead of being
    /// cast blindly.
    fn whole(&self, value: &Value, unit: &str, min: u64, max: u64) -> Result<u64, Fault> {
        let what = format!("a whole number of {unit} >= {min}");
        let wrong = || {
            self.fault(
                format!("must be {what}, got {}", shown(value)),
                "fix the value",
            )
        };
        let number = match value {
            Value::Number(n) => n.clone(),
            Value::String(s) => s.trim().parse::<Number>().map_err(|_| wrong())?,
            _ => return Err(wrong()),
        };
        let too_large = || {
            let got = match value {
                // serde_json would print 18446744073709551616 as
                // 1.8446744073709552e19, which is not what the user wrote.
                Value::Number(n) if !n.is_u64() => "a number far beyond that".to_string(),
                _ => shown(value),
            };
            self.fault(
                format!("must be at most {max}, got {got}"),
                "use a smaller value",
            )
        };
        let n = if let Some(n) = number.as_u64() {
            n
        } else if number.is_i64() {
            return Err(wrong());
        } else {
            let f = number.as_f64().ok_or_else(wrong)?;
            if f.fract() != 0.0 {
                return Err(self.fault(
                    format!(
                        "must be {what}, got {}, which is not a whole number",
                        shown(value)
                    ),
                    "fix the value",
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

    /// JSON booleans; the strings "true"/"false" too, because Kudu's parser converts
    /// them and settings files copied from Kudu contain them.
    fn boolean(&self, value: &Value) -> Result<bool, Fault> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(self.fault(
                format!("must be true or false, got {}", shown(value)),
                "write true or false",
            )),
        }
    }
}

/// `text` split into what is wrong and the fix when it reads `HEAD: FIX`; otherwise
/// all of it is the message and the key's own fix is used. Errors of other modules
/// (cron, zones) carry their fix in their text.
fn split_fix(key: &Key, text: String, head: &str) -> Fault {
    match text.strip_prefix(head).and_then(|r| r.strip_prefix(": ")) {
        Some(fix) if !fix.is_empty() => Fault {
            message: head.to_string(),
            fix: fix.to_string(),
        },
        _ => key.fault(text, "fix the value"),
    }
}

fn timezone(key: &Key, value: &Value, s: &mut JobSettings) -> Vec<Fault> {
    let Value::String(name) = value else {
        return vec![key.fault(
            format!(
                "must be an IANA time zone name such as \"Europe/Lisbon\", got {}",
                shown(value)
            ),
            "fix the value",
        )];
    };
    match parse_timezone(name) {
        Ok(tz) => {
            s.timezone = tz;
            Vec::new()
        }
        Err(e) => {
            let head = format!("timezone `{name}` is not a known IANA time zone name");
            vec![split_fix(key, e.to_string(), &head)]
        }
    }
}

/// Read in `s.timezone`, which [`KEYS`] validates first.
fn schedule(key: &Key, value: &Value, s: &mut JobSettings) -> Vec<Fault> {
    let Value::String(expr) = value else {
        return vec![key.fault(
            format!(
                "must be a cron expression string such as \"0 */5 * * * *\", got {}",
                shown(value)
            ),
            "fix the value",
        )];
    };
    match Schedule::parse(expr, s.timezone) {
        Ok(schedule) => {
            s.schedule = Some(schedule);
            Vec::new()
        }
        Err(e) => {
            let head = match &e {
                ScheduleError::WrongFieldCount { expr, count } => {
                    format!("schedule `{expr}` has {count} field(s)")
                }
                _ => String::new(),
            };
            vec![split_fix(key, e.to_string(), &head)]
        }
    }
}

fn env(key: &Key, value: &Value, s: &mut JobSettings) -> Vec<Fault> {
    let Value::Object(vars) = value else {
        return vec![key.fault(
            format!(
                "must be an object of names to strings such as {{\"MODE\": \"prod\"}}, got {}",
                shown(value)
            ),
            "fix the value",
        )];
    };
    let fault = |message: String, fix: &str| Fault {
        message,
        fix: fix.to_string(),
    };
    let mut env = BTreeMap::new();
    let mut faults = Vec::new();
    for (name, v) in vars {
        if name.is_empty() {
            faults.push(fault(
                "has a variable with an empty name".into(),
                "give it a name",
            ));
            continue;
        }
        if name.contains(['=', '\0']) {
            faults.push(fault(
                format!(
                    "variable name `{}` contains `=` or a NUL byte, which a name cannot hold",
                    name.escape_debug()
                ),
                "rename it",
            ));
            continue;
        }
        match v {
            Value::String(text) if text.contains('\0') => faults.push(fault(
                format!(
                    "variable `{name}` has a NUL byte in its value, which the environment \
                     cannot hold"
                ),
                "remove it",
            )),
            Value::String(text) => {
                env.insert(name.clone(), text.clone());
            }
            _ => faults.push(fault(
                format!("variable `{name}` must be a string, got {}", shown(v)),
                &format!(
                    "write it in quotes, e.g. \"{}\"",
                    match v {
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => "value".to_string(),
                    }
                ),
            )),
        }
    }
    if faults.is_empty() {
        s.env = env;
    }
    faults
}

pub fn kind_of(value: &Value) -> &'static str {
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

/// `"a", "b" or "c"`, each item wrapped in `open` and `close`.
fn one_of(items: &[&str], open: &str, close: &str) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{open}{i}{close}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

pub const DOC_TABLE_BEGIN: &str =
    "<!-- keys table: generated from src/spec/settings/keys.rs; a unit test checks it -->";
pub const DOC_TABLE_END: &str = "<!-- end of keys table -->";

/// The key table of docs/settings.md, one row per key.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key | job type | type | default | range | example | meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let (type_doc, range_doc) = match &k.kind {
            Kind::Seconds(_) => (
                "seconds".to_string(),
                format!("0 – {MAX_DURATION_SECS} (10 years)"),
            ),
            Kind::Bool(_) => ("boolean".to_string(), "`true` or `false`".to_string()),
            Kind::Whole { min, max, .. } => ("whole number".to_string(), format!("{min} – {max}")),
            Kind::OneOf(allowed, _) => ("string".to_string(), one_of(allowed, "`\"", "\"`")),
            Kind::Custom {
                type_doc,
                range_doc,
                ..
            } => (type_doc.to_string(), range_doc.to_string()),
        };
        let default = match k.default {
            "null" => "none".to_string(),
            d => format!("`{d}`"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {type_doc} | {default} | {range_doc} | `\"{}\": {}` | {} |\n",
            k.name,
            k.applies.as_str(),
            k.name,
            k.example,
            k.doc
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::settings::{FILE_NAME, parse};
    use std::path::Path;

    const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/settings.md");

    #[test]
    fn docs_settings_md_shows_this_table() {
        let doc = std::fs::read_to_string(DOC).unwrap();
        let want = markdown_table();
        let (Some(begin), Some(end)) = (doc.find(DOC_TABLE_BEGIN), doc.find(DOC_TABLE_END)) else {
            panic!("{DOC} lacks the markers {DOC_TABLE_BEGIN:?} and {DOC_TABLE_END:?}");
        };
        let start = begin + DOC_TABLE_BEGIN.len() + 1;
        let got = doc.get(start..end).unwrap_or_default();
        if got != want && std::env::var_os("JOBHOST_BLESS").is_some_and(|v| v == "1") {
            let fresh = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(DOC, fresh).unwrap();
            return;
        }
        assert_eq!(
            got, want,
            "the key table of docs/settings.md differs from src/spec/settings/keys.rs: \
             rerun with JOBHOST_BLESS=1 to rewrite it from the table, and review the diff"
        );
        for k in KEYS {
            assert!(
                doc.contains(&format!("- **`{}`**", k.name)),
                "docs/settings.md explains `{}` in its key-by-key list",
                k.name
            );
        }
    }

    /// The table's defaults are `JobSettings::default()`, and every example is a
    /// good value that changes the setting.
    #[test]
    fn defaults_and_examples_agree_with_the_settings() {
        for job_type in JobType::ALL {
            let applicable = KEYS.iter().filter(|k| k.applies.includes(job_type));
            let text = format!(
                "{{{}}}",
                applicable
                    .map(|k| format!("\"{}\": {}", k.name, k.default))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (s, w) = parse(text.as_bytes(), Path::new(FILE_NAME), job_type).unwrap();
            assert_eq!(s, JobSettings::default(), "{text}");
            assert!(w.is_empty(), "{w:?}");
        }
        for k in KEYS {
            let job_type = match k.applies {
                Only(t) => t,
                Both => Triggered,
            };
            let text = format!("{{\"{}\": {}}}", k.name, k.example);
            let (s, w) = parse(text.as_bytes(), Path::new(FILE_NAME), job_type).unwrap();
            assert_ne!(s, JobSettings::default(), "{text} changes the setting");
            assert!(w.is_empty(), "{w:?}");
        }
    }

    #[test]
    fn names_are_unique_and_suggestions_come_from_the_table() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(KEYS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
            assert_eq!(lookup(k.name).map(|l| l.name), Some(k.name));
            assert_eq!(suggest(&k.name.to_uppercase()), Some(k.name));
        }
        assert_eq!(suggest("idle_timeot"), Some("idle_timeout"));
        assert_eq!(suggest("stopping-wait-time"), Some("stopping_wait_time"));
        assert_eq!(suggest("zzz"), None);
        assert_eq!(
            one_of(&["a", "b", "c"], "\"", "\""),
            "\"a\", \"b\" or \"c\""
        );
        assert_eq!(one_of(&["a"], "`", "`"), "`a`");
    }
}
