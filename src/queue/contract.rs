//! The queue contract: what every [`QueueStore`] must do, written once against the
//! trait and run over both stores, the embedded one and PostgreSQL, so the two
//! cannot drift apart. Each store's own tests cover what only it has (group commit
//! and files for SQLite; hosts, round trips and notifications for PostgreSQL).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::queue::{
    Claimed, Message, MessageState, NewMessage, QueueCounts, QueueStore, Settlement, StoreError,
};

pub const DAY: Duration = Duration::from_secs(86_400);

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

pub fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

pub fn msg(job: &str, payload: &str) -> NewMessage {
    NewMessage {
        job: job.into(),
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

pub fn put(s: &dyn QueueStore, m: NewMessage, now: DateTime<Utc>) -> Message {
    let e = s.enqueue(m, DAY, now).unwrap();
    assert!(!e.duplicate);
    e.message
}

/// `n` distinct run ids, as a job task mints them before a claim.
pub fn run_ids(n: usize) -> Vec<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let first = NEXT.fetch_add(n as u64, Ordering::Relaxed);
    (0..n as u64)
        .map(|i| format!("{:018}", first + i))
        .collect()
}

pub fn claim_one(s: &dyn QueueStore, job: &str, now: DateTime<Utc>) -> Claimed {
    let mut c = s.claim(job, "host-a", &run_ids(1), now).unwrap();
    assert_eq!(c.len(), 1, "one message due");
    c.remove(0)
}

/// Runs each named contract over a fresh embedded store and a fresh PostgreSQL
/// database (skipped, in one line, where no server answers).
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().unwrap();
                    let path = dir.path().join(crate::queue::sqlite::FILE_NAME);
                    let s = crate::queue::sqlite::SqliteStore::open(&path).unwrap();
                    super::$name(&s);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(db) = crate::cluster::testdb::fresh() else {
                        return;
                    };
                    let s = crate::queue::postgres::PgStore::open(&db.url).unwrap();
                    super::$name(&s);
                }
            )*
        }
    };
}

contract!(
    an_enqueued_message_reads_back_with_its_payload,
    claims_go_by_priority_then_due_time_then_enqueue_order,
    a_claim_marks_the_message_running_for_its_owner_and_counts_an_attempt,
    each_message_claimed_gets_its_run_id_in_claiming_order,
    a_minted_run_id_is_replaced_or_dropped,
    each_settlement_moves_the_message_as_documented,
    an_idempotency_key_is_remembered_within_the_window_only,
    requeue_brings_back_a_finished_message_only,
    cancel_answers_the_message_as_it_was_and_refuses_a_finished_one,
    whole_states_are_requeued_or_deleted_but_never_running_ones,
    listings_are_newest_first_and_paged,
    counts_follow_every_change_and_age_the_oldest_queued_message,
    sweep_removes_finished_messages_past_retention_and_forgets_old_keys,
    callbacks_are_due_once_settled_and_rescheduled_until_done,
);

pub fn an_enqueued_message_reads_back_with_its_payload(s: &dyn QueueStore) {
    let m = put(
        s,
        NewMessage {
            content_type: Some("application/json".into()),
            correlation_id: Some("c-1".into()),
            name: Some("a.json".into()),
            priority: 3,
            reply_to: Some("http://example.invalid/cb".into()),
            ..msg("etl", "{\"n\":1}")
        },
        t0(),
    );
    assert_eq!(m.state, MessageState::Queued);
    assert_eq!(m.payload_bytes, 7);
    assert_eq!(m.next_attempt_at, Some(t0()));
    assert_eq!(m.enqueued_at, t0());
    assert_eq!(
        s.get("etl", &m.id).unwrap(),
        m,
        "what enqueue answered is what is stored"
    );
    let (payload, ct) = s.payload("etl", &m.id).unwrap();
    assert_eq!(payload, b"{\"n\":1}");
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(s.result("etl", &m.id).unwrap(), None);
    for e in [
        s.get("other", &m.id).unwrap_err(),
        s.get("etl", "nope").unwrap_err(),
        s.payload("other", &m.id).unwrap_err(),
        s.result("etl", "nope").unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }
}

