//! The JSON-with-comments reader: turns `settings.job` text into plain JSON with every
//! byte in place, and finds where each top-level key's value starts.
//!
//! Hand-written on purpose: Kudu's parser takes `//` and `/* */` comments and users
//! copy such files from Kudu, while serde_json refuses them. Blanking the comments
//! byte for byte (instead of removing them) keeps serde_json's line and column
//! pointing at the user's file, and the key scan gives our own problems a position
//! too (serde_json's `Map` keeps none).

use std::collections::HashMap;

/// 1-based line and byte column of `offset` in `text`.
pub fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
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
pub fn strip_comments(text: &str) -> Result<String, (usize, usize)> {
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
pub type KeyPositions = HashMap<String, Vec<(usize, usize)>>;

pub fn key_positions(json: &str) -> KeyPositions {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_ignore_nested_keys_and_strings() {
        let json = "{\"env\": {\"timeout\": \"x\"},\n \"a\": \"timeout\",\n \"timeout\": 1}";
        let pos = key_positions(json);
        assert_eq!(pos["timeout"], vec![(3, 13)]);
        assert_eq!(pos["env"], vec![(1, 9)]);
        assert!(!pos.contains_key("x"));
    }

    #[test]
    fn comments_become_blanks_and_keep_newlines() {
        let text = "{ /* a\nb */ \"k\": \"//x\" } // end";
        let json = strip_comments(text).unwrap_or_default();
        assert_eq!(json.len(), text.len());
        assert_eq!(json.lines().count(), 2);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(value, serde_json::json!({"k": "//x"}));
        assert_eq!(strip_comments("{} /* open"), Err((1, 4)));
        assert_eq!(line_col(b"ab\ncd", 4), (2, 2));
    }
}
