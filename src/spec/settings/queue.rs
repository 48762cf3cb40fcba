//! The `queue` object of a triggered job's `settings.job` (docs/queues.md): its own
//! small table of keys, validated like the top-level ones (every problem at once,
//! each with its fix), so `jobhost check`, the API and the job's status say the same.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::keys::{Fault, Key};
use super::{JobSettings, MAX_DURATION_SECS};

/// Largest `max_payload_bytes`: 64 MiB.
pub const MAX_PAYLOAD_LIMIT: u64 = 64 * 1024 * 1024;
pub const MAX_CONCURRENCY: u64 = 1024;
pub const MAX_ATTEMPTS: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub concurrency: u32,
    pub max_attempts: u32,
    pub retry_delay: Duration,
    pub retry_max_delay: Duration,
    pub dedupe_window: Duration,
    pub retention: Duration,
    pub max_payload_bytes: u64,
    /// As written; relative paths are read from the job's data folder in LOGS.
    pub inbox: Option<PathBuf>,
    pub reply_to: Option<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            concurrency: 1,
            max_attempts: 5,
            retry_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(3600),
            dedupe_window: Duration::from_secs(86_400),
            retention: Duration::from_secs(604_800),
            max_payload_bytes: 1_048_576,
            inbox: None,
            reply_to: None,
        }
    }
}

/// One key of the `queue` object.
pub struct SubKey {
    pub name: &'static str,
    pub default: &'static str,
    pub example: &'static str,
    pub doc: &'static str,
    check: fn(&SubKey, &Value, &mut QueueSettings) -> Result<(), Fault>,
}

pub const SUBKEYS: &[SubKey] = &[
    SubKey {
        name: "concurrency",
        default: "1",
        example: "4",
        doc: "message runs of this job at once on one host (1 to 1024)",
        check: |k, v, q| {
            k.whole(v, 1, MAX_CONCURRENCY)
                .map(|n| q.concurrency = n as u32)
        },
    },
    SubKey {
        name: "max_attempts",
        default: "5",
        example: "3",
        doc: "attempts before a message is dead-lettered (1 to 1000)",
        check: |k, v, q| {
            k.whole(v, 1, MAX_ATTEMPTS)
                .map(|n| q.max_attempts = n as u32)
        },
    },
    SubKey {
        name: "retry_delay",
        default: "10",
        example: "30",
        doc: "seconds before the 2nd attempt; doubles per attempt, up to 10% jitter",
        check: |k, v, q| k.seconds(v).map(|d| q.retry_delay = d),
    },
    SubKey {
        name: "retry_max_delay",
        default: "3600",
        example: "600",
        doc: "cap of the retry delay, in seconds",
        check: |k, v, q| k.seconds(v).map(|d| q.retry_max_delay = d),
    },
    SubKey {
        name: "dedupe_window",
        default: "86400",
        example: "3600",
        doc: "seconds an idempotency key is remembered",
        check: |k, v, q| k.seconds(v).map(|d| q.dedupe_window = d),
    },
    SubKey {
        name: "retention",
        default: "604800",
        example: "86400",
        doc: "seconds finished (Succeeded, Dead, Cancelled) messages are kept",
        check: |k, v, q| k.seconds(v).map(|d| q.retention = d),
    },
    SubKey {
        name: "max_payload_bytes",
        default: "1048576",
        example: "65536",
        doc: "larger payloads are refused (413); at most 67108864 (64 MiB)",
        check: |k, v, q| {
            k.whole(v, 1, MAX_PAYLOAD_LIMIT)
                .map(|n| q.max_payload_bytes = n)
        },
    },
    SubKey {
        name: "inbox",
        default: "null",
        example: "\"/srv/incoming/photos\"",
        doc: "a folder whose new files become messages (relative: in the job's data folder in LOGS)",
        check: |k, v, q| match v {
            Value::String(s) if !s.trim().is_empty() && !s.contains('\0') => {
                q.inbox = Some(PathBuf::from(s));
                Ok(())
            }
            _ => Err(k.fault(format!("must be a folder path, got {}", short(v)))),
        },
    },
    SubKey {
        name: "reply_to",
        default: "null",
        example: "\"http://127.0.0.1:8080/done\"",
        doc: "default callback URL for the job's messages (http or https)",
        check: |k, v, q| match v {
            Value::String(s) => match check_reply_to(s) {
                Ok(()) => {
                    q.reply_to = Some(s.clone());
                    Ok(())
                }
                Err(why) => Err(k.fault(why)),
            },
            _ => Err(k.fault(format!("must be an http(s) URL, got {}", short(v)))),
        },
    },
];

/// Why `url` cannot be a callback URL: it must be absolute http or https with a host.
pub fn check_reply_to(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not an absolute http(s) URL"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "`{url}` uses {scheme}: only http and https callbacks are sent"
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` has no host or holds spaces"));
    }
    Ok(())
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "an object".into(),
        Value::Array(_) => "an array".into(),
        _ => {
            let s = v.to_string();
            match s.chars().count() > 40 {
                true => format!("{}...", s.chars().take(40).collect::<String>()),
                false => s,
            }
        }
    }
}

impl SubKey {
    fn fault(&self, message: String) -> Fault {
        Fault {
            message: format!("`{}` {message}", self.name),
            fix: format!(
                "fix the value, e.g. `\"queue\": {{\"{}\": {}}}`",
                self.name, self.example
            ),
        }
    }

    fn whole(&self, v: &Value, min: u64, max: u64) -> Result<u64, Fault> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.fault(format!(
                "must be a whole number from {min} to {max}, got {}",
                short(v)
            ))),
        }
    }

    fn seconds(&self, v: &Value) -> Result<Duration, Fault> {
        self.whole(v, 0, MAX_DURATION_SECS).map(Duration::from_secs)
    }
}

