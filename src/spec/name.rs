//! The job name rule of docs/jobs.md: a job folder's name is
//! `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. Names starting with `.` belong to editors and
//! deploy tools and are ignored silently; any other bad name is reported.

use std::ffi::OsStr;

/// The longest valid name, in bytes (all valid names are ASCII).
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    Valid,
    /// Starts with `.`: ignored silently.
    Hidden,
    /// One sentence: what is wrong and how to fix it.
    Invalid(String),
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

pub fn check_name(name: &OsStr) -> NameCheck {
    let Some(name) = name.to_str() else {
        return NameCheck::Invalid(format!(
            "job folder name `{}` is not valid UTF-8: rename the folder using only A-Z a-z 0-9 . _ -",
            name.to_string_lossy()
        ));
    };
    let Some(first) = name.chars().next() else {
        return NameCheck::Invalid(
            "job folder name is empty: give the folder a name of A-Z a-z 0-9 . _ -".to_string(),
        );
    };
    if first == '.' {
        return NameCheck::Hidden;
    }
    if !first.is_ascii_alphanumeric() {
        return NameCheck::Invalid(format!(
            "job folder name `{name}` starts with `{first}`: rename the folder to start with a letter or digit"
        ));
    }
    if !name.chars().all(allowed) {
        return NameCheck::Invalid(format!(
            "job folder name `{name}` has a character other than A-Z a-z 0-9 . _ -: rename the folder"
        ));
    }
    if name.len() > MAX_LEN {
        return NameCheck::Invalid(format!(
            "job folder name `{name}` is {} characters long: rename the folder to at most {MAX_LEN}",
            name.len()
        ));
    }
    NameCheck::Valid
}

pub fn is_valid(name: &str) -> bool {
    check_name(OsStr::new(name)) == NameCheck::Valid
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[derive(Debug, PartialEq)]
    enum Want {
        Valid,
        Hidden,
        Invalid(&'static str),
    }

    #[test]
    fn table() {
        let long64 = "a".repeat(64);
        let long65 = "a".repeat(65);
        let cases: Vec<(&str, Want)> = vec![
            ("etl", Want::Valid),
            ("a", Want::Valid),
            ("0", Want::Valid),
            ("Nightly-Report_v2.1", Want::Valid),
            ("a..b", Want::Valid),
            ("x-", Want::Valid),
            (&long64, Want::Valid),
            (&long65, Want::Invalid("is 65 characters long")),
            ("", Want::Invalid("is empty")),
            ("-x", Want::Invalid("starts with `-`")),
            ("_x", Want::Invalid("starts with `_`")),
            (".hidden", Want::Hidden),
            (".", Want::Hidden),
            ("..", Want::Hidden),
            (".bad name!", Want::Hidden),
            ("bad name!", Want::Invalid("has a character other than")),
            ("a b", Want::Invalid("has a character other than")),
            ("tab\tx", Want::Invalid("has a character other than")),
            ("café", Want::Invalid("has a character other than")),
            ("é", Want::Invalid("starts with `é`")),
            ("日本", Want::Invalid("starts with")),
            ("a/b", Want::Invalid("has a character other than")),
        ];
        for (name, want) in cases {
            let got = match check_name(OsStr::new(name)) {
                NameCheck::Valid => Want::Valid,
                NameCheck::Hidden => Want::Hidden,
                NameCheck::Invalid(msg) => {
                    assert!(msg.contains("rename") || msg.contains("give"), "{msg}");
                    match &want {
                        Want::Invalid(part) if msg.contains(part) => Want::Invalid(part),
                        _ => panic!("{name:?}: unexpected message {msg}"),
                    }
                }
            };
            assert_eq!(got, want, "{name:?}");
            assert_eq!(is_valid(name), want == Want::Valid, "{name:?}");
        }
    }

    #[test]
    fn the_spec_example_message() {
        assert_eq!(
            check_name(OsStr::new("bad name!")),
            NameCheck::Invalid(
                "job folder name `bad name!` has a character other than A-Z a-z 0-9 . _ -: rename the folder"
                    .to_string()
            )
        );
    }

    #[test]
    fn non_utf8_is_invalid() {
        let name = OsStr::from_bytes(b"job\xff");
        match check_name(name) {
            NameCheck::Invalid(msg) => assert!(msg.contains("not valid UTF-8"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
