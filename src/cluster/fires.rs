//! Scheduled occurrences fired in the cluster: one row per job and occurrence, so an
//! occurrence fires on exactly one host. A run of a triggered job first takes the
//! job's run lease (one run at a time across the cluster); a scheduled run claims its
//! occurrence in the same statement, so the claim exists before its run starts and a
//! claim that finds the row taken (or a later one) is an occurrence another host ran.
//!
//! **One statement for a second's runs.** The runs a host starts at once (a hundred
//! jobs on the same second) ask through its [`RunDesk`], which sends everything asked
//! while the previous statement was out as one multi-row statement: one commit per
//! batch instead of one per run, which is what keeps the store from making runs late
//! (bench/cluster-results.md). The lease rows are taken in name order, so hosts
//! sending overlapping batches at once cannot deadlock on them; PostgreSQL's deadlock
//! error is retried anyway.
//!
//! **Every take is a new token**, even by the host that holds the lease already: the
//! end of the run before (which gives the lease back off the job's task, see
//! `cluster::runs::record`) may reach the store after the job took the lease again,
//! and must then find a token that is no longer its own.
//!
//! **A claim nobody will run** (the asking job gave up waiting for the answer) is
//! taken back with its lease, so the job's catch-up can claim it again. A host that
//! died between its claim and its run's start (its LOGS has no run of that
//! occurrence) and comes back fires the occurrence again as a missed one (the
//! 10-minute rule): a claim that is its own and the latest of the job is granted to it
//! again, so the occurrence is neither lost nor run twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use tokio::sync::{mpsc, oneshot};

use super::leases::Held;
use super::{ClusterError, Pool};

/// A run's request: the job's run lease, and for a scheduled run its occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub lease: String,
    pub job: String,
    pub occurrence: Option<DateTime<Utc>>,
    /// Claim the occurrence now. Without, the lease is taken ahead of the occurrence
    /// (only if it was not fired yet) and the claim is written with the run's record
    /// (`cluster::runs`): holding the lease, no other host can fire it meanwhile.
    pub claim: bool,
}

/// The store's answer to a [`Take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The lease, when it is ours now; `None` when another host holds it, or (for a
    /// scheduled run) the occurrence or a later one was already fired.
    pub held: Option<Held>,
    /// The latest occurrence of the job fired before this statement.
    pub last_fired: Option<DateTime<Utc>>,
    /// The occurrence is claimed for this host.
    pub claimed: bool,
}

/// Takes the run leases and claims the occurrences of `takes` for `holder` in one
/// statement; the answers are in the order of `takes`. A lease whose occurrence was
/// already fired (or a later one) is not taken, unless the occurrence is the job's
/// latest and `holder`'s own claim (see the module's notes). Lease names must be
/// distinct.
pub fn take(
    pool: &Pool,
    holder: &str,
    ttl: Duration,
    takes: &[Take],
) -> Result<Vec<Taken>, ClusterError> {
    let leases: Vec<&str> = takes.iter().map(|t| t.lease.as_str()).collect();
    let jobs: Vec<&str> = takes.iter().map(|t| t.job.as_str()).collect();
    let occurrences: Vec<Option<DateTime<Utc>>> = takes.iter().map(|t| t.occurrence).collect();
    let claims: Vec<bool> = takes.iter().map(|t| t.claim).collect();
    let secs = ttl.as_secs_f64();
    let what = match takes {
        [one] => format!("taking the run lease of {}", one.job),
        _ => format!("taking the run leases of {} jobs", takes.len()),
    };
    pool.call(&what, |conn| {
        let mut tries = 0;
        let rows = loop {
            tries += 1;
            let args: [&(dyn postgres::types::ToSql + Sync); 6] =
                [&leases, &jobs, &occurrences, &holder, &secs, &claims];
            match conn.query(TAKE_SQL, &args) {
                Err(e) if tries < 3 && e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {}
                other => break other?,
            }
        };
        let mut answers = vec![
            Taken {
                held: None,
                last_fired: None,
                claimed: false,
            };
            takes.len()
        ];
        for row in rows {
            let i: i32 = row.try_get(0)?;
            let Some(answer) = usize::try_from(i - 1).ok().and_then(|i| answers.get_mut(i)) else {
                continue;
            };
            let token: Option<i64> = row.try_get(1)?;
            answer.held = token.map(|token| Held { token, ttl });
            answer.last_fired = row.try_get(2)?;
            answer.claimed = row.try_get(3)?;
        }
        Ok(answers)
    })
}