/// The `queue` key's validator (see `keys::KEYS`).
pub fn check(key: &Key, value: &Value, s: &mut JobSettings) -> Vec<Fault> {
    let Value::Object(map) = value else {
        return vec![Fault {
            message: format!(
                "must be an object such as {{}} or {{\"concurrency\": 4}}, got {}",
                short(value)
            ),
            fix: format!("write `\"{}\": {{}}` for the defaults", key.name),
        }];
    };
    let mut q = QueueSettings::default();
    let mut faults = Vec::new();
    for (name, v) in map {
        if v.is_null() {
            continue;
        }
        match SUBKEYS.iter().find(|k| k.name == name) {
            Some(k) => faults.extend((k.check)(k, v, &mut q).err()),
            None => {
                let close = SUBKEYS
                    .iter()
                    .map(|k| (strsim::levenshtein(name, k.name), k.name))
                    .filter(|(d, _)| *d <= 2)
                    .min_by_key(|(d, _)| *d);
                let known: Vec<&str> = SUBKEYS.iter().map(|k| k.name).collect();
                faults.push(Fault {
                    message: format!("has an unknown key `{name}`"),
                    fix: match close {
                        Some((_, k)) => format!("did you mean `{k}`?"),
                        None => format!("the keys are {}", known.join(", ")),
                    },
                });
            }
        }
    }
    if q.retry_max_delay < q.retry_delay {
        faults.push(Fault {
            message: format!(
                "`retry_max_delay` ({}) is less than `retry_delay` ({})",
                q.retry_max_delay.as_secs(),
                q.retry_delay.as_secs()
            ),
            fix: "make `retry_max_delay` at least `retry_delay`".into(),
        });
    }
    if faults.is_empty() {
        s.queue = Some(q);
    }
    faults
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<QueueSettings, Vec<Fault>> {
        let key = super::super::keys::lookup("queue").unwrap();
        let mut s = JobSettings::default();
        let faults = check(key, &v, &mut s);
        match faults.is_empty() {
            true => Ok(s.queue.unwrap()),
            false => Err(faults),
        }
    }

    #[test]
    fn empty_object_gives_the_documented_defaults() {
        let q = parse(json!({})).unwrap();
        assert_eq!(q, QueueSettings::default());
        for k in SUBKEYS {
            let v: Value = serde_json::from_str(k.default).unwrap();
            if !v.is_null() {
                assert_eq!(parse(json!({ k.name: v })).unwrap(), q, "{}", k.name);
            }
        }
    }

    #[test]
    fn examples_are_accepted_and_change_the_value() {
        for k in SUBKEYS {
            let v: Value = serde_json::from_str(k.example).unwrap();
            let q = parse(json!({ k.name: v })).unwrap();
            assert_ne!(q, QueueSettings::default(), "{}", k.name);
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let table = [
            (
                json!({"concurrency": 0}),
                "`concurrency` must be a whole number from 1",
            ),
            (json!({"concurrency": 2000}), "`concurrency`"),
            (json!({"max_attempts": -1}), "`max_attempts`"),
            (json!({"retry_delay": "soon"}), "`retry_delay`"),
            (
                json!({"max_payload_bytes": 100_000_000u64}),
                "`max_payload_bytes`",
            ),
            (json!({"inbox": ""}), "`inbox` must be a folder path"),
            (json!({"inbox": 5}), "`inbox`"),
            (json!({"reply_to": "ftp://x/y"}), "only http and https"),
            (json!({"reply_to": "nowhere"}), "not an absolute"),
            (json!({"reply_to": "http:///x"}), "no host"),
            (json!({"concurency": 2}), "unknown key `concurency`"),
            (
                json!({"retry_delay": 60, "retry_max_delay": 10}),
                "less than",
            ),
            (json!([1]), "must be an object"),
        ];
        for (v, want) in table {
            let faults = parse(v.clone()).unwrap_err();
            assert!(
                faults
                    .iter()
                    .any(|f| f.message.contains(want) && !f.fix.is_empty()),
                "{v}: {faults:?}"
            );
        }
        let faults = parse(json!({"concurency": 2})).unwrap_err();
        assert!(faults[0].fix.contains("`concurrency`"), "{faults:?}");
    }

    /// docs/queues.md shows this table (`JOBHOST_BLESS=1` rewrites it).
    #[test]
    fn docs_queues_md_shows_this_table() {
        const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/queues.md");
        let (begin, end) = ("<!-- queue keys -->\n", "<!-- end of queue keys -->");
        let mut want = String::from("| key | default | meaning |\n|---|---|---|\n");
        for k in SUBKEYS {
            let default = match k.default {
                "null" => "none".to_string(),
                d => format!("`{d}`"),
            };
            want += &format!("| `{}` | {default} | {} |\n", k.name, k.doc);
        }
        let doc = std::fs::read_to_string(DOC).unwrap();
        let start = doc.find(begin).unwrap() + begin.len();
        let stop = doc.find(end).unwrap();
        if doc[start..stop] != want && std::env::var_os("JOBHOST_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(DOC, format!("{}{want}{}", &doc[..start], &doc[stop..])).unwrap();
            return;
        }
        assert_eq!(
            doc[start..stop],
            want,
            "docs/queues.md's key table differs from src/spec/settings/queue.rs: rerun with JOBHOST_BLESS=1"
        );
    }

    #[test]
    fn every_fault_at_once() {
        let faults = parse(json!({"concurrency": 0, "max_attempts": 0, "inbox": 1})).unwrap_err();
        assert_eq!(faults.len(), 3, "{faults:?}");
    }
}
