//! Framing of job output into log lines: the line format of docs/logs.md
//! (`[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] text`) and the splitter that cuts a
//! byte stream into lines. Pure code without I/O; the sink in `super` owns the file.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// Where a line came from; decides the label in its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    SysInfo,
    SysError,
}

impl Stream {
    pub fn label(self) -> &'static str {
        match self {
            Stream::Stdout => "INFO",
            Stream::Stderr => "ERROR",
            Stream::SysInfo => "SYS INFO",
            Stream::SysError => "SYS ERROR",
        }
    }
}

/// Longest line written as one log line; longer lines are cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Appends `[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] ` + line + '\n' to `out`. `line`
/// excludes its newline. Bytes are copied verbatim (not UTF-8 checked).
pub fn format_line(
    out: &mut Vec<u8>,
    at: DateTime<Utc>,
    run_id: &str,
    stream: Stream,
    line: &[u8],
) {
    out.push(b'[');
    format_timestamp(out, at);
    push_after_stamp(out, run_id, stream);
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Appends the prefix of a line, `[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] `, with the
/// timestamp already formatted (see [`StampCache`]). The sink builds it once per chunk
/// of output and copies it in front of each line, so a flood pays for the formatting
/// once per chunk, not once per line.
pub fn format_prefix(out: &mut Vec<u8>, stamp: &[u8], run_id: &str, stream: Stream) {
    out.push(b'[');
    out.extend_from_slice(stamp);
    push_after_stamp(out, run_id, stream);
}

fn push_after_stamp(out: &mut Vec<u8>, run_id: &str, stream: Stream) {
    out.extend_from_slice(b" > ");
    out.extend_from_slice(run_id.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(stream.label().as_bytes());
    out.extend_from_slice(b"] ");
}

/// Appends `at` as RFC 3339 UTC with milliseconds (`2026-11-30T10:00:00.123Z`), the
/// same text as chrono's `to_rfc3339_opts(SecondsFormat::Millis, true)` but without
/// allocating (for years 0 to 9999).
pub fn format_timestamp(out: &mut Vec<u8>, at: DateTime<Utc>) {
    let t = at.naive_utc();
    let year = t.year();
    match u32::try_from(year) {
        Ok(y) if y <= 9999 => push_digits(out, y, 4),
        // Outside four digits RFC 3339 has no answer; chrono writes a sign, so do we.
        _ => out.extend_from_slice(format!("{year:+05}").as_bytes()),
    }
    // chrono keeps a leap second as nanoseconds >= 1e9 of second 59; it is shown as 60.
    let (second, nanos) = match t.nanosecond() {
        n if n >= 1_000_000_000 => (t.second() + 1, n - 1_000_000_000),
        n => (t.second(), n),
    };
    out.push(b'-');
    push_digits(out, t.month(), 2);
    out.push(b'-');
    push_digits(out, t.day(), 2);
    out.push(b'T');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, second, 2);
    out.push(b'.');
    push_digits(out, nanos / 1_000_000, 3);
    out.push(b'Z');
}

fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut digits = [b'0'; 4];
    for slot in digits[..width].iter_mut().rev() {
        // `value % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// The formatted timestamp of the latest millisecond seen. Lines arrive in bursts
/// within the same millisecond, so most lines reuse the text.
#[derive(Debug, Default)]
pub struct StampCache {
    key: Option<(NaiveDate, u32, u32)>,
    text: Vec<u8>,
}

impl StampCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of `at`, truncated to milliseconds.
    pub fn get(&mut self, at: DateTime<Utc>) -> &[u8] {
        let t = at.naive_utc();
        // Keyed by parts, not by epoch milliseconds: a leap second's 1000..1999 ms
        // would collide with the next second's.
        let key = (
            t.date(),
            t.num_seconds_from_midnight(),
            t.nanosecond() / 1_000_000,
        );
        if self.key != Some(key) {
            self.text.clear();
            format_timestamp(&mut self.text, at);
            self.key = Some(key);
        }
        &self.text
    }
}

/// Splits a byte stream into lines. Lines are emitted without their '\n' (a `\r`
/// before it is kept: bytes are never altered). A line longer than the maximum is
/// emitted in pieces of the maximum, each its own log line. `finish` emits a final
/// partial line (no newline at EOF) if any.
///
/// Complete lines are borrowed straight from the chunk; only an incomplete tail is
/// copied into the carry buffer, so a flood costs no allocation per line.
#[derive(Debug)]
pub struct LineSplitter {
    carry: Vec<u8>,
    max: usize,
    /// The last thing emitted was a piece of exactly `max` bytes cut from a longer run.
    /// If the very next byte is '\n', it ends that piece: a line of exactly `max` bytes
    /// is one log line, not a full piece followed by an empty line.
    after_cut: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::with_max(MAX_LINE)
    }

    /// A splitter cutting lines longer than `max` bytes (at least 1).
    pub fn with_max(max: usize) -> Self {
        Self {
            carry: Vec::new(),
            max: max.max(1),
            after_cut: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            // Invariant: the carry is shorter than max, so `room` is at least 1.
            let room = self.max - self.carry.len();
            let window = &rest[..room.min(rest.len())];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    self.carry.extend_from_slice(&window[..i]);
                    emit(&self.carry);
                    self.carry.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.carry.extend_from_slice(window);
                    rest = &rest[window.len()..];
                    if self.carry.len() < self.max {
                        return;
                    }
                    emit(&self.carry);
                    self.carry.clear();
                    self.after_cut = true;
                }
            }
        }
        while let Some(&first) = rest.first() {
            if self.after_cut {
                self.after_cut = false;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            let window = &rest[..self.max.min(rest.len())];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    emit(&window[..i]);
                    rest = &rest[i + 1..];
                }
                None if window.len() == self.max => {
                    emit(window);
                    self.after_cut = true;
                    rest = &rest[window.len()..];
                }
                None => {
                    self.carry.extend_from_slice(window);
                    break;
                }
            }
        }
    }

    /// End of stream: emits the final line if it had no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.carry.is_empty() {
            emit(&self.carry);
            self.carry.clear();
        }
        self.after_cut = false;
    }

    /// True when bytes of an unfinished line are waiting for their newline.
    pub fn has_partial(&self) -> bool {
        !self.carry.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, SecondsFormat, TimeZone};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
            + chrono::Duration::milliseconds(ms.into())
    }

    fn formatted(at: DateTime<Utc>, run_id: &str, stream: Stream, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        format_line(&mut out, at, run_id, stream, line);
        out
    }

    #[test]
    fn labels_follow_the_spec() {
        let table = [
            (Stream::Stdout, "INFO"),
            (Stream::Stderr, "ERROR"),
            (Stream::SysInfo, "SYS INFO"),
            (Stream::SysError, "SYS ERROR"),
        ];
        for (stream, label) in table {
            assert_eq!(stream.label(), label);
        }
    }

    #[test]
    fn golden_lines() {
        let table: [(DateTime<Utc>, Stream, &[u8], &str); 6] = [
            (
                at(2026, 11, 30, 10, 0, 0, 123),
                Stream::Stdout,
                b"hello",
                "[2026-11-30T10:00:00.123Z > 9a2e7d: INFO] hello\n",
            ),
            (
                at(2026, 11, 30, 10, 0, 0, 0),
                Stream::Stderr,
                b"oops",
                "[2026-11-30T10:00:00.000Z > 9a2e7d: ERROR] oops\n",
            ),
            (
                at(2026, 11, 30, 10, 0, 0, 999),
                Stream::SysInfo,
                b"started, pid 42",
                "[2026-11-30T10:00:00.999Z > 9a2e7d: SYS INFO] started, pid 42\n",
            ),
            (
                at(2026, 12, 31, 23, 59, 59, 999),
                Stream::SysError,
                b"exited with code 3",
                "[2026-12-31T23:59:59.999Z > 9a2e7d: SYS ERROR] exited with code 3\n",
            ),
            (
                at(2027, 1, 1, 0, 0, 0, 0),
                Stream::Stdout,
                b"",
                "[2027-01-01T00:00:00.000Z > 9a2e7d: INFO] \n",
            ),
            (
                at(1999, 12, 31, 23, 59, 59, 1),
                Stream::Stdout,
                b"  spaced\t",
                "[1999-12-31T23:59:59.001Z > 9a2e7d: INFO]   spaced\t\n",
            ),
        ];
        for (time, stream, line, expected) in table {
            let out = formatted(time, "9a2e7d", stream, line);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn sub_millisecond_digits_are_truncated_not_rounded() {
        let t = at(2026, 11, 30, 10, 0, 0, 999) + chrono::Duration::microseconds(999);
        let out = formatted(t, "abcdef", Stream::Stdout, b"x");
        assert!(out.starts_with(b"[2026-11-30T10:00:00.999Z "));
    }

    #[test]
    fn bytes_are_copied_verbatim() {
        let line = b"caf\xc3\xa9 \xff\xfe\x00 end\r";
        let out = formatted(at(2026, 1, 2, 3, 4, 5, 6), "000001", Stream::Stdout, line);
        let mut expected = b"[2026-01-02T03:04:05.006Z > 000001: INFO] ".to_vec();
        expected.extend_from_slice(line);
        expected.push(b'\n');
        assert_eq!(out, expected);
    }

    #[test]
    fn timestamps_match_chrono_rfc3339() {
        let mut times = vec![
            at(0, 1, 1, 0, 0, 0, 0),
            at(9999, 12, 31, 23, 59, 59, 999),
            at(1970, 1, 1, 0, 0, 0, 0),
            at(2024, 2, 29, 12, 30, 45, 500),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
        ];
        // A leap second, which chrono can represent.
        let leap = NaiveDateTime::parse_from_str("2016-12-31 23:59:60.250", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc();
        times.push(leap);
        let mut t = at(2025, 12, 31, 23, 0, 0, 0);
        for step in 0..5000 {
            times.push(t);
            t += chrono::Duration::milliseconds(1_234_567 + step);
        }
        for time in times {
            let mut out = Vec::new();
            format_timestamp(&mut out, time);
            let expected = time.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{time:?}");
        }
    }

    #[test]
    fn stamp_cache_changes_with_the_millisecond() {
        let mut cache = StampCache::new();
        let t = at(2026, 11, 30, 10, 0, 0, 5);
        assert_eq!(cache.get(t), b"2026-11-30T10:00:00.005Z");
        let same_ms = t + chrono::Duration::microseconds(700);
        assert_eq!(cache.get(same_ms), b"2026-11-30T10:00:00.005Z");
        let next_ms = t + chrono::Duration::milliseconds(1);
        assert_eq!(cache.get(next_ms), b"2026-11-30T10:00:00.006Z");
        let next_day = t + chrono::Duration::days(1);
        assert_eq!(cache.get(next_day), b"2026-12-01T10:00:00.005Z");
        let leap = NaiveDateTime::parse_from_str("2016-12-31 23:59:60.005", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc();
        let after_leap = at(2017, 1, 1, 0, 0, 0, 5);
        assert_eq!(cache.get(leap), b"2016-12-31T23:59:60.005Z");
        assert_eq!(cache.get(after_leap), b"2017-01-01T00:00:00.005Z");
    }

    #[test]
    fn prefix_plus_line_is_the_formatted_line() {
        let t = at(2026, 11, 30, 10, 0, 0, 42);
        let mut cache = StampCache::new();
        let mut out = Vec::new();
        format_prefix(&mut out, cache.get(t), "9a2e7d", Stream::Stderr);
        assert_eq!(out, b"[2026-11-30T10:00:00.042Z > 9a2e7d: ERROR] ");
        out.extend_from_slice(b"x y\n");
        assert_eq!(out, formatted(t, "9a2e7d", Stream::Stderr, b"x y"));
    }

    /// What the splitter must produce, written the obvious way.
    fn reference_split(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        // The part after the last newline is a final line only if it is not empty.
        let last = segments.pop().unwrap_or_default();
        for segment in segments {
            if segment.is_empty() {
                lines.push(Vec::new());
            }
            lines.extend(segment.chunks(max).map(<[u8]>::to_vec));
        }
        lines.extend(last.chunks(max).map(<[u8]>::to_vec));
        lines
    }

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::with_max(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l.to_vec()));
        }
        splitter.finish(|l| lines.push(l.to_vec()));
        assert!(!splitter.has_partial());
        lines
    }

    const SAMPLE: &[u8] =
        b"first\r\n\n\nsecond line\xff\xfe\nabcd\nabcdefgh\nabcdefghi\n\xc3\xa9x\ntail";

    #[test]
    fn every_two_cut_split_of_a_sample_gives_the_same_lines() {
        for max in [1, 3, 4, 5, 8, MAX_LINE] {
            let expected = reference_split(SAMPLE, max);
            for i in 0..=SAMPLE.len() {
                for j in i..=SAMPLE.len() {
                    let chunks = [&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]];
                    assert_eq!(
                        split(&chunks, max),
                        expected,
                        "max {max}, cuts at {i} and {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_lines() {
        for max in [1, 2, 4, 9, MAX_LINE] {
            let chunks: Vec<&[u8]> = SAMPLE.chunks(1).collect();
            assert_eq!(
                split(&chunks, max),
                reference_split(SAMPLE, max),
                "max {max}"
            );
        }
    }

    #[test]
    fn reference_split_matches_the_contract() {
        // Guard the oracle itself on the cases that matter most.
        assert_eq!(reference_split(b"abcd\n", 4), vec![b"abcd".to_vec()]);
        assert_eq!(
            reference_split(b"abcde\n", 4),
            vec![b"abcd".to_vec(), b"e".to_vec()]
        );
        assert_eq!(
            reference_split(b"abcdefgh\n\n", 4),
            vec![b"abcd".to_vec(), b"efgh".to_vec(), Vec::new()]
        );
        assert_eq!(reference_split(b"", 4), Vec::<Vec<u8>>::new());
        assert_eq!(reference_split(b"x", 4), vec![b"x".to_vec()]);
    }

    #[test]
    fn exact_max_line_is_one_line() {
        let mut input = vec![b'a'; MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let lines = split(&[&input], MAX_LINE);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], vec![b'a'; MAX_LINE]);
        assert_eq!(lines[1], b"next");
    }

    #[test]
    fn exact_max_line_with_newline_in_the_next_chunk_is_one_line() {
        let body = vec![b'a'; MAX_LINE];
        let lines = split(&[&body[..100], &body[100..], b"\n", b"\n"], MAX_LINE);
        assert_eq!(lines, vec![body, Vec::new()]);
    }

    #[test]
    fn max_plus_one_line_is_two_pieces() {
        let mut input = vec![b'b'; MAX_LINE + 1];
        input.push(b'\n');
        let lines = split(&[&input], MAX_LINE);
        assert_eq!(lines, vec![vec![b'b'; MAX_LINE], b"b".to_vec()]);
    }

    #[test]
    fn long_line_in_seven_byte_chunks() {
        let len = 200 * 1024;
        let mut input: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        input.extend_from_slice(b"\nafter\n");
        let chunks: Vec<&[u8]> = input.chunks(7).collect();
        let lines = split(&chunks, MAX_LINE);
        let pieces: Vec<&[u8]> = input[..len].chunks(MAX_LINE).collect();
        assert_eq!(lines.len(), pieces.len() + 1);
        for (line, piece) in lines.iter().zip(&pieces) {
            assert_eq!(line.as_slice(), *piece);
        }
        assert_eq!(lines.last().unwrap(), b"after");
        assert_eq!(lines.concat().len(), len + 5);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(split(&[b"\n\n\n"], MAX_LINE), vec![Vec::<u8>::new(); 3]);
        assert_eq!(
            split(&[b"\n", b"", b"\n"], MAX_LINE),
            vec![Vec::<u8>::new(); 2]
        );
    }

    #[test]
    fn crlf_keeps_the_carriage_return() {
        assert_eq!(
            split(&[b"a\r", b"\nb\r\n"], MAX_LINE),
            vec![b"a\r".to_vec(), b"b\r".to_vec()]
        );
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let input = b"\xff\xfe\xfd\n\x00\x01\n\xed\xa0\x80\n";
        assert_eq!(
            split(&[input], MAX_LINE),
            vec![
                b"\xff\xfe\xfd".to_vec(),
                b"\x00\x01".to_vec(),
                b"\xed\xa0\x80".to_vec()
            ]
        );
    }

    #[test]
    fn final_line_without_newline_waits_for_finish() {
        let mut splitter = LineSplitter::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        splitter.push(b"one\ntwo", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"one".to_vec()]);
        assert!(splitter.has_partial());
        splitter.finish(|l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(!splitter.has_partial());
        splitter.finish(|_| panic!("nothing left to emit"));
    }

    #[test]
    fn empty_stream_emits_nothing() {
        assert!(split(&[], MAX_LINE).is_empty());
        assert!(split(&[b"", b""], MAX_LINE).is_empty());
    }

    #[test]
    fn complete_lines_are_borrowed_from_the_chunk() {
        let chunk = b"alpha\nbeta\ngam";
        let range = chunk.as_ptr_range();
        let mut splitter = LineSplitter::new();
        let mut count = 0;
        splitter.push(chunk, |l| {
            assert!(range.contains(&l.as_ptr()));
            count += 1;
        });
        assert_eq!(count, 2);
    }
}
