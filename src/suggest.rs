//! The CLI's answer to a job name it does not know: the nearest existing name, or
//! the fact that the name is a job of the other type. Pure: the caller fetches the
//! names (from the API or from LOGS) and prints the sentence.

use crate::spec::JobType;

/// What to tell a user who named `name` for a command that wants `want` (any type
/// when `None`), given the jobs that exist. `None` when such a job exists after all.
pub fn explain_unknown(
    name: &str,
    want: Option<JobType>,
    command: &str,
    jobs: &[(String, JobType)],
) -> Option<String> {
    if jobs
        .iter()
        .any(|(n, t)| n == name && want.is_none_or(|w| w == *t))
    {
        return None;
    }
    let kind = want.map_or(String::new(), |w| format!("{} ", w.as_str()));
    if let Some(w) = want
        && let Some((_, other)) = jobs.iter().find(|(n, _)| n == name)
    {
        let hint = match other {
            JobType::Triggered => format!(" (to run it: jobhost trigger {name})"),
            JobType::Continuous => {
                format!(" (jobhost status, logs, start and stop work on {name})")
            }
        };
        return Some(format!(
            "{name} is a {} job; {command} is for {} jobs{hint}",
            other.as_str(),
            w.as_str()
        ));
    }
    let candidates = jobs
        .iter()
        .filter(|(_, t)| want.is_none_or(|w| w == *t))
        .map(|(n, _)| n.as_str());
    Some(match nearest(name, candidates) {
        Some(best) => format!("no {kind}job named {name}; did you mean {best}?"),
        None => format!("no {kind}job named {name} (jobhost list shows the jobs)"),
    })
}

/// The candidate closest to `name` by edit distance (a swap of two neighbours counts
/// once; case is ignored), if close enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .map(|c| (strsim::osa_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| {
            let len = lower.chars().count().max(c.chars().count());
            // About one edit in three characters, and at least one.
            *d <= (len / 3).max(1)
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobType::{Continuous, Triggered};

    fn jobs() -> Vec<(String, JobType)> {
        [
            ("report", Triggered),
            ("reports-weekly", Triggered),
            ("hello", Continuous),
            ("backup", Triggered),
            ("web", Continuous),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
    }

    #[test]
    fn unknown_names_get_the_nearest_job_of_the_wanted_type_or_none() {
        let j = jobs();
        let table: &[(&str, Option<JobType>, &str, Option<&str>)] = &[
            (
                "reprot",
                Some(Triggered),
                "trigger",
                Some("no triggered job named reprot; did you mean report?"),
            ),
            (
                "Report",
                None,
                "status",
                Some("no job named Report; did you mean report?"),
            ),
            (
                "hallo",
                None,
                "logs",
                Some("no job named hallo; did you mean hello?"),
            ),
            (
                "zzzzzz",
                Some(Triggered),
                "history",
                Some("no triggered job named zzzzzz (jobhost list shows the jobs)"),
            ),
            // The near name is of the other type: no suggestion of a job the command refuses.
            (
                "helo",
                Some(Triggered),
                "history",
                Some("no triggered job named helo (jobhost list shows the jobs)"),
            ),
            ("report", Some(Triggered), "trigger", None),
            ("hello", None, "status", None),
        ];
        for (name, want, cmd, expected) in table {
            assert_eq!(
                explain_unknown(name, *want, cmd, &j).as_deref(),
                *expected,
                "{name} {want:?}"
            );
        }
    }

    #[test]
    fn a_job_of_the_other_type_is_named_as_such() {
        let j = jobs();
        let msg = explain_unknown("hello", Some(Triggered), "history", &j).expect("message");
        assert!(
            msg.starts_with("hello is a continuous job; history is for triggered jobs"),
            "{msg}"
        );
        let msg = explain_unknown("backup", Some(Continuous), "stop", &j).expect("message");
        assert!(
            msg.starts_with("backup is a triggered job; stop is for continuous jobs"),
            "{msg}"
        );
        assert!(msg.contains("jobhost trigger backup"), "{msg}");
    }

    #[test]
    fn short_names_need_a_close_match() {
        assert_eq!(nearest("wbe", ["web"].into_iter()), Some("web"));
        assert_eq!(nearest("x", ["web"].into_iter()), None);
        assert_eq!(nearest("anything", std::iter::empty()), None);
    }
}
