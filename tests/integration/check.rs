//! `jobhost check`: offline validation of a jobs folder.

use std::ffi::OsString;
use std::path::Path;

use chrono::{DateTime, Timelike, Utc};

use crate::support::*;

fn check(jobs: &Path) -> (Option<i32>, String) {
    run_cli(&[
        OsString::from("check"),
        OsString::from("--jobs"),
        jobs.into(),
    ])
}

#[test]
fn check_passes_a_good_folder_and_lists_every_job() {
    let sb = Sandbox::new();
    sb.write_job(
        CONTINUOUS,
        "web",
        &[("run.sh", "#!/bin/bash\nexec sleep 1\n")],
    );
    sb.write_job(
        CONTINUOUS,
        "worker",
        &[
            ("settings.job", r#"{"stopping_wait_time": 10}"#),
            ("run.py", "print('hi')\n"),
        ],
    );
    sb.write_job(
        TRIGGERED,
        "nightly",
        &[("run.sh", "#!/bin/bash\necho hi\n")],
    );
    let (code, out) = check(&sb.jobs);
    assert_eq!(code, Some(0), "check of a good folder exits 0:\n{out}");
    for job in ["continuous/web", "continuous/worker", "triggered/nightly"] {
        assert!(out.contains(job), "check lists {job}:\n{out}");
    }
}

#[test]
fn check_reports_bad_settings_with_file_line_and_key() {
    let sb = Sandbox::new();
    sb.write_job(
        CONTINUOUS,
        "good",
        &[("run.sh", "#!/bin/bash\nexec sleep 1\n")],
    );
    sb.write_job(
        CONTINUOUS,
        "typo",
        &[
            (
                "settings.job",
                "{\n  \"stopping_wait_time\": 5,\n  \"is_singleton\": \"yes\"\n}\n",
            ),
            ("run.sh", "#!/bin/bash\nexec sleep 1\n"),
        ],
    );
    let (code, out) = check(&sb.jobs);
    assert_eq!(code, Some(1), "a bad settings.job fails the check:\n{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("is_singleton")).collect();
    assert!(!lines.is_empty(), "the error names the key:\n{out}");
    let l = lines.join("\n");
    assert!(l.contains("settings.job"), "and the file:\n{out}");
    assert!(
        l.contains("line 3") || l.contains(":3:"),
        "and the line (3):\n{out}"
    );
    assert!(out.contains("continuous/typo"), "{out}");
}

#[test]
fn check_names_a_folder_with_a_bad_name() {
    let sb = Sandbox::new();
    sb.write_job(
        CONTINUOUS,
        "good",
        &[("run.sh", "#!/bin/bash\nexec sleep 1\n")],
    );
    sb.write_job(
        CONTINUOUS,
        "bad name!",
        &[("run.sh", "#!/bin/bash\nexec sleep 1\n")],
    );
    let (code, out) = check(&sb.jobs);
    assert_eq!(code, Some(1), "a bad folder name fails the check:\n{out}");
    assert!(out.contains("bad name!"), "the folder is named:\n{out}");
    assert!(out.contains("continuous/good"), "{out}");
}

#[test]
fn check_shows_the_next_fire_times_of_a_schedule() {
    let sb = Sandbox::new();
    sb.write_job(
        TRIGGERED,
        "every5",
        &[
            ("settings.job", r#"{"schedule": "0 */5 * * * *"}"#),
            ("run.sh", "#!/bin/bash\necho hi\n"),
        ],
    );
    let before = Utc::now();
    let (code, out) = check(&sb.jobs);
    assert_eq!(code, Some(0), "{out}");
    // Every RFC 3339 time in the output, in order of appearance, without repeats.
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    for word in out.split(|c: char| c.is_whitespace() || "()[],;".contains(c)) {
        if let Ok(t) = DateTime::parse_from_rfc3339(word) {
            let t = t.with_timezone(&Utc);
            if !times.contains(&t) {
                times.push(t);
            }
        }
    }
    assert!(times.len() >= 3, "three next fire times are shown:\n{out}");
    let next = &times[..3];
    assert!(next.windows(2).all(|w| w[0] < w[1]), "in order:\n{out}");
    assert!(next[0] > before, "in the future:\n{out}");
    for t in next {
        assert!(
            t.second() == 0 && t.minute() % 5 == 0 && t.nanosecond() == 0,
            "{t} does not match `0 */5 * * * *`:\n{out}"
        );
    }
    assert_eq!(
        (next[1] - next[0]).num_minutes(),
        5,
        "consecutive fires 5 minutes apart:\n{out}"
    );
}
