#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use tempfile::TempDir;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn store() -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&dir.path().join(FILE_NAME)).unwrap();
    (dir, store)
}

fn msg(job: &str, payload: &str) -> NewMessage {
    NewMessage {
        job: job.into(),
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

fn put(s: &SqliteStore, m: NewMessage, now: DateTime<Utc>) -> Message {
    let e = s.enqueue(m, DAY, now).unwrap();
    assert!(!e.duplicate);
    e.message
}

fn claim_one(s: &SqliteStore, job: &str, now: DateTime<Utc>) -> Claimed {
    let mut c = s
        .claim(job, "host-a", &crate::queue::contract::run_ids(1), now)
        .unwrap();
    assert_eq!(c.len(), 1, "one message due");
    c.remove(0)
}

/// Polls `cond` until it holds; the deadline only bounds a hang.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn messages_survive_closing_and_reopening_the_store() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (queued, finished) = {
        let s = SqliteStore::open(&path).unwrap();
        let f = put(&s, msg("j", "done"), t0());
        claim_one(&s, "j", t0());
        s.settle(
            &f.id,
            Settlement::Succeeded {
                result: Some(b"ok".to_vec()),
            },
            t0(),
        )
        .unwrap();
        (put(&s, msg("j", "waiting"), t0()), f)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get("j", &queued.id).unwrap(), queued);
    assert_eq!(
        s.get("j", &finished.id).unwrap().state,
        MessageState::Succeeded
    );
    assert_eq!(
        s.result("j", &finished.id).unwrap().as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(s.payload("j", &queued.id).unwrap().0, b"waiting");
    assert_eq!(s.counts("j", t0()).unwrap().succeeded, 1);
}

#[test]
fn concurrent_enqueues_share_commits() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let before = s.commits();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| put(&s, msg("j", &format!("{t}/{i}")), Utc::now()).id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: HashSet<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 4000);
    assert_eq!(s.counts("j", Utc::now()).unwrap().queued, 4000);
    let commits = s.commits() - before;
    eprintln!("{commits} commits for 4000 concurrent enqueues");
    assert!(
        commits < 2000,
        "{commits} commits for 4000 concurrent enqueues"
    );
}

#[test]
fn two_stores_on_one_file_never_hand_out_a_message_twice() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let busy = Duration::from_secs(120);
    let a = Arc::new(SqliteStore::open_with(&path, busy).unwrap());
    let b = Arc::new(SqliteStore::open_with(&path, busy).unwrap());
    crate::queue::contract::two_stores_never_hand_out_a_message_twice(a, b);
}

