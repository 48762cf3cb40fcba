//! What only the PostgreSQL store has: several hosts on one database, its schema's
//! versions, leases of dead hosts, wake-ups, broken connections and round trips.
//! The queue's semantics themselves are the shared contract (`contract`).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::cluster::testdb::{self, TestDb, wait_for};
use crate::cluster::{hosts, listen, schema};
use crate::queue::contract::{DAY, claim_one, msg, put, run_ids, t0};
use crate::queue::policy::{self, RunEnd};
use crate::spec::settings::queue::QueueSettings;

fn store() -> Option<(TestDb, PgStore)> {
    let db = testdb::fresh()?;
    let s = PgStore::open(&db.url).unwrap();
    Some((db, s))
}

#[test]
fn two_hosts_claiming_from_four_threads_never_hand_out_a_message_twice() {
    let Some((db, a)) = store() else { return };
    let a = Arc::new(a);
    let b = Arc::new(PgStore::open(&db.url).unwrap());
    crate::queue::contract::two_stores_never_hand_out_a_message_twice(a, b);
}

#[test]
fn hosts_migrating_a_new_database_at_once_all_get_the_one_schema() {
    let Some(db) = testdb::fresh() else { return };
    let url = Arc::new(db.url.clone());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = PgStore::open(&url).unwrap();
                put(&s, msg("j", &format!("{i}")), t0());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = PgStore::open(&db.url).unwrap();
    assert_eq!(s.counts("j", t0()).unwrap().queued, 4);
    assert_eq!(schema::version(s.pool()).unwrap(), schema::VERSION);
    let rows: i64 = db
        .raw()
        .query_one("SELECT count(*) FROM jobhost_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one version row");
}