// `ask` numbers the requests (their answers' order); `prior` is the latest fire of each
// job as this statement's snapshot sees it, and whether the occurrence asked is this
// host's already; `taken` takes each lease whose occurrence is newer than that, or is
// this host's own latest claim (ordered by name: the lock order), and checks the same
// again on the lease row it locked (`fired`: a run that began and ended on another
// host after this statement's snapshot is seen there); `fired` claims the occurrences
// of the leases taken, and finds a row another host committed meanwhile.
const TAKE_SQL: &str = "\
WITH ask AS ( \
  SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $6::bool[]) \
    WITH ORDINALITY AS a(lease, job, occurrence, claim, n)), \
prior AS ( \
  SELECT a.n, (SELECT max(f.occurrence) FROM jobhost_fires f WHERE f.job = a.job) AS last, \
    EXISTS (SELECT 1 FROM jobhost_fires f WHERE f.job = a.job \
      AND f.occurrence = a.occurrence AND f.host = $4) AS mine \
  FROM ask a), \
taken AS ( \
  INSERT INTO jobhost_leases AS l (name, holder, token, expires_at, fired, asked) \
  SELECT a.lease, $4, 1, clock_timestamp() + make_interval(secs => $5), \
    CASE WHEN a.claim THEN a.occurrence END, a.occurrence \
  FROM ask a JOIN prior p USING (n) \
  WHERE a.occurrence IS NULL OR p.last IS NULL OR p.last < a.occurrence \
    OR (p.last = a.occurrence AND p.mine AND a.claim) \
  ORDER BY a.lease \
  ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = l.token + 1, \
      expires_at = excluded.expires_at, \
      fired = greatest(l.fired, excluded.fired), asked = excluded.asked \
  WHERE (l.holder = excluded.holder OR l.expires_at <= clock_timestamp()) \
    AND (excluded.asked IS NULL OR l.fired IS NULL OR l.fired < excluded.asked \
      OR (l.fired = excluded.asked AND excluded.fired IS NOT NULL \
        AND l.holder = excluded.holder)) \
  RETURNING l.name, l.token), \
fired AS ( \
  INSERT INTO jobhost_fires (job, occurrence, host) \
  SELECT a.job, a.occurrence, $4 FROM ask a JOIN taken t ON t.name = a.lease \
  WHERE a.occurrence IS NOT NULL AND a.claim \
  ORDER BY a.job \
  ON CONFLICT (job, occurrence) DO UPDATE SET claimed_at = excluded.claimed_at \
  WHERE jobhost_fires.host = excluded.host \
  RETURNING job) \
SELECT a.n::int, t.token, p.last, EXISTS (SELECT 1 FROM fired f WHERE f.job = a.job) \
FROM ask a JOIN prior p USING (n) LEFT JOIN taken t ON t.name = a.lease";

/// Gives back what a [`take`] got for a run that will not start: the lease, and the
/// occurrence's claim when `claimed`, so that it can be claimed again.
pub fn give_back(
    pool: &Pool,
    holder: &str,
    take: &Take,
    held: Held,
    claimed: bool,
) -> Result<(), ClusterError> {
    let occurrence = take.occurrence.filter(|_| claimed);
    pool.call(
        &format!("giving back the run lease of {}", take.job),
        |conn| {
            conn.execute(
                "WITH unclaimed AS ( \
               DELETE FROM jobhost_fires WHERE job = $4 AND occurrence = $5 AND host = $2 \
               RETURNING 1) \
             UPDATE jobhost_leases SET expires_at = clock_timestamp(), \
               fired = CASE WHEN $5::timestamptz IS NULL THEN fired ELSE ( \
                 SELECT max(f.occurrence) FROM jobhost_fires f \
                 WHERE f.job = $4 AND f.occurrence <> $5) END \
             WHERE name = $1 AND holder = $2 AND token = $3",
                &[&take.lease, &holder, &held.token, &take.job, &occurrence],
            )?;
            Ok(())
        },
    )
}

type Reply = oneshot::Sender<Result<Taken, ClusterError>>;

