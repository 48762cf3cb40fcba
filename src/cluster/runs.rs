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

/// A finished run's row for `jobhost_runs`, ready to bind: what [`record`] adds, and
/// what the message store adds in the settlement's own statement for a message's run
/// (`queue::postgres`), so that a message's run ends in one round trip.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub job: String,
    pub host: String,
    pub id: String,
    pub api_addr: String,
    pub started: DateTime<Utc>,
    pub record: serde_json::Value,
    /// How many of this host's runs of the job the table keeps (at least 1).
    pub keep: i64,
}

impl RunRow {
    /// The row of `rec`, finished by `host` (whose API answers at `api_addr`), of a
    /// job that keeps `keep` runs.
    pub fn new(
        host: &str,
        api_addr: &str,
        rec: &RunRecord,
        keep: u32,
    ) -> Result<RunRow, serde_json::Error> {
        let started: DateTime<Utc> = DateTime::parse_from_rfc3339(&rec.start_time)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        Ok(RunRow {
            job: rec.name.clone(),
            host: host.to_string(),
            id: rec.id.clone(),
            api_addr: api_addr.to_string(),
            started,
            record: serde_json::to_value(rec)?,
            keep: i64::from(keep.max(1)),
        })
    }

    /// Its seven parameters, in the order [`add_and_trim_sql`] numbers them.
    pub fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 7] {
        [
            &self.job,
            &self.host,
            &self.id,
            &self.api_addr,
            &self.started,
            &self.record,
            &self.keep,
        ]
    }
}

/// The two statements that add a [`RunRow`] (or replace the row of the same run) and
/// trim the host's runs of the job to its `keep`, its parameters numbered from `$p`
/// in [`RunRow::params`] order; each to be used as a part of a `WITH`. The trim sees
/// the table as it was before the statement: it may keep one run more than `keep`
/// until the next.
pub fn add_and_trim_sql(p: usize) -> (String, String) {
    let [job, host, id, api, started, record, keep] = std::array::from_fn(|i| p + i);
    let add = format!(
        "INSERT INTO jobhost_runs (job, host, id, api_addr, started_at, record) \
         VALUES (${job}, ${host}, ${id}, ${api}, ${started}, ${record}) \
         ON CONFLICT (job, host, id) DO UPDATE SET record = excluded.record, \
         api_addr = excluded.api_addr"
    );
    let trim = format!(
        "DELETE FROM jobhost_runs WHERE job = ${job} AND host = ${host} AND id < ( \
           SELECT id FROM jobhost_runs WHERE job = ${job} AND host = ${host} \
           ORDER BY id DESC OFFSET ${keep}::bigint - 1 LIMIT 1)"
    );
    (add, trim)
}

/// Adds (or replaces) the record of a run `host` finished, keeps only the newest
/// `keep` of that host's runs of the job, as its own LOGS does, gives up the run's
/// lease (`lease`: its name and token) and, for a scheduled run, claims its
/// occurrence if it was not yet (a run lease taken ahead of its occurrence,
/// `cluster::fires`; before the lease is free, so no other host fires it), all in one
/// statement: one round trip at the end of a run.
pub fn record(
    pool: &Pool,
    host: &str,
    api_addr: &str,
    rec: &RunRecord,
    keep: u32,
    lease: Option<(&str, i64)>,
) -> Result<(), ClusterError> {
    let row = RunRow::new(host, api_addr, rec, keep).map_err(|e| ClusterError::Unavailable {
        url: pool.url().to_string(),
        what: "recording a run".into(),
        reason: e.to_string(),
    })?;
    let (lease_name, token) = (lease.map(|l| l.0), lease.map(|l| l.1));
    let occurrence: Option<DateTime<Utc>> = rec
        .scheduled_for
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let (add, trim) = add_and_trim_sql(1);
    let sql = format!(
        "WITH released AS ( \
           UPDATE jobhost_leases SET expires_at = clock_timestamp(), \
             fired = greatest(fired, $10) \
           WHERE name = $8 AND holder = $2 AND token = $9 RETURNING 1), \
         fired AS ( \
           INSERT INTO jobhost_fires (job, occurrence, host) \
           SELECT $1, $10, $2 WHERE $10::timestamptz IS NOT NULL \
           ON CONFLICT DO NOTHING RETURNING 1), \
         added AS ({add} RETURNING 1) \
         {trim}"
    );
    pool.call(
        &format!("recording run {} of {}", rec.id, rec.name),
        |conn| {
            let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = row.params().to_vec();
            args.push(&lease_name);
            args.push(&token);
            args.push(&occurrence);
            conn.execute(&sql, &args)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::leases;
    use crate::job::triggered::records::TriggerKind;
    use std::time::Duration;

    #[test]
    fn a_record_gives_up_the_runs_lease_and_keeps_the_newest_runs() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let ttl = Duration::from_secs(60);
        let held = leases::acquire(&pool, "triggered/j", "a", ttl)
            .unwrap()
            .unwrap();
        assert_eq!(
            leases::acquire(&pool, "triggered/j", "b", ttl).unwrap(),
            None
        );
        for i in 0..5 {
            let mut rec =
                RunRecord::running("j", TriggerKind::Manual, vec![], Utc::now(), None, None);
            rec.id = format!("20261201000000{i:04}");
            let lease = (i == 4).then_some(("triggered/j", held.token));
            record(&pool, "a", "http://a", &rec, 3, lease).unwrap();
        }
        let b = leases::acquire(&pool, "triggered/j", "b", ttl).unwrap();
        assert!(b.is_some(), "the last record gave the lease up");
        let ids: Vec<String> = history(&pool, "j", None, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.record.id)
            .collect();
        assert!(
            ids.len() <= 4 && ids.len() >= 3,
            "trimmed to about 3: {ids:?}"
        );
        assert!(ids.contains(&"202612010000000004".to_string()));
    }
}
