//! What a job folder declares: its name, its entry point and its `settings.job`.
//! Everything here is pure validation of what the user wrote; nothing starts, watches
//! or schedules.

pub mod entry;
pub mod name;
pub mod problem;
pub mod settings;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The two kinds of job, named as their folders under JOBS (and so in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    Continuous,
    Triggered,
}

impl JobType {
    pub const ALL: [JobType; 2] = [JobType::Continuous, JobType::Triggered];

    /// The folder name under JOBS and LOGS, and the value of `WEBJOBS_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Continuous => "continuous",
            JobType::Triggered => "triggered",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_folders() {
        let names: Vec<&str> = JobType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["continuous", "triggered"]);
        assert_eq!(JobType::Triggered.to_string(), "triggered");
    }
}
