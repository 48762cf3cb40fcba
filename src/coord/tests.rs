//! The files implementation, as two hosts sharing one LOGS folder see it: one holder
//! at a time, and a lock given up is free at once. (The store's is covered by
//! `cluster::leases`, `cluster::fires` and the cluster integration tests.)

use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::files::Files;
use super::*;
use crate::layout::LogsLayout;

/// Two hosts of one machine on the same LOGS, each with its instance name.
fn two_hosts(logs: &std::path::Path) -> (Arc<dyn Coordination>, Arc<dyn Coordination>) {
    let host = |name: &str| -> Arc<dyn Coordination> {
        Arc::new(Files::new(LogsLayout::new(
            logs.to_path_buf(),
            Some(name.to_string()),
        )))
    };
    (host("a"), host("b"))
}

#[tokio::test]
async fn a_singleton_lock_has_one_holder_and_is_free_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(tmp.path());
    let (fa, fb) = (FileWriter::new("etl"), FileWriter::new("etl"));
    let held = a.take_singleton("etl", &fa).await.unwrap();
    assert_eq!(
        held.fencing_token(),
        None,
        "a lock file has no fencing token"
    );
    assert_eq!(held.renew_at(), None, "a lock file is not renewed");
    assert!(
        matches!(b.take_singleton("etl", &fb).await, Err(None)),
        "the other host is refused, as busy (not as an error)"
    );
    // Another job's lock is another file.
    let other = b.take_singleton("other", &fb).await.unwrap();
    // Released: closed after the status writes asked before it.
    a.release_singleton(held, &fa).await;
    fa.flush().await;
    let taken = b.take_singleton("etl", &fb).await.unwrap();
    assert!(matches!(a.take_singleton("etl", &fa).await, Err(None)));
    b.release_singleton(taken, &fb).await;
    b.release_singleton(other, &fb).await;
    fb.flush().await;
    assert!(a.take_singleton("etl", &fa).await.is_ok());
}

#[tokio::test]
async fn a_singleton_lock_released_but_not_yet_closed_is_taken_back_by_its_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(tmp.path());
    let fa = FileWriter::new("etl");
    let held = a.take_singleton("etl", &fa).await.unwrap();
    a.release_singleton(held, &fa).await;
    // Whether or not the writer closed it yet, the holder gets it again.
    assert!(a.take_singleton("etl", &fa).await.is_ok());
}

#[tokio::test]
async fn a_run_lock_has_one_holder_and_is_free_once_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(tmp.path());
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let held = a.take_run("nightly", Some(at)).await.unwrap();
    let held = held.expect("hosts sharing LOGS take a run lock");
    assert_eq!(held.renew_at(), None);
    assert_eq!(held.claimed(), None, "lock files claim nothing");
    assert_eq!(
        b.take_run("nightly", Some(at)).await.err(),
        Some(Refused::Busy)
    );
    assert!(b.take_run("other", None).await.unwrap().is_some());
    let mut held = held;
    assert_eq!(
        held.give_up_with_record(),
        None,
        "nothing to give up in a record"
    );
    drop(held);
    let again = b.take_run("nightly", None).await.unwrap();
    assert!(again.is_some(), "free once the holder dropped it");
    assert_eq!(a.take_run("nightly", None).await.err(), Some(Refused::Busy));
}

#[tokio::test]
async fn a_host_alone_on_its_logs_takes_no_run_lock_and_nothing_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = Files::new(LogsLayout::new(tmp.path().to_path_buf(), None));
    assert!(alone.logs_alone());
    assert!(alone.take_run("nightly", None).await.unwrap().is_none());
    assert!(!tmp.path().join("triggered/nightly/run.lock").exists());
    assert_eq!(alone.lead(), None);
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    assert!(alone.take_run_ahead("nightly", at).await.is_none());
    assert_eq!(alone.claim_fire("nightly", at).await, Ok(()));
}

#[tokio::test]
async fn the_last_fire_is_read_from_the_jobs_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = two_hosts(tmp.path());
    assert_eq!(a.last_fired("nightly", None).await, None);
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let logs = LogsLayout::new(tmp.path().to_path_buf(), None)
        .job_dir(crate::spec::JobType::Triggered, "nightly");
    std::fs::create_dir_all(&logs).unwrap();
    crate::job::triggered::records::save_last_fired(&logs, at).unwrap();
    assert_eq!(a.last_fired("nightly", None).await, Some(at));
}