#[test]
fn a_database_with_a_newer_schema_is_refused_with_the_fix_and_left_alone() {
    let Some((db, s)) = store() else { return };
    let kept = put(&s, msg("j", "kept"), t0());
    drop(s);
    let newer = schema::VERSION + 1;
    db.raw()
        .execute("UPDATE jobhost_schema SET version = $1", &[&newer])
        .unwrap();
    let e = PgStore::open(&db.url).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Unusable { .. }), "{text}");
    assert!(text.contains(&db.url), "names the store: {text}");
    assert!(text.contains(&format!("version is {newer}")), "{text}");
    assert!(text.contains("upgrade jobhost"), "{text}");
    let mut raw = db.raw();
    let version: i32 = raw
        .query_one("SELECT version FROM jobhost_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, newer, "left as it was");
    let payload: Vec<u8> = raw
        .query_one(
            "SELECT payload FROM jobhost_messages WHERE id = $1",
            &[&kept.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(payload, b"kept");
}

#[test]
fn a_store_that_cannot_be_reached_is_named_with_the_fix_and_no_password() {
    let Some(db) = testdb::fresh() else { return };
    let missing = testdb::with_database(&db.url, "jobhost_no_such_database");
    let e = PgStore::open(&missing).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{text}");
    assert!(text.contains("jobhost_no_such_database"), "{text}");
    assert!(text.contains("createdb"), "{text}");

    let e = PgStore::open("postgres://u:secret@127.0.0.1:1/db")
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(text.contains("postgres://u:***@127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("check that PostgreSQL runs"), "{text}");

    let e = PgStore::open("mysql://root@127.0.0.1/db").err().unwrap();
    assert!(matches!(e, StoreError::Unusable { .. }), "{e}");
    assert!(e.to_string().contains("postgres://USER@HOST"), "{e}");
}

#[test]
fn a_broken_connection_is_dropped_and_the_next_call_reconnects() {
    let Some((db, s)) = store() else { return };
    let m = put(&s, msg("j", "x"), t0());
    let before = s.pool().connects();
    let killed: i64 = db
        .raw()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'jobhost'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the store's connection was terminated");
    // The call that meets the broken connection may fail; it says so and why.
    if let Err(e) = s.get("j", &m.id) {
        let text = e.to_string();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{text}");
        assert!(text.contains(&db.url), "{text}");
    }
    assert_eq!(s.get("j", &m.id).unwrap(), m, "the next call works again");
    assert!(s.pool().connects() > before, "it reconnected");
}

/// The record of message `m`'s run `run`, as a job task closes it.
fn message_run(m: &Message, run: &str) -> crate::cluster::runs::RunRow {
    use crate::job::triggered::records::{RunRecord, RunState, TriggerKind};
    let mut rec = RunRecord::running(&m.job, TriggerKind::Message, vec![], t0(), None, None);
    rec.id = run.to_string();
    rec.message_id = Some(m.id.clone());
    rec.status = RunState::Success;
    crate::cluster::runs::RunRow::new("host-a", "http://a:8080", &rec, 50).unwrap()
}

#[test]
fn a_message_run_costs_two_round_trips_its_claim_and_its_settlement() {
    let Some((_db, s)) = store() else { return };
    let cycle = |i: usize| {
        put(&s, msg("j", &format!("{i}")), t0());
        let before = s.pool().round_trips();
        let c = claim_one(&s, "j", t0());
        let claimed = s.pool().round_trips();
        let row = message_run(&c.message, &c.message.runs[0]);
        let end = Settlement::Succeeded { result: None };
        let (after, recorded) = s
            .settle_recording(&c.message.id, "host-a", end, t0(), &row)
            .unwrap();
        assert!(recorded, "the store added the run's history row");
        assert_eq!(after.unwrap().state, MessageState::Succeeded);
        let settled = s.pool().round_trips();
        (claimed - before, settled - claimed)
    };
    // The first prepares its statements on the connection.
    cycle(0);
    for i in 1..10 {
        assert_eq!(
            cycle(i),
            (1, 1),
            "claim (with its run id), settlement (with history)"
        );
    }
}

#[test]
fn a_message_run_shows_once_in_the_history_under_the_run_id_its_claim_gave_it() {
    let Some((_db, s)) = store() else { return };
    let m = put(&s, msg("j", "x"), t0());
    let c = claim_one(&s, "j", t0());
    let run = c.message.runs[0].clone();
    let row = message_run(&c.message, &run);
    let end = Settlement::Retry {
        at: t0(),
        error: "exit 1".into(),
    };
    s.settle_recording(&m.id, "host-a", end, t0(), &row)
        .unwrap();
    let history = crate::cluster::runs::history(s.pool(), "j", None, 100).unwrap();
    assert_eq!(history.len(), 1, "one row: {history:?}");
    assert_eq!(history[0].record.id, run);
    assert_eq!(history[0].record.message_id.as_deref(), Some(m.id.as_str()));
    assert_eq!(history[0].host, "host-a");
    assert_eq!(s.get("j", &m.id).unwrap().runs, std::slice::from_ref(&run));

    // The second attempt's run goes beside it; a host that lost the message meanwhile
    // does not settle it, but its run happened and is listed.
    let c = claim_one(&s, "j", t0());
    let second = c.message.runs[1].clone();
    let row = message_run(&c.message, &second);
    let end = Settlement::Succeeded { result: None };
    let (after, _) = s
        .settle_recording(&m.id, "host-b", end, t0(), &row)
        .unwrap();
    assert_eq!(after, None, "only its owner settles it");
    assert_eq!(s.get("j", &m.id).unwrap().state, MessageState::Running);
    let ids: HashSet<String> = crate::cluster::runs::history(s.pool(), "j", None, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.record.id)
        .collect();
    assert_eq!(ids, HashSet::from([run, second]));
}

#[test]
fn the_settlement_trims_the_hosts_history_to_the_jobs_history_size() {
    let Some((_db, s)) = store() else { return };
    for i in 0..6 {
        put(&s, msg("j", &format!("{i}")), t0());
        let c = claim_one(&s, "j", t0());
        let mut row = message_run(&c.message, &c.message.runs[0]);
        row.keep = 3;
        let end = Settlement::Succeeded { result: None };
        s.settle_recording(&c.message.id, "host-a", end, t0(), &row)
            .unwrap();
    }
    let n = crate::cluster::runs::history(s.pool(), "j", None, 100)
        .unwrap()
        .len();
    assert!((3..=4).contains(&n), "trimmed to about 3: {n}");
}

#[test]
fn heartbeats_keep_hosts_alive_and_a_dead_hosts_messages_go_back_to_the_queue() {
    let Some((_db, s)) = store() else { return };
    let pool = s.pool().clone();
    let long = Duration::from_secs(3600);
    let a = hosts::heartbeat(&pool, "host-a", "http://a:8080", "0.1.0", long).unwrap();
    assert_eq!(
        (a.name.as_str(), a.api_addr.as_str(), a.version.as_str()),
        ("host-a", "http://a:8080", "0.1.0")
    );
    assert!(a.lease_expires_at > a.heartbeat_at);
    let b = hosts::heartbeat(&pool, "host-b", "http://b:8080", "0.1.0", long).unwrap();
    let names =
        |v: Vec<hosts::HostInfo>| -> Vec<String> { v.into_iter().map(|h| h.name).collect() };
    assert_eq!(
        names(hosts::live_hosts(&pool).unwrap()),
        ["host-a", "host-b"]
    );

    // Each host holds a message; a third owner never joined at all.
    let now = t0();
    for (owner, body) in [("host-a", "a"), ("host-b", "b"), ("ghost", "g")] {
        put(&s, msg("j", body), now);
        s.claim("j", owner, &run_ids(1), now).unwrap();
    }
    assert_eq!(hosts::dead_owners(&pool).unwrap(), ["ghost"]);

    // host-b's next beat is a short one it does not renew: it dies.
    hosts::heartbeat(
        &pool,
        "host-b",
        "http://b:8080",
        "0.1.0",
        Duration::from_millis(50),
    )
    .unwrap();
    wait_for("host-b's lease to run out", || {
        hosts::live_hosts(&pool).unwrap().len() == 1
    });
    assert_eq!(names(hosts::live_hosts(&pool).unwrap()), ["host-a"]);
    assert_eq!(hosts::dead_owners(&pool).unwrap(), ["ghost", "host-b"]);
    assert_eq!(hosts::all_hosts(&pool).unwrap().len(), 2);

    // A live host gives their messages back as the policy says for a host that died.
    let q = QueueSettings::default();
    let dead = hosts::dead_owners(&pool).unwrap();
    let back = s
        .expire_owners(&dead, now, |m| {
            policy::settle(&q, m.attempts, RunEnd::HostDied, None, now, 0.0)
        })
        .unwrap();
    assert_eq!(back.len(), 2);
    for m in &back {
        assert_eq!(
            (m.state, m.attempts, m.owner.clone()),
            (MessageState::Queued, 1, None)
        );
        assert!(m.last_error.is_some(), "says why: {m:?}");
    }
    assert!(hosts::dead_owners(&pool).unwrap().is_empty());
    assert_eq!(
        s.counts("j", now).unwrap().running,
        1,
        "host-a keeps its own"
    );

    // host-b comes back: it cannot settle what was given away, and starts anew.
    let again = hosts::heartbeat(&pool, "host-b", "http://b:8080", "0.2.0", long).unwrap();
    assert!(again.started_at > b.started_at);
    let given = back.iter().find(|m| m.owner.is_none()).unwrap();
    let retried_at = given.next_attempt_at.unwrap();
    let c = s.claim("j", "host-a", &run_ids(2), retried_at).unwrap();
    assert_eq!(c.len(), 2);
    let theirs = c.iter().find(|c| c.message.id == given.id).unwrap();
    assert_eq!(
        theirs.message.attempts, 2,
        "the dead host's attempt counted"
    );
    let late = s
        .settle_owned(
            &given.id,
            "host-b",
            Settlement::Succeeded { result: None },
            now,
        )
        .unwrap();
    assert_eq!(
        late, None,
        "a host's late settlement of a message now held by another"
    );
    assert_eq!(
        s.get("j", &given.id).unwrap().owner.as_deref(),
        Some("host-a")
    );

    hosts::leave(&pool, "host-b").unwrap();
    assert_eq!(names(hosts::live_hosts(&pool).unwrap()), ["host-a"]);
}

#[test]
fn queued_messages_are_announced_to_the_listener_even_after_it_reconnects() {
    let Some((db, s)) = store() else { return };
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = heard.clone();
    let listener = listen::listen(&db.url, move |job| {
        sink.lock().unwrap().push(job.to_string());
    })
    .unwrap();
    let has = |job: &str| heard.lock().unwrap().iter().any(|j| j == job);

    // A message due later is not announced: nobody is woken to find nothing due.
    let mut later = msg("later", "x");
    later.not_before = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    put(&s, later, chrono::Utc::now());
    put(&s, msg("enqueued", "x"), chrono::Utc::now());
    wait_for("the enqueue's announcement", || has("enqueued"));
    assert!(!has("later"), "a delayed message was announced");

    let m = put(&s, msg("released", "x"), chrono::Utc::now());
    heard.lock().unwrap().clear();
    claim_one(&s, "released", chrono::Utc::now());
    s.settle(&m.id, Settlement::Released, chrono::Utc::now())
        .unwrap();
    wait_for("the release's announcement", || has("released"));

    let m = put(&s, msg("requeued", "x"), chrono::Utc::now());
    claim_one(&s, "requeued", chrono::Utc::now());
    s.settle(
        &m.id,
        Settlement::Dead {
            error: "x".into(),
            result: None,
        },
        chrono::Utc::now(),
    )
    .unwrap();
    heard.lock().unwrap().clear();
    s.requeue("requeued", &m.id, chrono::Utc::now()).unwrap();
    wait_for("the requeue's announcement", || has("requeued"));

    // Its connection cut, the listener reconnects and says "look again".
    heard.lock().unwrap().clear();
    db.raw()
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'jobhost listener'",
        )
        .unwrap();
    wait_for("the listener to reconnect", || listener.reconnects() == 1);
    wait_for("the look-again call", || has(""));
    put(&s, msg("after", "x"), chrono::Utc::now());
    wait_for("an announcement after reconnecting", || has("after"));
    drop(listener);
}

#[test]
fn a_keyed_enqueue_from_several_hosts_at_once_stores_one_message() {
    let Some((db, s)) = store() else { return };
    let url = Arc::new(db.url.clone());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = PgStore::open(&url).unwrap();
                let m = NewMessage {
                    idempotency_key: Some("same".into()),
                    ..msg("j", &format!("{i}"))
                };
                s.enqueue(m, DAY, t0()).unwrap()
            })
        })
        .collect();
    let answers: Vec<Enqueued> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let firsts: HashSet<&str> = answers.iter().map(|a| a.message.id.as_str()).collect();
    assert_eq!(firsts.len(), 1, "every answer names the one message");
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
    assert_eq!(s.counts("j", t0()).unwrap().queued, 1);
}

