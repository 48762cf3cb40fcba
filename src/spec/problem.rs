//! One thing wrong with what a job folder declares, kept structured from the reader
//! that found it to every place that shows it: the API's job objects and its 400
//! answers carry it as JSON, `jobhost check` and the job's `error` string print its
//! one-line form. Flattening it early would lose the line and the key a dashboard or
//! editor needs to point at.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `line`/`column` are 1-based; the column counts bytes, as serde_json and most
/// editors' status lines do. `fix` says what to do about it, as an imperative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
    pub fix: String,
}

impl Problem {
    /// A problem with the whole file (no position, no key).
    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>, fix: &str) -> Self {
        Problem {
            file: file.into(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
            fix: fix.to_string(),
        }
    }

    /// At a position of the file.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

/// `FILE[:LINE[:COLUMN]]: [key `KEY`: ]MESSAGE; FIX`, the form compilers use, so
/// editors and terminals can jump to it.
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
        f.write_str(&self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// A path that is not UTF-8 is still shown (serde's own `PathBuf` impl fails on it,
/// and one odd folder name must not make a whole listing unanswerable).
fn lossy_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_and_json() {
        let p = Problem {
            key: Some("timeout".into()),
            ..Problem::whole_file("a/settings.job", "must be >= 0, got -1", "fix the value")
        }
        .at(3, 14);
        assert_eq!(
            p.to_string(),
            "a/settings.job:3:14: key `timeout`: must be >= 0, got -1; fix the value"
        );
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"file": "a/settings.job", "line": 3, "column": 14,
                "key": "timeout", "message": "must be >= 0, got -1", "fix": "fix the value"})
        );
        let whole = Problem::whole_file("a/settings.job", "m", "");
        assert_eq!(whole.to_string(), "a/settings.job: m");
        let back: Problem = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