/// The host's way to [`take`]: requests made while a statement is out go together in
/// the next one.
pub struct RunDesk {
    asks: mpsc::UnboundedSender<(Take, Reply)>,
    url: String,
}

/// At most this many requests in one statement.
const BATCH: usize = 500;

impl RunDesk {
    /// Starts the desk's task (on the current runtime) for `holder`'s runs; it ends
    /// when the desk is dropped.
    pub fn start(pool: std::sync::Arc<Pool>, holder: String, ttl: Duration) -> RunDesk {
        let (asks, rx) = mpsc::unbounded_channel();
        let url = pool.url().to_string();
        tokio::spawn(serve(rx, pool, holder, ttl));
        RunDesk { asks, url }
    }

    /// Takes `take`'s lease (and claims its occurrence) with whatever else is asked
    /// meanwhile.
    pub async fn take(&self, take: Take) -> Result<Taken, ClusterError> {
        let (tx, rx) = oneshot::channel();
        let stopping = || ClusterError::Unavailable {
            url: self.url.clone(),
            what: format!("taking the run lease of {}", take.job),
            reason: "the host is stopping".into(),
        };
        if self.asks.send((take.clone(), tx)).is_err() {
            return Err(stopping());
        }
        rx.await.unwrap_or_else(|_| Err(stopping()))
    }
}