#[test]
fn a_pool_of_one_lends_its_connection_in_turn() {
    let Some(db) = testdb::fresh() else { return };
    drop(PgStore::open(&db.url).unwrap());
    let pool = Arc::new(crate::cluster::Pool::connect_with(&db.url, 1).unwrap());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.with(|_conn| {
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Ok::<_, ClusterError>(())
            })
            .unwrap();
        })
    };
    held_rx.recv().unwrap();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || hosts::live_hosts(&pool).unwrap().len())
    };
    // The waiter cannot finish while the one connection is lent out.
    assert!(!waiter.is_finished());
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap(), 0);
    assert_eq!(pool.connects(), 1, "one connection, lent in turn");
}

/// Job tasks hold the store in async code and call it on the blocking pool: it must
/// work there, and dropping it in async code must not try to block the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_used_from_the_blocking_pool_and_dropped_in_async_code() {
    let Some((db, s)) = tokio::task::spawn_blocking(store).await.unwrap() else {
        return;
    };
    let s: Arc<dyn QueueStore> = Arc::new(s);
    let s2 = s.clone();
    let m = tokio::task::spawn_blocking(move || put(&*s2, msg("j", "x"), t0()))
        .await
        .unwrap();
    assert_eq!(m.state, MessageState::Queued);
    drop(s);
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}