pub fn claims_go_by_priority_then_due_time_then_enqueue_order(s: &dyn QueueStore) {
    let now = t0();
    let late = put(
        s,
        NewMessage {
            not_before: Some(now + secs(60)),
            priority: 9,
            ..msg("j", "late")
        },
        now,
    );
    let first_low = put(s, msg("j", "low 1"), now);
    let second_low = put(s, msg("j", "low 2"), now);
    let earlier_due = put(
        s,
        NewMessage {
            not_before: Some(now - secs(5)),
            ..msg("j", "low, due earlier")
        },
        now,
    );
    let high = put(
        s,
        NewMessage {
            priority: 5,
            ..msg("j", "high")
        },
        now,
    );
    put(s, msg("other", "another job's"), now);
    assert_eq!(s.next_due("j").unwrap(), Some(now - secs(5)));

    let order: Vec<String> = s
        .claim("j", "host-a", &run_ids(10), now)
        .unwrap()
        .into_iter()
        .map(|c| c.message.id)
        .collect();
    assert_eq!(
        order,
        [high.id, earlier_due.id, first_low.id, second_low.id]
    );
    assert!(
        s.claim("j", "host-a", &run_ids(10), now)
            .unwrap()
            .is_empty(),
        "the late one is not due"
    );
    assert_eq!(s.next_due("j").unwrap(), Some(now + secs(60)));
    let c = claim_one(s, "j", now + secs(60));
    assert_eq!(c.message.id, late.id);
    assert_eq!(c.payload, b"late");
    assert_eq!(s.next_due("j").unwrap(), None);
    assert!(s.claim("j", "host-a", &[], now).unwrap().is_empty());
}

pub fn a_claim_marks_the_message_running_for_its_owner_and_counts_an_attempt(s: &dyn QueueStore) {
    let m = put(s, msg("j", "x"), t0());
    let c = claim_one(s, "j", t0());
    assert_eq!(c.message.state, MessageState::Running);
    assert_eq!(c.message.attempts, 1);
    assert_eq!(c.message.owner.as_deref(), Some("host-a"));
    assert_eq!(c.message.next_attempt_at, None);
    assert_eq!(s.get("j", &m.id).unwrap(), c.message);
    assert_eq!(s.running("j").unwrap(), std::slice::from_ref(&c.message));
    assert!(s.running("other").unwrap().is_empty());

    assert_eq!(c.message.runs.len(), 1, "the claim gave it its run id");
}

pub fn each_message_claimed_gets_its_run_id_in_claiming_order(s: &dyn QueueStore) {
    let now = t0();
    let low = put(s, msg("j", "low"), now);
    let high = put(
        s,
        NewMessage {
            priority: 5,
            ..msg("j", "high")
        },
        now,
    );
    let ids = [
        "000000000000000010",
        "000000000000000011",
        "000000000000000012",
    ]
    .map(String::from);
    let c = s.claim("j", "host-a", &ids, now).unwrap();
    let got: Vec<(String, Vec<String>)> = c
        .iter()
        .map(|c| (c.message.id.clone(), c.message.runs.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (high.id.clone(), vec![ids[0].clone()]),
            (low.id.clone(), vec![ids[1].clone()])
        ],
        "the one left over is not used"
    );
    assert_eq!(s.get("j", &low.id).unwrap().runs, [ids[1].clone()]);

    // Retried: the next claim adds the next run.
    s.settle(
        &low.id,
        Settlement::Retry {
            at: now,
            error: "exit 1".into(),
        },
        now,
    )
    .unwrap();
    let again = s.claim("j", "host-a", &run_ids(1), now).unwrap();
    assert_eq!(again[0].message.runs.len(), 2);
    assert_eq!(again[0].message.runs[0], ids[1]);
    assert_eq!(s.get("j", &low.id).unwrap().runs, again[0].message.runs);
}

