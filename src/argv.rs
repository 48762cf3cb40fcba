//! Arguments as one string and back, by POSIX shell quoting rules.
//!
//! Kudu's API carries a run's arguments as one string; the CLI quotes argv into it
//! and the host splits it back. Splitting honours single quotes, double quotes and
//! backslashes exactly as `sh` does for words, and nothing else: no expansion, no
//! substitution, no globbing, so `$(rm -rf /)` arrives as those bytes. Both work on
//! bytes, so arguments that are not UTF-8 survive the trip.
//!
//! Written by hand rather than with a shell-words crate: `shell-words` works on `str`
//! (a non-UTF-8 argument could not make the trip), and `shlex`, which splits bytes,
//! answers a string it cannot split with `None` alone, while the API's 400 must say
//! which quote is left open. The tests here pin the rules to what `sh` does.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("the arguments end inside a {0} quote: close it")]
    Unclosed(&'static str),
    /// A process's arguments are C strings: a NUL cannot be passed, only cut.
    #[error(
        "argument {0} holds a NUL byte (%00 or \\u0000), which a program's arguments cannot carry: remove it"
    )]
    Nul(usize),
}

/// Refuses arguments that no process could receive: one with a NUL byte (the first
/// such is named, counting from 1).
pub fn refuse_nul(args: &[OsString]) -> Result<(), SplitError> {
    match args.iter().position(|a| a.as_bytes().contains(&0)) {
        Some(i) => Err(SplitError::Nul(i + 1)),
        None => Ok(()),
    }
}

/// Splits `s` into words by POSIX quoting rules.
pub fn split(s: &[u8]) -> Result<Vec<OsString>, SplitError> {
    let mut words = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b' ' | b'\t' | b'\n' => {
                if in_word {
                    words.push(OsString::from_vec(std::mem::take(&mut cur)));
                    in_word = false;
                }
            }
            b'\'' => {
                in_word = true;
                let end = s[i + 1..]
                    .iter()
                    .position(|&b| b == b'\'')
                    .ok_or(SplitError::Unclosed("single"))?;
                cur.extend_from_slice(&s[i + 1..i + 1 + end]);
                i += end + 1;
            }
            b'"' => {
                in_word = true;
                i += 1;
                loop {
                    let Some(&b) = s.get(i) else {
                        return Err(SplitError::Unclosed("double"));
                    };
                    match b {
                        b'"' => break,
                        // Inside double quotes a backslash escapes only these.
                        b'\\' if matches!(s.get(i + 1), Some(b'"' | b'\\' | b'$' | b'`')) => {
                            cur.push(s[i + 1]);
                            i += 1;
                        }
                        b'\\' if s.get(i + 1) == Some(&b'\n') => i += 1,
                        _ => cur.push(b),
                    }
                    i += 1;
                }
            }
            b'\\' => match s.get(i + 1) {
                Some(b'\n') => i += 1,
                Some(&next) => {
                    in_word = true;
                    cur.push(next);
                    i += 1;
                }
                None => {
                    in_word = true;
                    cur.push(b'\\');
                }
            },
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
        i += 1;
    }
    if in_word {
        words.push(OsString::from_vec(cur));
    }
    refuse_nul(&words)?;
    Ok(words)
}

/// Quotes argv into one string that [`split`] (and `sh`) turn back into the same argv.
pub fn quote(args: &[OsString]) -> OsString {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        quote_into(arg, &mut out);
    }
    OsString::from_vec(out)
}

fn quote_into(arg: &OsStr, out: &mut Vec<u8>) {
    let bytes = arg.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    if plain {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn split_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  a  b ", &["a", "b"]),
            ("'a b' c", &["a b", "c"]),
            (r#""a \"q\" $x" y"#, &[r#"a "q" $x"#, "y"]),
            (r"a\ b", &["a b"]),
            ("''", &[""]),
            (r#"'it'\''s'"#, &["it's"]),
            ("$(rm -rf /) `id` *", &["$(rm", "-rf", "/)", "`id`", "*"]),
            ("'$(rm -rf /)'", &["$(rm -rf /)"]),
            ("a'b'\"c\"d", &["abcd"]),
            ("'line1\nline2'", &["line1\nline2"]),
            (r#""\a""#, &[r"\a"]),
        ];
        for (input, want) in cases {
            assert_eq!(split(input.as_bytes()).unwrap(), words(want), "{input:?}");
        }
    }

    #[test]
    fn unclosed_quotes_are_errors() {
        assert_eq!(split(b"'abc"), Err(SplitError::Unclosed("single")));
        assert_eq!(split(b"\"abc"), Err(SplitError::Unclosed("double")));
    }

    #[test]
    fn a_nul_in_arguments_is_refused_naming_the_argument() {
        assert_eq!(split(b"a b\0c"), Err(SplitError::Nul(2)));
        assert_eq!(split(b"'\0'"), Err(SplitError::Nul(1)));
        assert_eq!(refuse_nul(&words(&["a", "b"])), Ok(()));
        assert_eq!(
            refuse_nul(&[OsString::from("x"), OsString::from("y\0")]),
            Err(SplitError::Nul(2))
        );
        assert!(SplitError::Nul(2).to_string().contains("NUL"));
    }

    #[test]
    fn quote_then_split_is_identity_for_awkward_arguments() {
        let samples: Vec<OsString> = vec![
            "".into(),
            "plain".into(),
            "two words".into(),
            "it's".into(),
            "\"dq\"".into(),
            "back\\slash".into(),
            "$(rm -rf /)".into(),
            "new\nline".into(),
            "tab\there".into(),
            OsString::from_vec(vec![0xff, 0xfe, b'x']),
            "ünïcødé".into(),
        ];
        for a in &samples {
            for b in &samples {
                let argv = vec![a.clone(), b.clone()];
                assert_eq!(split(quote(&argv).as_bytes()).unwrap(), argv);
            }
        }
    }
}
