//! Scheduled occurrences fired in the cluster: one row per job and occurrence, so an
//! occurrence fires on exactly one host. The host that fires takes the job's run
//! lease first (one run at a time across the cluster), reads the latest occurrence
//! fired, and claims its own before its run starts; a claim that finds the row taken
//! is an occurrence another host already ran.

use chrono::{DateTime, Utc};

use super::{ClusterError, Pool};

/// Claims `occurrence` of `job` for `host`: `false` when it was already claimed.
pub fn claim(
    pool: &Pool,
    job: &str,
    occurrence: DateTime<Utc>,
    host: &str,
) -> Result<bool, ClusterError> {
    pool.call(
        &format!("claiming the fire of {job} at {occurrence}"),
        |conn| {
            Ok(conn.execute(
                "INSERT INTO jobhost_fires (job, occurrence, host) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
                &[&job, &occurrence, &host],
            )? == 1)
        },
    )
}

/// The latest occurrence of `job` fired anywhere in the cluster.
pub fn last(pool: &Pool, job: &str) -> Result<Option<DateTime<Utc>>, ClusterError> {
    pool.call(&format!("reading the last fire of {job}"), |conn| {
        Ok(conn
            .query_one(
                "SELECT max(occurrence) FROM jobhost_fires WHERE job = $1",
                &[&job],
            )?
            .try_get(0)?)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_is_claimed_once() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let t = chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000, 0).unwrap();
        assert_eq!(last(&pool, "j").unwrap(), None);
        assert!(claim(&pool, "j", t, "a").unwrap());
        assert!(!claim(&pool, "j", t, "b").unwrap(), "a has it");
        assert!(
            claim(&pool, "other", t, "b").unwrap(),
            "another job's is its own"
        );
        let later = t + chrono::Duration::seconds(1);
        assert!(claim(&pool, "j", later, "b").unwrap());
        assert_eq!(last(&pool, "j").unwrap(), Some(later));
    }
}