async fn serve(
    mut rx: mpsc::UnboundedReceiver<(Take, Reply)>,
    pool: std::sync::Arc<Pool>,
    holder: String,
    ttl: Duration,
) {
    // A request whose lease is already in the batch waits for the next one (a
    // statement may not change one row twice).
    let mut held_over: Vec<(Take, Reply)> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut held_over);
        if batch.is_empty() {
            match rx.recv().await {
                Some(ask) => batch.push(ask),
                None => return,
            }
            // The jobs due at the same instant woke together: let the others ask
            // before the statement goes, rather than sending the first alone.
            tokio::task::yield_now().await;
        }
        while batch.len() < BATCH {
            let Ok(ask) = rx.try_recv() else { break };
            if batch.iter().any(|(t, _)| t.lease == ask.0.lease) {
                held_over.push(ask);
            } else {
                batch.push(ask);
            }
        }
        let takes: Vec<Take> = batch.iter().map(|(t, _)| t.clone()).collect();
        let (p, h) = (pool.clone(), holder.clone());
        let sent = std::time::Instant::now();
        let answers = tokio::task::spawn_blocking(move || take(&p, &h, ttl, &takes)).await;
        tracing::debug!(
            runs = batch.len(),
            ms = sent.elapsed().as_secs_f64() * 1000.0,
            "run leases taken"
        );
        let Ok(answers) = answers else { return };
        match answers {
            Ok(answers) => {
                for ((t, reply), answer) in batch.into_iter().zip(answers) {
                    if let Err(Ok(unwanted)) = reply.send(Ok(answer))
                        && let Some(held) = unwanted.held
                    {
                        let (p, h) = (pool.clone(), holder.clone());
                        let claimed = unwanted.claimed;
                        let _ = tokio::task::spawn_blocking(move || {
                            give_back(&p, &h, &t, held, claimed)
                        })
                        .await;
                    }
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        chrono::TimeZone::timestamp_opt(&Utc, 1_800_000_000 + secs, 0).unwrap()
    }

    fn fire(job: &str, secs: i64) -> Take {
        Take {
            lease: format!("triggered/{job}"),
            job: job.into(),
            occurrence: Some(at(secs)),
            claim: true,
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    fn release(pool: &Pool, host: &str, t: &Take, taken: Taken) {
        let held = taken.held.unwrap();
        crate::cluster::leases::release(pool, &t.lease, host, held).unwrap();
    }

    #[test]
    fn an_occurrence_is_claimed_once() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let t = fire("j", 0);
        let a = take(&pool, "a", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert!(a.held.is_some() && a.claimed);
        assert_eq!(a.last_fired, None);
        let b = take(&pool, "b", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert_eq!(b.held, None, "a holds the run lease");
        assert!(!b.claimed);
        release(&pool, "a", &t, a);
        // The lease is free, but the occurrence was fired: b takes nothing.
        let b = take(&pool, "b", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert_eq!(
            (b.held, b.claimed, b.last_fired),
            (None, false, Some(at(0)))
        );
        assert!(
            claim(&pool, "other", at(0), "b").unwrap(),
            "another job's is its own"
        );
        assert!(!claim(&pool, "j", at(0), "b").unwrap());
        // The next occurrence is b's, with the next token.
        let next = fire("j", 1);
        let b = take(&pool, "b", TTL, std::slice::from_ref(&next)).unwrap()[0];
        assert!(b.claimed);
        assert_eq!(b.held.unwrap().token, a.held.unwrap().token + 1);
        assert_eq!(b.last_fired, Some(at(0)));
    }

    /// A host that claimed an occurrence and died before its run started asks for it
    /// again when it comes back (its LOGS has no run of it): it gets it, once; no other
    /// host does, and not once a later occurrence was fired.
    #[test]
    fn a_hosts_own_latest_claim_is_granted_to_it_again() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let t = fire("j", 0);
        let first = take(&pool, "a", TTL, std::slice::from_ref(&t)).unwrap()[0];
        // a died holding it; the lease expired (given up here).
        release(&pool, "a", &t, first);
        let b = take(&pool, "b", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert_eq!((b.held, b.claimed), (None, false), "not b's");
        let again = take(&pool, "a", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert!(again.held.is_some() && again.claimed, "a's own: {again:?}");
        release(&pool, "a", &t, again);
        let later = fire("j", 1);
        let b = take(&pool, "b", TTL, std::slice::from_ref(&later)).unwrap()[0];
        assert!(b.claimed);
        release(&pool, "b", &later, b);
        let stale = take(&pool, "a", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert_eq!(
            (stale.held, stale.claimed),
            (None, false),
            "a later one ran"
        );
    }

    /// A lease taken ahead of its occurrence claims nothing yet; the run's end
    /// claims it with the record, before the lease is free; nobody takes the lease
    /// for that occurrence again, ahead or not.
    #[test]
    fn a_lease_taken_ahead_claims_its_occurrence_with_the_runs_record() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let ahead = Take {
            claim: false,
            ..fire("j", 0)
        };
        let a = take(&pool, "a", TTL, std::slice::from_ref(&ahead)).unwrap()[0];
        assert!(a.held.is_some() && !a.claimed, "{a:?}");
        let b = take(&pool, "b", TTL, &[fire("j", 0)]).unwrap()[0];
        assert_eq!((b.held, b.claimed), (None, false), "a holds the lease");
        let mut rec = crate::job::triggered::records::RunRecord::running(
            "j",
            crate::job::triggered::records::TriggerKind::Schedule,
            Vec::new(),
            at(0),
            Some(at(0)),
            None,
        );
        rec.id = "1".into();
        let lease = Some((ahead.lease.as_str(), a.held.unwrap().token));
        crate::cluster::runs::record(&pool, "a", "http://a", &rec, 5, lease).unwrap();
        for t in [ahead.clone(), fire("j", 0)] {
            let b = take(&pool, "b", TTL, std::slice::from_ref(&t)).unwrap()[0];
            assert_eq!((b.held, b.last_fired), (None, Some(at(0))), "{t:?}");
        }
    }

    /// The lease row itself says what was fired under it: a lease asked ahead of an
    /// occurrence that a run on another host already fired is refused even when the
    /// statement's snapshot shows no claim (here: the claim row is missing).
    #[test]
    fn the_lease_row_refuses_an_occurrence_fired_under_it() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        pool.call("setting up", |c| {
            c.execute(
                "INSERT INTO jobhost_leases (name, holder, token, expires_at, fired) \
                 VALUES ('triggered/j', 'a', 7, clock_timestamp(), $1)",
                &[&at(0)],
            )?;
            Ok(())
        })
        .unwrap();
        let ahead = Take {
            claim: false,
            ..fire("j", 0)
        };
        let b = take(&pool, "b", TTL, std::slice::from_ref(&ahead)).unwrap()[0];
        assert_eq!(b.held, None);
        let next = Take {
            claim: false,
            ..fire("j", 1)
        };
        let b = take(&pool, "b", TTL, std::slice::from_ref(&next)).unwrap()[0];
        assert_eq!(b.held.map(|h| h.token), Some(8), "the next one is free");
    }

    /// The run before gives its lease back late, after the same host took it again
    /// for the next run: the late release finds an older token and frees nothing.
    #[test]
    fn a_late_release_of_the_run_before_frees_nothing() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let first = take(&pool, "a", TTL, &[fire("j", 0)]).unwrap()[0];
        let again = take(&pool, "a", TTL, &[fire("j", 1)]).unwrap()[0];
        let (t1, t2) = (first.held.unwrap().token, again.held.unwrap().token);
        assert!(t2 > t1, "{t1} then {t2}");
        release(&pool, "a", &fire("j", 0), first);
        let b = take(&pool, "b", TTL, &[fire("j", 2)]).unwrap()[0];
        assert_eq!(b.held, None, "a's second hold still stands");
    }

    #[test]
    fn a_batch_answers_each_request_in_its_order() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let busy = fire("busy", 0);
        let first = take(&pool, "b", TTL, std::slice::from_ref(&busy)).unwrap()[0];
        assert!(first.claimed);
        let manual = Take {
            lease: "triggered/manual".into(),
            job: "manual".into(),
            occurrence: None,
            claim: false,
        };
        let takes = vec![fire("z", 5), busy.clone(), manual, fire("a", 5)];
        let before = pool.round_trips();
        let answers = take(&pool, "a", TTL, &takes).unwrap();
        assert!(
            pool.round_trips() - before <= 2,
            "one statement (prepared once)"
        );
        let shape: Vec<_> = answers
            .iter()
            .map(|t| (t.held.is_some(), t.claimed))
            .collect();
        assert_eq!(
            shape,
            [(true, true), (false, false), (true, false), (true, true)],
            "z, busy (b holds it), manual (no occurrence), a"
        );
        assert_eq!(answers[1].last_fired, Some(at(0)));
    }

    #[test]
    fn an_unwanted_claim_is_given_back_whole() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = crate::cluster::open(&db.url).unwrap();
        let t = fire("j", 0);
        let a = take(&pool, "a", TTL, std::slice::from_ref(&t)).unwrap()[0];
        give_back(&pool, "a", &t, a.held.unwrap(), a.claimed).unwrap();
        let b = take(&pool, "b", TTL, std::slice::from_ref(&t)).unwrap()[0];
        assert!(
            b.held.is_some() && b.claimed,
            "free and unclaimed again: {b:?}"
        );
    }

    /// Hosts sending overlapping batches at once, in opposite orders: every
    /// occurrence is claimed by exactly one of them, and none fails.
    #[test]
    fn racing_batches_claim_each_occurrence_once() {
        let Some(db) = crate::cluster::testdb::fresh() else {
            return;
        };
        let pool = Arc::new(crate::cluster::open(&db.url).unwrap());
        let jobs: Vec<String> = (0..12).map(|i| format!("job{i:02}")).collect();
        let hosts: Vec<_> = (0..3)
            .map(|h| {
                let (pool, jobs) = (pool.clone(), jobs.clone());
                std::thread::spawn(move || {
                    let host = format!("h{h}");
                    let mut won = Vec::new();
                    for second in 0..15 {
                        let mut takes: Vec<Take> = jobs.iter().map(|j| fire(j, second)).collect();
                        if h % 2 == 1 {
                            takes.reverse();
                        }
                        let answers = take(&pool, &host, TTL, &takes).unwrap();
                        for (t, a) in takes.iter().zip(answers) {
                            if a.claimed {
                                won.push((t.job.clone(), second));
                            }
                            if let Some(held) = a.held {
                                crate::cluster::leases::release(&pool, &t.lease, &host, held)
                                    .unwrap();
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        let mut won: Vec<_> = hosts.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let claims = won.len();
        won.sort();
        won.dedup();
        assert_eq!(claims, won.len(), "an occurrence claimed twice");
        // A host that asks after another already released finds the fire recorded;
        // a host that asks while another holds the lease is refused: either way each
        // occurrence that anyone won is in the table once.
        let rows: i64 = pool
            .call("counting", |c| {
                Ok(c.query_one("SELECT count(*) FROM jobhost_fires", &[])?
                    .get(0))
            })
            .unwrap();
        assert_eq!(rows as usize, claims);
        assert!(
            claims >= 15,
            "at least one job per second was claimed: {claims}"
        );
    }
}