pub fn a_minted_run_id_is_replaced_or_dropped(s: &dyn QueueStore) {
    let m = put(s, msg("j", "x"), t0());
    let first = claim_one(s, "j", t0()).message.runs[0].clone();
    s.replace_run(&m.id, &first, Some("000000000000000099"))
        .unwrap();
    assert_eq!(s.get("j", &m.id).unwrap().runs, ["000000000000000099"]);
    s.settle(&m.id, Settlement::Released, t0()).unwrap();
    let second = claim_one(s, "j", t0()).message.runs[1].clone();
    s.replace_run(&m.id, &second, None).unwrap();
    assert_eq!(s.get("j", &m.id).unwrap().runs, ["000000000000000099"]);
    s.replace_run("gone", &second, None).unwrap();
}

pub fn each_settlement_moves_the_message_as_documented(s: &dyn QueueStore) {
    let now = t0();
    let with_reply = |body: &str| NewMessage {
        reply_to: Some("http://example.invalid/cb".into()),
        ..msg("j", body)
    };

    // Retry: queued again at `at`, the error kept, the attempt counted.
    let m = put(s, msg("j", "retry"), now);
    claim_one(s, "j", now);
    let at = now + secs(10);
    let r = s
        .settle(
            &m.id,
            Settlement::Retry {
                at,
                error: "exit 1".into(),
            },
            now,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.state, r.attempts, r.next_attempt_at, r.owner.clone()),
        (MessageState::Queued, 1, Some(at), None)
    );
    assert_eq!(r.last_error.as_deref(), Some("exit 1"));
    assert!(
        s.claim("j", "host-a", &run_ids(1), now).unwrap().is_empty(),
        "not due before `at`"
    );

    // Released: queued again at once, the attempt not counted.
    let c = claim_one(s, "j", at);
    assert_eq!(c.message.attempts, 2);
    let r = s.settle(&m.id, Settlement::Released, at).unwrap().unwrap();
    assert_eq!(
        (r.state, r.attempts, r.next_attempt_at),
        (MessageState::Queued, 1, Some(at))
    );

    // Succeeded with a reply_to: finished, its result kept, a callback due at once.
    let ok = put(s, with_reply("ok"), now);
    s.cancel("j", &m.id, now).unwrap();
    claim_one(s, "j", now);
    let done = now + secs(3);
    let r = s
        .settle(
            &ok.id,
            Settlement::Succeeded {
                result: Some(b"42".to_vec()),
            },
            done,
        )
        .unwrap()
        .unwrap();
    assert_eq!(r.state, MessageState::Succeeded);
    assert_eq!(
        (r.finished_at, r.callback_due, r.result_bytes),
        (Some(done), Some(done), Some(2))
    );
    assert_eq!((r.owner.clone(), r.next_attempt_at), (None, None));
    assert_eq!(s.result("j", &ok.id).unwrap().as_deref(), Some(&b"42"[..]));
    assert_eq!(
        s.settle(&ok.id, Settlement::Released, done).unwrap(),
        None,
        "a message no longer Running is left alone"
    );
    assert_eq!(s.settle("nope", Settlement::Released, done).unwrap(), None);

    // Dead without a reply_to: no callback owed.
    let dead = put(s, msg("j", "dead"), now);
    claim_one(s, "j", now);
    let r = s
        .settle(
            &dead.id,
            Settlement::Dead {
                error: "exit 65".into(),
                result: None,
            },
            done,
        )
        .unwrap()
        .unwrap();
    assert_eq!((r.state, r.callback_due), (MessageState::Dead, None));
    assert_eq!(r.last_error.as_deref(), Some("exit 65"));

    // Cancelled while running: finished, no callback.
    let cancelled = put(s, with_reply("cancel"), now);
    claim_one(s, "j", now);
    let r = s
        .settle(
            &cancelled.id,
            Settlement::Cancelled {
                error: "cancelled".into(),
            },
            done,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.state, r.callback_due, r.finished_at),
        (MessageState::Cancelled, None, Some(done))
    );
}