/// What both implementations promise, as hosts `a` and `b` see it (`fa`, `fb`: their
/// job tasks' status writers).
async fn one_holder_at_a_time(a: &dyn Coordination, b: &dyn Coordination) {
    let (fa, fb) = (FileWriter::new("etl"), FileWriter::new("etl"));
    let held = a.take_singleton("etl", &fa).await.unwrap();
    assert!(matches!(b.take_singleton("etl", &fb).await, Err(None)));
    a.release_singleton(held, &fa).await;
    fa.flush().await;
    let held = b.take_singleton("etl", &fb).await.unwrap();
    assert!(matches!(a.take_singleton("etl", &fa).await, Err(None)));
    b.release_singleton(held, &fb).await;
    fb.flush().await;

    let held = a.take_run("nightly", None).await.unwrap();
    assert!(held.is_some());
    assert_eq!(b.take_run("nightly", None).await.err(), Some(Refused::Busy));
    // Dropped: given up (a lease off the caller's thread, so asked until it is).
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match b.take_run("nightly", None).await {
            Ok(Some(_)) => break,
            Err(Refused::Busy) => {}
            other => panic!("unexpected {:?}", other.map(|h| h.is_some())),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run lock stays held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn lock_files_keep_the_promise() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(tmp.path());
    one_holder_at_a_time(a.as_ref(), b.as_ref()).await;
}

/// The store's implementation over a fresh database: the same promise, plus what only
/// leases carry (tokens, renewals, occurrences claimed with the lock).
#[test]
fn leases_keep_the_promise_and_carry_tokens_and_claims() {
    use super::store::Store;
    use crate::cluster::member::{ClusterLink, Member};
    let Some(db) = crate::cluster::testdb::fresh() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pool = crate::cluster::open(&db.url).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let host = |name: &str| -> Arc<dyn Coordination> {
            let ttl = std::time::Duration::from_secs(30);
            Arc::new(Store::new(Arc::new(ClusterLink {
                deploys: Arc::new(crate::cluster::deploys::Deploys::new(
                    pool.clone(),
                    name,
                    tmp.path(),
                )),
                run_desk: crate::cluster::fires::RunDesk::start(
                    pool.clone(),
                    name.to_string(),
                    ttl,
                ),
                pool: pool.clone(),
                me: Member {
                    name: name.to_string(),
                    api_addr: "http://127.0.0.1:1".into(),
                    ttl,
                },
            })))
        };
        let (a, b) = (host("a"), host("b"));
        one_holder_at_a_time(a.as_ref(), b.as_ref()).await;
        assert!(a.logs_alone());
        assert!(a.lead().is_some());

        // Tokens grow with each new holder: etl was a's (1), then b's (2).
        let f = FileWriter::new("etl");
        let held = a.take_singleton("etl", &f).await.unwrap();
        assert_eq!(held.fencing_token(), Some(3));
        assert!(held.renew_at().is_some());
        let mut held = held;
        assert_eq!(a.renew_singleton(&mut held).await, Renewal::Kept);
        a.release_singleton(held, &f).await;

        // A scheduled run's lock claims its occurrence: fired once, on one host.
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let mut held = a.take_run("hourly", Some(at)).await.unwrap().unwrap();
        assert_eq!(held.claimed(), Some(at));
        assert_eq!(a.renew_run("hourly", &mut held).await, Renewal::Kept);
        drop(held);
        assert_eq!(
            b.take_run("hourly", Some(at)).await.err(),
            Some(Refused::Busy)
        );
        let later = at + chrono::TimeDelta::hours(1);
        // Once a's lease is given back (off its thread), b takes the next occurrence
        // and learns the last fire with it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut held = loop {
            if let Ok(Some(held)) = b.take_run("hourly", Some(later)).await {
                break held;
            }
            assert!(std::time::Instant::now() < deadline, "a's lease stays held");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(b.last_fired("hourly", Some(&held)).await, Some(at));
        let (name, _token) = held.give_up_with_record().unwrap();
        assert_eq!(name, "triggered/hourly");
        // A skipped occurrence is claimed once.
        let skipped = at + chrono::TimeDelta::hours(2);
        assert_eq!(a.claim_fire("hourly", skipped).await, Ok(()));
        assert!(b.claim_fire("hourly", skipped).await.is_err());
    });
    drop(rt);
}
