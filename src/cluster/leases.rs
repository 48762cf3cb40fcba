//! Leases: a named thing (a singleton job) held by one host of the cluster at a time,
//! until an expiry judged by the database's clock, with a fencing token that grows at
//! every change of holder. A holder renews before expiry; a renewal succeeds only
//! while the lease is still its own (same holder, same token, not expired), so a host
//! that was cut off and comes back learns it lost the lease instead of overlapping
//! with the new holder. The token goes to the run (`WEBJOBS_FENCING_TOKEN`), so what
//! the run writes elsewhere can refuse a stale holder.

use std::time::Duration;

use super::{ClusterError, Pool};

/// A lease held: its fencing token, and how long it runs from the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub token: i64,
    pub ttl: Duration,
}

/// Takes lease `name` for `holder` when it is free, expired, or already
/// `holder`'s; `None` when another host holds it. A new holder (or the same one
/// after its lease expired) gets the next token.
pub fn acquire(
    pool: &Pool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Held>, ClusterError> {
    let secs = ttl.as_secs_f64();
    pool.call(&format!("taking the lease {name}"), |conn| {
        let row = conn.query_opt(
            "INSERT INTO jobhost_leases AS l (name, holder, token, expires_at) \
             VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 token = l.token + CASE WHEN l.holder = excluded.holder \
                     AND l.expires_at > clock_timestamp() THEN 0 ELSE 1 END, \
                 expires_at = excluded.expires_at \
             WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp() \
             RETURNING token",
            &[&name, &holder, &secs],
        )?;
        Ok(match row {
            Some(r) => Some(Held {
                token: r.try_get(0)?,
                ttl,
            }),
            None => None,
        })
    })
}

/// Extends `holder`'s lease by its ttl from now; `false` when it is no longer
/// `holder`'s with `token` (taken over, or expired).
pub fn renew(pool: &Pool, name: &str, holder: &str, held: Held) -> Result<bool, ClusterError> {
    let secs = held.ttl.as_secs_f64();
    pool.call(&format!("renewing the lease {name}"), |conn| {
        Ok(conn.execute(
            "UPDATE jobhost_leases SET expires_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()",
            &[&name, &holder, &held.token, &secs],
        )? == 1)
    })
}

/// Gives the lease up at once (its run has ended), so another host takes it without
/// waiting for the expiry.
pub fn release(pool: &Pool, name: &str, holder: &str, held: Held) -> Result<(), ClusterError> {
    pool.call(&format!("releasing the lease {name}"), |conn| {
        conn.execute(
            "UPDATE jobhost_leases SET expires_at = clock_timestamp() \
             WHERE name = $1 AND holder = $2 AND token = $3",
            &[&name, &holder, &held.token],
        )?;
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_token_grows_with_each_new_holder() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let ttl = Duration::from_secs(30);
        let a = acquire(&pool, "job", "a", ttl).unwrap().unwrap();
        assert_eq!(a.token, 1);
        assert_eq!(acquire(&pool, "job", "b", ttl).unwrap(), None, "a holds it");
        assert_eq!(
            acquire(&pool, "job", "a", ttl).unwrap(),
            Some(a),
            "a again: same token"
        );
        assert!(renew(&pool, "job", "a", a).unwrap());
        assert!(!renew(&pool, "job", "b", a).unwrap(), "b never held it");
        release(&pool, "job", "a", a).unwrap();
        let b = acquire(&pool, "job", "b", ttl).unwrap().unwrap();
        assert_eq!(b.token, 2, "a new holder, the next token");
        assert!(!renew(&pool, "job", "a", a).unwrap(), "a lost it");
        // An expired lease is free to take, with the next token.
        let short = Duration::from_millis(200);
        release(&pool, "job", "b", b).unwrap();
        let c = acquire(&pool, "job", "c", short).unwrap().unwrap();
        assert_eq!(c.token, 3);
        crate::cluster::testdb::wait_for("the short lease to expire", || {
            acquire(&pool, "job", "d", ttl).unwrap().is_some()
        });
        assert!(!renew(&pool, "job", "c", c).unwrap(), "c's lease ran out");
        let d = acquire(&pool, "job", "d", ttl).unwrap().unwrap();
        assert_eq!(d.token, 4);
    }

    #[test]
    fn hosts_racing_for_a_free_lease_get_it_once() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = std::sync::Arc::new(crate::cluster::open(&db.url).unwrap());
        let winners: Vec<_> = (0..6)
            .map(|i| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    acquire(&pool, "race", &format!("h{i}"), Duration::from_secs(30))
                        .unwrap()
                        .is_some()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|won| *won)
            .collect();
        assert_eq!(winners.len(), 1);
    }
}
