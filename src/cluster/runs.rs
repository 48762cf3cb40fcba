//! The cluster's history: every host adds the record of each triggered run it
//! finished, with where its API answers, so any host can list the runs of all of them
//! (their output stays on the disk of the host that ran each).

use chrono::{DateTime, Utc};

use super::{ClusterError, Pool};
use crate::job::triggered::records::RunRecord;

/// A run as the store keeps it.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    pub host: String,
    pub api_addr: String,
    pub record: RunRecord,
}

/// Adds (or replaces) the record of a run `host` finished, and keeps only the
/// newest `keep` of that host's runs of the job, as its own LOGS does.
pub fn record(
    pool: &Pool,
    host: &str,
    api_addr: &str,
    rec: &RunRecord,
    keep: u32,
) -> Result<(), ClusterError> {
    let json = serde_json::to_value(rec).map_err(|e| ClusterError::Unavailable {
        url: pool.url().to_string(),
        what: "recording a run".into(),
        reason: e.to_string(),
    })?;
    let started: DateTime<Utc> = DateTime::parse_from_rfc3339(&rec.start_time)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    let keep = i64::from(keep.max(1));
    pool.call(
        &format!("recording run {} of {}", rec.id, rec.name),
        |conn| {
            // Two statements, not one transaction: the trim may lag a run behind.
            conn.execute(
                "INSERT INTO jobhost_runs (job, host, id, api_addr, started_at, record) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (job, host, id) DO UPDATE SET record = excluded.record, \
                 api_addr = excluded.api_addr",
                &[&rec.name, &host, &rec.id, &api_addr, &started, &json],
            )?;
            conn.execute(
                "DELETE FROM jobhost_runs WHERE job = $1 AND host = $2 AND id < ( \
                   SELECT id FROM jobhost_runs WHERE job = $1 AND host = $2 \
                   ORDER BY id DESC OFFSET $3 - 1 LIMIT 1)",
                &[&rec.name, &host, &keep],
            )?;
            Ok(())
        },
    )
}

/// The newest `limit` runs of `job` across the cluster, newest first; with `id`,
/// only the runs of that id (one per host that had one).
pub fn history(
    pool: &Pool,
    job: &str,
    id: Option<&str>,
    limit: i64,
) -> Result<Vec<ClusterRun>, ClusterError> {
    pool.call(&format!("reading the history of {job}"), |conn| {
        let rows = conn.query(
            "SELECT host, api_addr, record FROM jobhost_runs \
             WHERE job = $1 AND ($2::text IS NULL OR id = $2) \
             ORDER BY started_at DESC, host LIMIT $3",
            &[&job, &id, &limit],
        )?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in rows {
            let record: serde_json::Value = r.try_get(2)?;
            if let Ok(record) = serde_json::from_value::<RunRecord>(record) {
                runs.push(ClusterRun {
                    host: r.try_get(0)?,
                    api_addr: r.try_get(1)?,
                    record,
                });
            }
        }
        Ok(runs)
    })
}