#[test]
fn a_store_written_by_a_newer_jobhost_is_refused_with_the_fix() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(SqliteStore::open(&path).unwrap());
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    drop(raw);
    let e = SqliteStore::open(&path).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Unusable { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("version is {}", schema::VERSION + 1)),
        "{text}"
    );
    assert!(
        text.contains("upgrade jobhost, or move the file away"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_refused_naming_it_and_left_alone() {
    let dir = TempDir::new().unwrap();
    let mut garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    garbage[..16].copy_from_slice(b"not sqlite at al");
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let text = b"hello, I am a text file\n".repeat(40);
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        (
            "random.db",
            Some(&garbage),
            "not a readable SQLite database",
        ),
        (
            "text.db",
            Some(text.as_slice()),
            "not a readable SQLite database",
        ),
        ("other.db", None, "not a jobhost message store"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(name);
        if let Some(bytes) = bytes {
            std::fs::write(&path, bytes).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Unusable { .. }), "{name}: {text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(why), "{text}");
        assert!(text.contains("move the file away"), "{text}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{name} left as it was"
        );
    }
}

/// A second connection adds, for the test only, what makes a change fail: a trigger.
fn add_trap(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

/// Holds the write lock of `path` until dropped, so changes pile up for one batch.
struct Lock(Connection);

impl Lock {
    fn take(path: &Path) -> Lock {
        let c = Connection::open(path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        Lock(c)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("COMMIT");
    }
}

/// Starts `names.len()` enqueues while `path` is locked, waits until the writer took
/// the first and the others wait behind it (so all share one batch), then unlocks.
fn enqueue_in_one_batch(
    s: &Arc<SqliteStore>,
    path: &Path,
    names: &[&str],
) -> Vec<Result<Enqueued, StoreError>> {
    let lock = Lock::take(path);
    let (handed, taken) = s.traffic();
    let threads: Vec<_> = names
        .iter()
        .map(|name| {
            let s = s.clone();
            let m = NewMessage {
                name: Some(name.to_string()),
                ..msg("j", name)
            };
            std::thread::spawn(move || s.enqueue(m, DAY, t0()))
        })
        .collect();
    wait_for("the enqueues to wait for the writer", || {
        s.traffic() == (handed + names.len(), taken + 1)
    });
    drop(lock);
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_batch_whose_commit_fails_tells_every_caller_and_stores_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let s = Arc::new(SqliteStore::open_with(&path, Duration::from_secs(120)).unwrap());
    // A deferred foreign key is checked at COMMIT: the one poisoned message makes the
    // whole batch's commit fail, as a full disk would.
    add_trap(
        &path,
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER poison AFTER INSERT ON messages WHEN NEW.name = 'poison'
         BEGIN INSERT INTO child VALUES (42); END;",
    );
    let commits = s.commits();
    let names = ["a", "b", "poison", "c", "d", "e"];
    let answers = enqueue_in_one_batch(&s, &path, &names);
    for (name, answer) in names.iter().zip(&answers) {
        match answer {
            Err(e @ StoreError::Unavailable { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(s.commits(), commits);
    assert_eq!(
        s.counts("j", t0()).unwrap(),
        QueueCounts::default(),
        "nothing half stored"
    );
    // The store goes on working.
    put(&s, msg("j", "after"), t0());
    assert_eq!(s.counts("j", t0()).unwrap().queued, 1);
}

#[test]
fn a_change_that_fails_alone_leaves_the_rest_of_its_batch_stored() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let s = Arc::new(SqliteStore::open_with(&path, Duration::from_secs(120)).unwrap());
    add_trap(
        &path,
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.name = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned message'); END;",
    );
    let commits = s.commits();
    let names = ["a", "poison", "b"];
    let answers = enqueue_in_one_batch(&s, &path, &names);
    for (name, answer) in names.iter().zip(&answers) {
        match (*name, answer) {
            ("poison", Err(e)) => assert!(e.to_string().contains("poisoned message"), "{e}"),
            (_, Ok(e)) => assert_eq!(s.payload("j", &e.message.id).unwrap().0, name.as_bytes()),
            (_, other) => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(s.commits(), commits + 1, "one commit for the batch");
    assert_eq!(s.counts("j", t0()).unwrap().queued, 2);
}

#[test]
fn the_bare_insert_rate_is_measured_on_a_fresh_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bench.db");
    let rate = bare_insert_rate(&path, 20).unwrap();
    assert!(rate > 0.0);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.counts("bench", t0()).unwrap().queued, 20);
}

fn plan(c: &Connection, sql: &str) -> String {
    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = st.parameter_count();
    let args = rusqlite::params_from_iter((0..n).map(|_| "x"));
    let steps: Vec<String> = st
        .query_map(args, |r| r.get::<_, String>(3))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    steps.join("; ")
}

#[test]
fn claims_and_listings_seek_in_an_index_instead_of_sorting_the_queue() {
    let (d, _s) = store();
    let c = Connection::open(d.path().join(FILE_NAME)).unwrap();
    let cases = [
        (claim_sql(), "messages_claim (job=?)"),
        (
            crate::queue::list_sql("messages", COLS, '?', false, false),
            "messages_list (job=?)",
        ),
        (
            crate::queue::list_sql("messages", COLS, '?', false, true),
            "messages_list (job=? AND id<?)",
        ),
        (
            crate::queue::list_sql("messages", COLS, '?', true, false),
            "messages_state (job=? AND state=?)",
        ),
        (
            crate::queue::list_sql("messages", COLS, '?', true, true),
            "messages_state (job=? AND state=? AND id<?)",
        ),
    ];
    for (sql, index) in cases {
        let plan = plan(&c, &sql);
        assert!(plan.contains(index), "{sql}\n{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
    }
}

#[test]
fn a_write_locked_out_too_long_is_unavailable_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    let s = SqliteStore::open_with(&path, Duration::from_millis(200)).unwrap();
    let kept = put(&s, msg("j", "kept"), t0());
    let lock = Lock::take(&path);
    let e = s.enqueue(msg("j", "refused"), DAY, t0()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("locked") && text.contains("try again"),
        "{text}"
    );
    // Reads go on beside the lock (WAL).
    assert_eq!(s.get("j", &kept.id).unwrap(), kept);
    drop(lock);
    put(&s, msg("j", "after"), t0());
    assert_eq!(
        s.counts("j", t0()).unwrap().queued,
        2,
        "the refused one was not stored"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Slow (a million rows): `cargo test --release -- --ignored million`.
#[test]
#[ignore]
fn a_million_queued_messages_stay_on_disk() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = schema::connect(&path, schema::BUSY_TIMEOUT).unwrap();
        c.execute_batch("PRAGMA synchronous = OFF; BEGIN").unwrap();
        for i in 0..1_000_000i64 {
            let m = NewMessage {
                priority: i % 3,
                ..msg("j", &format!("message number {i} with a little padding"))
            };
            insert(&c, m, t0() + chrono::Duration::milliseconds(i)).unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
    }
    let before = rss_kib();
    let s = Arc::new(SqliteStore::open(&path).unwrap());
    let now = t0() + secs(3600);
    assert_eq!(s.counts("j", now).unwrap().queued, 1_000_000);
    let mut before_id: Option<String> = None;
    for _ in 0..50 {
        let page = s
            .list("j", Some(MessageState::Queued), 100, before_id.as_deref())
            .unwrap();
        before_id = page.last().map(|m| m.id.clone());
    }
    for _ in 0..100 {
        let c = s
            .claim("j", "host-a", &crate::queue::contract::run_ids(10), now)
            .unwrap();
        assert_eq!(c.len(), 10);
        assert_eq!(c[0].message.priority, 2);
        for m in c {
            s.settle(&m.message.id, Settlement::Succeeded { result: None }, now)
                .unwrap();
        }
    }
    for i in 0..200 {
        put(&s, msg("j", &format!("new {i}")), now);
    }
    s.next_due("j").unwrap();
    let grown = rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB over a store of a million messages");
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn hosts_opening_a_new_file_at_once_all_get_the_one_schema() {
    let dir = TempDir::new().unwrap();
    let path = Arc::new(dir.path().join(FILE_NAME));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let s = SqliteStore::open_with(&path, Duration::from_secs(120)).unwrap();
                put(&s, msg("j", &format!("{i}")), t0());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.counts("j", t0()).unwrap().queued, 4);
    let raw = Connection::open(&*path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
}
