//! Prometheus metrics (`GET /metrics`), in an explicit registry per host so tests
//! stay isolated.
//!
//! Events (a run ended, a fire was late) are counted as they happen by the job tasks;
//! states (a job's status, its restarts, log bytes) are read from the job registry at
//! scrape time, so a removed job's series disappear with it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `kind` is the job type (`continuous`, `triggered`); `type` is a Rust keyword.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub job: String,
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub job: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOnly {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub job_status: Family<StatusLabels, Gauge>,
    pub restarts: Family<JobOnly, Gauge>,
    pub log_written: Family<JobLabels, Gauge>,
    pub log_dropped_lines: Family<JobLabels, Gauge>,
    pub log_dropped_bytes: Family<JobLabels, Gauge>,
    pub runs: Family<OutcomeLabels, Counter>,
    pub run_duration: Family<JobOnly, Histogram>,
    pub lateness: Family<JobOnly, Histogram>,
    pub uptime: Gauge,
    /// Messages by job and state, read from the store at scrape time.
    pub queue_depth: Family<MessageLabels, Gauge>,
    /// Age of the oldest `Queued` message, at scrape time.
    pub queue_oldest: Family<JobOnly, Gauge>,
    pub enqueued: Family<JobOnly, Counter>,
    pub attempts: Family<JobOnly, Counter>,
    pub finished: Family<MessageLabels, Counter>,
    started: std::time::Instant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub job: String,
    pub state: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

fn lateness_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jobhost");
        let job_status = Family::<StatusLabels, Gauge>::default();
        let restarts = Family::<JobOnly, Gauge>::default();
        let log_written = Family::<JobLabels, Gauge>::default();
        let log_dropped_lines = Family::<JobLabels, Gauge>::default();
        let log_dropped_bytes = Family::<JobLabels, Gauge>::default();
        let runs = Family::<OutcomeLabels, Counter>::default();
        let run_duration = Family::<JobOnly, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let lateness = Family::<JobOnly, Histogram>::new_with_constructor(
            lateness_histogram as fn() -> Histogram,
        );
        let uptime = Gauge::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "job_status",
            "1 for the job's current status",
            job_status.clone(),
        );
        registry.register(
            "job_restarts",
            "Restarts of a continuous job since the host started",
            restarts.clone(),
        );
        registry.register(
            "log_written_bytes",
            "Bytes written to the job's current log file set",
            log_written.clone(),
        );
        registry.register(
            "log_dropped_lines",
            "Output lines lost because the log could not be written",
            log_dropped_lines.clone(),
        );
        registry.register(
            "log_dropped_bytes",
            "Output bytes lost because the log could not be written",
            log_dropped_bytes.clone(),
        );
        registry.register("runs", "Triggered runs by outcome", runs.clone());
        registry.register(
            "run_duration_seconds",
            "Duration of triggered runs",
            run_duration.clone(),
        );
        registry.register(
            "schedule_lateness_seconds",
            "Start of a scheduled run minus its scheduled second",
            lateness.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the host started",
            uptime.clone(),
        );
        registry.register("build_info", "Build of this host", build);
        let queue_depth = Family::<MessageLabels, Gauge>::default();
        let queue_oldest = Family::<JobOnly, Gauge>::default();
        let enqueued = Family::<JobOnly, Counter>::default();
        let attempts = Family::<JobOnly, Counter>::default();
        let finished = Family::<MessageLabels, Counter>::default();
        registry.register(
            "queue_messages",
            "Messages in the job's queue by state",
            queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_queued_age_seconds",
            "Seconds since the oldest Queued message of the job was enqueued",
            queue_oldest.clone(),
        );
        registry.register(
            "messages_enqueued",
            "Messages stored by this host (duplicates not counted)",
            enqueued.clone(),
        );
        registry.register(
            "message_attempts",
            "Message runs started by this host",
            attempts.clone(),
        );
        registry.register(
            "messages_finished",
            "Messages this host settled Succeeded, Dead or Cancelled",
            finished.clone(),
        );
        Metrics {
            registry,
            job_status,
            restarts,
            log_written,
            log_dropped_lines,
            log_dropped_bytes,
            runs,
            run_duration,
            lateness,
            uptime,
            queue_depth,
            queue_oldest,
            enqueued,
            attempts,
            finished,
            started: std::time::Instant::now(),
        }
    }

    pub fn message_enqueued(&self, job: &str) {
        self.enqueued.get_or_create(&job_only(job)).inc();
    }

    pub fn message_attempt(&self, job: &str) {
        self.attempts.get_or_create(&job_only(job)).inc();
    }

    pub fn message_finished(&self, job: &str, state: &str) {
        self.finished
            .get_or_create(&MessageLabels {
                job: job.to_string(),
                state: state.to_string(),
            })
            .inc();
    }

    /// Sets the scrape-time queue gauges of `job`.
    pub fn queue_counts(&self, job: &str, c: &crate::queue::QueueCounts) {
        for (state, n) in [
            ("Queued", c.queued),
            ("Running", c.running),
            ("Succeeded", c.succeeded),
            ("Dead", c.dead),
            ("Cancelled", c.cancelled),
        ] {
            self.queue_depth
                .get_or_create(&MessageLabels {
                    job: job.to_string(),
                    state: state.to_string(),
                })
                .set(n as i64);
        }
        self.queue_oldest
            .get_or_create(&job_only(job))
            .set(c.oldest_queued_age_s.unwrap_or(0) as i64);
    }

    pub fn run_ended(&self, job: &str, outcome: &str, seconds: f64) {
        self.runs
            .get_or_create(&OutcomeLabels {
                job: job.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.run_duration
            .get_or_create(&JobOnly {
                job: job.to_string(),
            })
            .observe(seconds);
    }

    pub fn late(&self, job: &str, seconds: f64) {
        self.lateness
            .get_or_create(&JobOnly {
                job: job.to_string(),
            })
            .observe(seconds.max(0.0));
    }

    /// Clears the scrape-time families; the caller then fills them from the registry.
    pub fn begin_scrape(&self) {
        self.job_status.clear();
        self.restarts.clear();
        self.log_written.clear();
        self.log_dropped_lines.clear();
        self.log_dropped_bytes.clear();
        self.queue_depth.clear();
        self.queue_oldest.clear();
        self.uptime.set(self.started.elapsed().as_secs() as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn job_only(job: &str) -> JobOnly {
    JobOnly {
        job: job.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_up_in_the_text_format() {
        let m = Metrics::new();
        m.run_ended("nightly", "Success", 1.5);
        m.late("nightly", 0.004);
        let text = m.encode();
        assert!(
            text.contains("jobhost_runs_total{job=\"nightly\",outcome=\"Success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("jobhost_run_duration_seconds_count{job=\"nightly\"} 1"),
            "{text}"
        );
        assert!(text.contains("jobhost_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