pub fn an_idempotency_key_is_remembered_within_the_window_only(s: &dyn QueueStore) {
    let now = t0();
    let window = Duration::from_secs(60);
    let keyed = |body: &str| NewMessage {
        idempotency_key: Some("k1".into()),
        ..msg("j", body)
    };
    let first = s.enqueue(keyed("first"), window, now).unwrap();
    assert!(!first.duplicate);
    let again = s.enqueue(keyed("second"), window, now + secs(59)).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.id, first.message.id);
    assert_eq!(s.payload("j", &first.message.id).unwrap().0, b"first");
    assert_eq!(s.counts("j", now).unwrap().queued, 1, "nothing stored");

    // Another job's key of the same name is another key.
    let other = s
        .enqueue(
            NewMessage {
                job: "k".into(),
                ..keyed("x")
            },
            window,
            now,
        )
        .unwrap();
    assert!(!other.duplicate);

    // Past the window: stored anew, and the key now names the new message.
    let later = s.enqueue(keyed("third"), window, now + secs(60)).unwrap();
    assert!(!later.duplicate);
    assert_ne!(later.message.id, first.message.id);
    let dup = s.enqueue(keyed("fourth"), window, now + secs(61)).unwrap();
    assert_eq!(
        (dup.duplicate, dup.message.id),
        (true, later.message.id.clone())
    );

    // Deleting the messages forgets their keys.
    assert_eq!(s.delete_all("j", MessageState::Queued).unwrap(), 2);
    assert!(
        !s.enqueue(keyed("fifth"), window, now + secs(62))
            .unwrap()
            .duplicate
    );
}

pub fn requeue_brings_back_a_finished_message_only(s: &dyn QueueStore) {
    let now = t0();
    let m = put(
        s,
        NewMessage {
            reply_to: Some("http://example.invalid/cb".into()),
            ..msg("j", "x")
        },
        now,
    );
    let e = s.requeue("j", &m.id, now).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                state: "Queued",
                ..
            }
        ),
        "{e}"
    );
    claim_one(s, "j", now);
    let e = s.requeue("j", &m.id, now).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                state: "Running",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&m.id), "{e}");
    s.settle(
        &m.id,
        Settlement::Dead {
            error: "boom".into(),
            result: Some(b"r".to_vec()),
        },
        now,
    )
    .unwrap();
    assert!(matches!(
        s.requeue("other", &m.id, now),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.requeue("j", "nope", now),
        Err(StoreError::NotFound { .. })
    ));

    let later = now + secs(100);
    let r = s.requeue("j", &m.id, later).unwrap();
    assert_eq!(
        (r.state, r.attempts, r.next_attempt_at),
        (MessageState::Queued, 0, Some(later))
    );
    assert_eq!(
        (r.finished_at, r.result_bytes, r.callback_due),
        (None, None, None)
    );
    assert_eq!(r.last_error.as_deref(), Some("boom"), "kept as history");
    assert_eq!(
        s.due_callbacks(later, 10).unwrap(),
        [],
        "a callback not yet sent is dropped"
    );
    assert_eq!(claim_one(s, "j", later).message.attempts, 1);
}

pub fn cancel_answers_the_message_as_it_was_and_refuses_a_finished_one(s: &dyn QueueStore) {
    let now = t0();
    let queued = put(s, msg("j", "q"), now);
    let before = s.cancel("j", &queued.id, now).unwrap();
    assert_eq!(before.state, MessageState::Queued);
    let after = s.get("j", &queued.id).unwrap();
    assert_eq!(
        (after.state, after.finished_at),
        (MessageState::Cancelled, Some(now))
    );

    let running = put(s, msg("j", "r"), now);
    claim_one(s, "j", now);
    let before = s.cancel("j", &running.id, now).unwrap();
    assert_eq!(
        before.state,
        MessageState::Running,
        "the caller stops its run"
    );
    assert_eq!(
        s.settle(&running.id, Settlement::Released, now).unwrap(),
        None
    );

    let e = s.cancel("j", &queued.id, now).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                state: "Cancelled",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        s.cancel("other", &queued.id, now),
        Err(StoreError::NotFound { .. })
    ));
}

