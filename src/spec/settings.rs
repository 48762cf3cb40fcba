//! TEMPORARY STUB (replaced by the real module).
use std::path::{Path, PathBuf};
use std::time::Duration;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)] pub enum Overlap { #[default] Skip, Queue }
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub stopping_wait_time: Duration, pub is_singleton: bool, pub schedule: Option<crate::schedule::Schedule>,
    pub timezone: chrono_tz::Tz, pub is_in_place: bool, pub restart_delay: Duration, pub restart_max_delay: Duration,
    pub timeout: Option<Duration>, pub idle_timeout: Option<Duration>, pub overlap: Overlap, pub history_size: u32,
    pub log_max_bytes: u64, pub log_keep: u32, pub env: std::collections::BTreeMap<String, String>,
}
impl Default for JobSettings { fn default() -> Self { JobSettings { stopping_wait_time: Duration::from_secs(5), is_singleton: false, schedule: None, timezone: chrono_tz::UTC, is_in_place: false, restart_delay: Duration::from_secs(1), restart_max_delay: Duration::from_secs(60), timeout: None, idle_timeout: None, overlap: Overlap::Skip, history_size: 50, log_max_bytes: 10485760, log_keep: 5, env: Default::default() } } }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem { pub file: PathBuf, pub line: Option<usize>, pub column: Option<usize>, pub key: Option<String>, pub message: String }
impl std::fmt::Display for Problem { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}", self.message) } }
#[derive(Debug, thiserror::Error)] #[error("bad")] pub struct SettingsError { pub problems: Vec<Problem> }
pub type Warning = Problem;
pub fn load(_job_dir: &Path, _job_type: crate::spec::JobType) -> Result<(JobSettings, Vec<Warning>), SettingsError> { Ok((JobSettings::default(), vec![])) }