pub fn whole_states_are_requeued_or_deleted_but_never_running_ones(s: &dyn QueueStore) {
    let now = t0();
    for i in 0..3 {
        put(s, msg("j", &format!("{i}")), now);
    }
    put(s, msg("keep", "another job's"), now);
    for _ in 0..2 {
        let c = claim_one(s, "j", now);
        s.settle(
            &c.message.id,
            Settlement::Dead {
                error: "x".into(),
                result: None,
            },
            now,
        )
        .unwrap();
    }
    claim_one(s, "j", now);

    for state in [MessageState::Queued, MessageState::Running] {
        let e = s.requeue_all("j", state, now).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    }
    let e = s.delete_all("j", MessageState::Running).unwrap_err();
    assert!(e.to_string().contains("cancel them first"), "{e}");

    assert_eq!(s.requeue_all("j", MessageState::Dead, now).unwrap(), 2);
    let c = s.counts("j", now).unwrap();
    assert_eq!((c.queued, c.running, c.dead), (2, 1, 0));
    assert_eq!(s.delete_all("j", MessageState::Queued).unwrap(), 2);
    assert_eq!(s.delete_all("j", MessageState::Succeeded).unwrap(), 0);
    let c = s.counts("j", now).unwrap();
    assert_eq!((c.queued, c.running), (0, 1));
    assert_eq!(
        s.counts("keep", now).unwrap().queued,
        1,
        "another job untouched"
    );
}

pub fn listings_are_newest_first_and_paged(s: &dyn QueueStore) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(put(s, msg("j", &format!("{i}")), t0() + secs(i)).id);
    }
    put(s, msg("other", "x"), t0());
    let c = claim_one(s, "j", t0() + secs(100));
    assert_eq!(c.message.id, ids[0]);
    ids.reverse();

    let page = |state, limit, before: Option<&str>| -> Vec<String> {
        s.list("j", state, limit, before)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(page(None, 100, None), ids);
    assert_eq!(page(None, 3, None), ids[..3]);
    assert_eq!(page(None, 3, Some(&ids[2])), ids[3..6]);
    assert_eq!(page(None, 3, Some(&ids[5])), ids[6..]);
    assert_eq!(page(Some(MessageState::Running), 10, None), ids[6..]);
    assert_eq!(
        page(Some(MessageState::Queued), 2, Some(&ids[0])),
        ids[1..3]
    );
    assert!(page(Some(MessageState::Dead), 10, None).is_empty());

    // Paging goes on past a message deleted since it was listed.
    s.cancel("j", &ids[2], t0()).unwrap();
    s.delete_all("j", MessageState::Cancelled).unwrap();
    assert_eq!(page(None, 2, Some(&ids[2])), ids[3..5]);
}

pub fn counts_follow_every_change_and_age_the_oldest_queued_message(s: &dyn QueueStore) {
    let now = t0();
    assert_eq!(s.counts("j", now).unwrap(), QueueCounts::default());
    let a = put(s, msg("j", "a"), now);
    put(s, msg("j", "b"), now + secs(30));
    put(s, msg("j", "c"), now + secs(40));
    let c = s.counts("j", now + secs(90)).unwrap();
    assert_eq!((c.queued, c.oldest_queued_age_s), (3, Some(90)));
    assert_eq!(claim_one(s, "j", now + secs(90)).message.id, a.id);
    let c = s.counts("j", now + secs(90)).unwrap();
    assert_eq!(
        (c.queued, c.running, c.oldest_queued_age_s),
        (2, 1, Some(60))
    );
    s.settle(&a.id, Settlement::Succeeded { result: None }, now)
        .unwrap();
    let b = claim_one(s, "j", now + secs(90));
    s.cancel("j", &b.message.id, now).unwrap();
    let c = claim_one(s, "j", now + secs(90));
    s.settle(
        &c.message.id,
        Settlement::Dead {
            error: "x".into(),
            result: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        s.counts("j", now).unwrap(),
        QueueCounts {
            queued: 0,
            running: 0,
            succeeded: 1,
            dead: 1,
            cancelled: 1,
            oldest_queued_age_s: None,
        }
    );
    assert_eq!(s.counts("other", now).unwrap(), QueueCounts::default());
}

pub fn sweep_removes_finished_messages_past_retention_and_forgets_old_keys(s: &dyn QueueStore) {
    let now = t0();
    let retention = Duration::from_secs(3600);
    let window = Duration::from_secs(600);
    let keyed = NewMessage {
        idempotency_key: Some("k".into()),
        ..msg("j", "old")
    };
    let old = s.enqueue(keyed.clone(), window, now).unwrap().message;
    claim_one(s, "j", now);
    s.settle(&old.id, Settlement::Succeeded { result: None }, now)
        .unwrap();
    let recent = put(s, msg("j", "recent"), now);
    claim_one(s, "j", now);
    s.settle(
        &recent.id,
        Settlement::Succeeded { result: None },
        now + secs(3000),
    )
    .unwrap();
    let waiting = put(s, msg("j", "still queued"), now);
    let other = put(s, msg("other", "another job's"), now);
    let o = claim_one(s, "other", now);
    s.settle(&o.message.id, Settlement::Succeeded { result: None }, now)
        .unwrap();

    // Within the window the key still answers with the first message.
    assert!(
        s.enqueue(keyed.clone(), window, now + secs(599))
            .unwrap()
            .duplicate
    );
    assert_eq!(
        s.sweep("j", retention, window, now + secs(3599)).unwrap(),
        0
    );
    assert_eq!(
        s.sweep("j", retention, window, now + secs(3601)).unwrap(),
        1
    );
    assert!(matches!(
        s.get("j", &old.id),
        Err(StoreError::NotFound { .. })
    ));
    s.get("j", &recent.id).unwrap();
    s.get("j", &waiting.id).unwrap();
    s.get("other", &other.id).unwrap();
    assert!(
        !s.enqueue(keyed, window, now + secs(3602))
            .unwrap()
            .duplicate
    );
    let c = s.counts("j", now).unwrap();
    assert_eq!((c.queued, c.succeeded), (2, 1));
}

pub fn callbacks_are_due_once_settled_and_rescheduled_until_done(s: &dyn QueueStore) {
    let now = t0();
    let mut ids = Vec::new();
    for (i, job) in ["a", "b"].into_iter().enumerate() {
        let m = put(
            s,
            NewMessage {
                reply_to: Some("http://example.invalid/cb".into()),
                ..msg(job, "x")
            },
            now,
        );
        claim_one(s, job, now);
        s.settle(
            &m.id,
            Settlement::Succeeded { result: None },
            now + secs(i as i64),
        )
        .unwrap();
        ids.push(m.id);
    }
    let due = |t| -> Vec<String> {
        s.due_callbacks(t, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(due(now), ids[..1]);
    assert_eq!(due(now + secs(1)), ids, "oldest first, every job");
    assert_eq!(s.due_callbacks(now + secs(1), 1).unwrap().len(), 1);

    s.callback_tried(&ids[0], Some(now + secs(30))).unwrap();
    assert_eq!(due(now + secs(29)), ids[1..]);
    let m = s.get("a", &ids[0]).unwrap();
    assert_eq!(
        (m.callback_attempts, m.callback_due),
        (1, Some(now + secs(30)))
    );
    s.callback_tried(&ids[0], None).unwrap();
    s.callback_tried(&ids[1], None).unwrap();
    assert!(due(now + secs(3600)).is_empty());
    assert_eq!(s.get("a", &ids[0]).unwrap().callback_attempts, 2);
}

/// Two stores on the same data (two hosts), four threads claiming: no message is
/// handed out twice, and every one is handed out.
pub fn two_stores_never_hand_out_a_message_twice(
    a: std::sync::Arc<dyn QueueStore>,
    b: std::sync::Arc<dyn QueueStore>,
) {
    for i in 0..400 {
        put(&*a, msg("j", &format!("{i}")), t0());
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let c = s
                        .claim("j", &format!("claimer-{t}"), &run_ids(3), t0())
                        .unwrap();
                    if c.is_empty() {
                        return got;
                    }
                    got.extend(c.into_iter().map(|c| c.message.id));
                }
            })
        })
        .collect();
    let all: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 400, "every message claimed exactly once");
    assert_eq!(distinct.len(), 400);
    assert_eq!(b.counts("j", t0()).unwrap().running, 400);
}
