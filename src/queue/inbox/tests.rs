//! The inbox task against a real folder, real inotify and the real embedded store.
//! Every wait polls for a condition under a generous deadline (the test machine is
//! busy); nothing is timed.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::*;
use crate::queue::{
    Claimed, Enqueued, JobLink, Message, MessageState, NewMessage, QueueCounts, QueueStore,
    Settlement, StoreError,
};

const JOB: &str = "inboxed";
const DEADLINE: Duration = Duration::from_secs(120);

fn fast() -> Tuning {
    Tuning {
        recheck: Duration::from_millis(100),
        retry: Duration::from_millis(200),
        report: Duration::from_millis(500),
    }
}

/// A temp folder with the store, the inbox folder and the job's scheduler log.
struct Fixture {
    tmp: tempfile::TempDir,
    store: Arc<dyn QueueStore>,
    queues: Arc<Queues>,
    cancel: CancellationToken,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::queue::sqlite::open(&tmp.path().join("queue.db")).unwrap();
        Fixture::with_store(tmp, store)
    }

    fn with_store(tmp: tempfile::TempDir, store: Arc<dyn QueueStore>) -> Fixture {
        let queues = Arc::new(Queues::new(Ok(store.clone()), "-".into()));
        let sink = crate::logsink::LogSink::new(tmp.path().join("job_scheduler.log"), 1 << 20, 1);
        let (stop, _) = mpsc::unbounded_channel();
        queues.link(
            JOB,
            JobLink {
                stop,
                sched_log: Arc::new(Mutex::new(sink)),
            },
        );
        Fixture {
            tmp,
            store,
            queues,
            cancel: CancellationToken::new(),
        }
    }

    fn inbox(&self) -> PathBuf {
        self.tmp.path().join("inbox")
    }

    fn spawn(&self, max_payload_bytes: u64) -> watch::Receiver<Option<String>> {
        let spec = InboxSpec {
            job: JOB.into(),
            dir: self.inbox(),
            max_payload_bytes,
            dedupe_window: Duration::from_secs(60),
        };
        spawn_tuned(spec, self.queues.clone(), self.cancel.clone(), fast())
    }

    fn sched_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("job_scheduler.log")).unwrap_or_default()
    }

    fn messages(&self) -> Vec<Message> {
        self.store.list(JOB, None, 10_000, None).unwrap()
    }

    fn message_named(&self, name: &str) -> Option<Message> {
        self.messages()
            .into_iter()
            .find(|m| m.name.as_deref() == Some(name))
    }

    fn payload(&self, m: &Message) -> Vec<u8> {
        self.store.payload(JOB, &m.id).unwrap().0
    }

    /// Drops a file the safe way: written under a dot-name, then renamed in.
    fn drop_file(&self, name: &str, bytes: &[u8]) {
        let tmp = self.inbox().join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.inbox().join(name)).unwrap();
    }

    /// Drops `name` and waits until it is taken: the watch is then running.
    async fn taken(&self, name: &str) -> Message {
        self.drop_file(name, name.as_bytes());
        let path = self.inbox().join(name);
        wait_for(&format!("{name} taken"), || {
            !path.exists() && self.message_named(name).is_some()
        })
        .await;
        self.message_named(name).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_problem(
    rx: &mut watch::Receiver<Option<String>>,
    what: &str,
    ok: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let got = tokio::time::timeout(DEADLINE, rx.wait_for(|p| ok(p)))
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for the problem: {what}"))
        .unwrap();
    got.clone()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_files_dropped_at_once_become_a_thousand_messages() {
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    // Written while no host watched: taken when the watch starts.
    for i in 0..100 {
        std::fs::write(
            f.inbox().join(format!("before-{i:04}")),
            format!("body {i}"),
        )
        .unwrap();
    }
    let _problem = f.spawn(1 << 20);
    f.taken("marker").await;
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for i in 0..900 {
        let name = format!("file-{i:04}.json");
        let body = format!("{{\"n\": {i}}}");
        match i % 3 {
            // Written elsewhere on the same disk, renamed in.
            0 => {
                std::fs::write(outside.join(&name), &body).unwrap();
                std::fs::rename(outside.join(&name), f.inbox().join(&name)).unwrap();
            }
            1 => f.drop_file(&name, body.as_bytes()),
            // Written in place: taken once closed.
            _ => {
                let mut file = std::fs::File::create(f.inbox().join(&name)).unwrap();
                file.write_all(body.as_bytes()).unwrap();
            }
        }
    }
    wait_for("1001 messages and an empty inbox", || {
        f.messages().len() == 1001 && names_in(&f.inbox()).is_empty()
    })
    .await;
    let messages = f.messages();
    for i in 0..100 {
        let name = format!("before-{i:04}");
        let m = messages
            .iter()
            .find(|m| m.name.as_deref() == Some(&name))
            .unwrap();
        assert_eq!(f.payload(m), format!("body {i}").as_bytes());
        assert_eq!(m.content_type, None);
        assert_eq!(m.state, MessageState::Queued);
    }
    for i in 0..900 {
        let name = format!("file-{i:04}.json");
        let m = messages
            .iter()
            .find(|m| m.name.as_deref() == Some(&name))
            .unwrap_or_else(|| panic!("no message named {name}"));
        assert_eq!(f.payload(m), format!("{{\"n\": {i}}}").as_bytes());
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
    }
    // A few summary lines that count every file, not one line per file.
    let summed = || {
        f.sched_log()
            .lines()
            .filter_map(|l| {
                let (before, _) = l.split_once(" taken as messages")?;
                let (count, _) = before.rsplit_once(' ')?;
                count.rsplit_once(' ')?.1.parse::<usize>().ok()
            })
            .sum::<usize>()
    };
    wait_for("summary lines counting 1001 files", || summed() == 1001).await;
    let log = f.sched_log();
    assert!(log.lines().count() < 50, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_taken_only_once_closed() {
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    let _problem = f.spawn(1 << 20);
    f.taken("first").await;
    let slow = f.inbox().join("slow.txt");
    let mut file = std::fs::File::create(&slow).unwrap();
    file.write_all(b"first half, ").unwrap();
    file.flush().unwrap();
    // Files that arrive after it are taken while it stays open...
    for i in 0..5 {
        f.taken(&format!("later-{i}")).await;
    }
    // ...and it is not.
    assert!(slow.exists());
    assert!(f.message_named("slow.txt").is_none());
    file.write_all(b"second half").unwrap();
    drop(file);
    wait_for("slow.txt taken", || {
        !slow.exists() && f.message_named("slow.txt").is_some()
    })
    .await;
    let m = f.message_named("slow.txt").unwrap();
    assert_eq!(f.payload(&m), b"first half, second half");
    assert_eq!(m.content_type.as_deref(), Some("text/plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_files_sub_folders_and_links_are_left_alone() {
    let f = Fixture::new();
    let inbox = f.inbox();
    std::fs::create_dir(&inbox).unwrap();
    std::fs::write(inbox.join(".before"), b"x").unwrap();
    std::fs::create_dir(inbox.join("sub-before")).unwrap();
    std::fs::write(inbox.join("sub-before/inner"), b"x").unwrap();
    let _problem = f.spawn(1 << 20);
    f.taken("first").await;
    std::fs::write(inbox.join(".hidden"), b"x").unwrap();
    std::fs::create_dir(inbox.join("sub")).unwrap();
    std::fs::write(inbox.join("sub/inner"), b"x").unwrap();
    let target = f.tmp.path().join("elsewhere");
    std::fs::write(&target, b"not yours").unwrap();
    let link = f.tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, inbox.join("link")).unwrap();
    let moved_folder = f.tmp.path().join("moved");
    std::fs::create_dir(&moved_folder).unwrap();
    std::fs::rename(&moved_folder, inbox.join("moved")).unwrap();
    f.taken("last").await;
    assert_eq!(
        names_in(&inbox),
        [".before", ".hidden", "link", "moved", "sub", "sub-before"]
    );
    assert!(inbox.join("sub/inner").exists() && inbox.join("sub-before/inner").exists());
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
    let mut names: Vec<_> = f.messages().into_iter().filter_map(|m| m.name).collect();
    names.sort();
    assert_eq!(names, ["first", "last"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_too_large_is_set_aside_with_an_error_line() {
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    let _problem = f.spawn(16);
    f.drop_file("big.bin", &[7u8; 17]);
    f.taken("small").await;
    let aside = f.inbox().join(".big.bin.too-large");
    wait_for("big.bin set aside", || aside.exists()).await;
    assert_eq!(std::fs::read(&aside).unwrap(), [7u8; 17]);
    assert!(!f.inbox().join("big.bin").exists());
    assert!(f.message_named("big.bin").is_none());
    let log = f.sched_log();
    let line = log
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("no line about big.bin: {log}"));
    assert!(line.contains("SYS ERROR"), "{line}");
    assert!(
        line.contains("17 bytes") && line.contains("max_payload_bytes (16)"),
        "{line}"
    );
    assert!(line.contains(".big.bin.too-large"), "{line}");
    // Exactly at the limit is fine.
    let m = f.taken("exactly-16-bytes").await;
    assert_eq!(m.payload_bytes, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_is_a_problem_until_it_is_created() {
    let f = Fixture::new();
    let mut problem = f.spawn(1 << 20);
    let text = wait_problem(&mut problem, "missing", Option::is_some)
        .await
        .unwrap();
    assert!(text.contains(&f.inbox().display().to_string()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(text.contains("`queue.inbox` in settings.job"), "{text}");
    wait_for("the problem in the job's log", || {
        f.sched_log().contains("does not exist")
    })
    .await;
    // Enqueueing by other means is not disturbed meanwhile.
    let other = NewMessage {
        job: JOB.into(),
        payload: b"api".to_vec(),
        ..NewMessage::default()
    };
    f.store
        .enqueue(other, Duration::from_secs(60), Utc::now())
        .unwrap();
    std::fs::create_dir(f.inbox()).unwrap();
    std::fs::write(f.inbox().join("waiting"), b"w").unwrap();
    wait_problem(&mut problem, "cleared", Option::is_none).await;
    wait_for("waiting taken", || f.message_named("waiting").is_some()).await;
    assert!(f.sched_log().contains("can be used again"));
    f.taken("after").await;
    assert_eq!(f.messages().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_deleted_while_watched_is_watched_again_once_made_again() {
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    let mut problem = f.spawn(1 << 20);
    f.taken("first").await;
    std::fs::remove_dir(f.inbox()).unwrap();
    let text = wait_problem(&mut problem, "deleted", Option::is_some)
        .await
        .unwrap();
    assert!(text.contains("does not exist"), "{text}");
    std::fs::create_dir(f.inbox()).unwrap();
    wait_problem(&mut problem, "cleared", Option::is_none).await;
    f.taken("second").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_in_place_of_the_folder_is_a_problem_and_left_alone() {
    let f = Fixture::new();
    std::fs::write(f.inbox(), b"not a folder").unwrap();
    let mut problem = f.spawn(1 << 20);
    let text = wait_problem(&mut problem, "not a folder", Option::is_some)
        .await
        .unwrap();
    assert!(text.contains(&f.inbox().display().to_string()), "{text}");
    assert!(text.contains("is not a folder"), "{text}");
    assert_eq!(std::fs::read(f.inbox()).unwrap(), b"not a folder");
    assert!(f.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_folder_is_a_problem() {
    use std::os::unix::fs::PermissionsExt;
    // root reads any folder whatever its mode: nothing to see there.
    if nix::unistd::geteuid().is_root() {
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    std::fs::set_permissions(f.inbox(), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut problem = f.spawn(1 << 20);
    let text = wait_problem(&mut problem, "unreadable", Option::is_some)
        .await
        .unwrap();
    std::fs::set_permissions(f.inbox(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(text.contains("cannot be read"), "{text}");
    wait_problem(&mut problem, "cleared", Option::is_none).await;
}

/// The real store, except that enqueue fails while `down` is set.
struct Flaky {
    inner: Arc<dyn QueueStore>,
    down: AtomicBool,
}

impl QueueStore for Flaky {
    fn enqueue(
        &self,
        msg: NewMessage,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                path: "queue.db".into(),
                reason: "disk full (test)".into(),
            });
        }
        self.inner.enqueue(msg, dedupe_window, now)
    }
    fn claim(
        &self,
        job: &str,
        owner: &str,
        runs: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.inner.claim(job, owner, runs, now)
    }
    fn replace_run(&self, id: &str, minted: &str, actual: Option<&str>) -> Result<(), StoreError> {
        self.inner.replace_run(id, minted, actual)
    }
    fn settle(
        &self,
        id: &str,
        settlement: Settlement,
        now: DateTime<Utc>,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.settle(id, settlement, now)
    }
    fn get(&self, job: &str, id: &str) -> Result<Message, StoreError> {
        self.inner.get(job, id)
    }
    fn payload(&self, job: &str, id: &str) -> Result<(Vec<u8>, Option<String>), StoreError> {
        self.inner.payload(job, id)
    }
    fn result(&self, job: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.result(job, id)
    }
    fn list(
        &self,
        job: &str,
        state: Option<MessageState>,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.list(job, state, limit, before)
    }
    fn requeue(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        self.inner.requeue(job, id, now)
    }
    fn requeue_all(
        &self,
        job: &str,
        state: MessageState,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.requeue_all(job, state, now)
    }
    fn cancel(&self, job: &str, id: &str, now: DateTime<Utc>) -> Result<Message, StoreError> {
        self.inner.cancel(job, id, now)
    }
    fn delete_all(&self, job: &str, state: MessageState) -> Result<u64, StoreError> {
        self.inner.delete_all(job, state)
    }
    fn counts(&self, job: &str, now: DateTime<Utc>) -> Result<QueueCounts, StoreError> {
        self.inner.counts(job, now)
    }
    fn next_due(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due(job)
    }
    fn running(&self, job: &str) -> Result<Vec<Message>, StoreError> {
        self.inner.running(job)
    }
    fn sweep(
        &self,
        job: &str,
        retention: Duration,
        dedupe_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.sweep(job, retention, dedupe_window, now)
    }
    fn due_callbacks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.inner.due_callbacks(now, limit)
    }
    fn callback_tried(&self, id: &str, again_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.inner.callback_tried(id, again_at)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_store_is_unavailable_files_stay_and_are_taken_once_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let real = crate::queue::sqlite::open(&tmp.path().join("queue.db")).unwrap();
    let flaky = Arc::new(Flaky {
        inner: real,
        down: AtomicBool::new(false),
    });
    let f = Fixture::with_store(tmp, flaky.clone());
    std::fs::create_dir(f.inbox()).unwrap();
    let _problem = f.spawn(1 << 20);
    f.taken("first").await;
    flaky.down.store(true, Ordering::SeqCst);
    for i in 0..3 {
        f.drop_file(&format!("waits-{i}"), b"w");
    }
    wait_for("the store failure in the log", || {
        f.sched_log().contains("disk full (test)")
    })
    .await;
    assert_eq!(names_in(&f.inbox()), ["waits-0", "waits-1", "waits-2"]);
    assert_eq!(f.messages().len(), 1);
    let log = f.sched_log();
    assert_eq!(log.matches("disk full (test)").count(), 1, "{log}");
    flaky.down.store(false, Ordering::SeqCst);
    wait_for("the waiting files taken", || {
        names_in(&f.inbox()).is_empty() && f.messages().len() == 4
    })
    .await;
    wait_for("the recovery in the log", || {
        f.sched_log().contains("takes files again")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_inbox_store_each_file_once() {
    let f = Fixture::new();
    std::fs::create_dir(f.inbox()).unwrap();
    let _one = f.spawn(1 << 20);
    let _two = f.spawn(1 << 20);
    f.taken("first").await;
    for i in 0..300 {
        f.drop_file(&format!("f-{i:03}"), format!("{i}").as_bytes());
    }
    wait_for("301 messages and an empty inbox", || {
        names_in(&f.inbox()).is_empty() && f.messages().len() >= 301
    })
    .await;
    let mut names: Vec<_> = f.messages().into_iter().filter_map(|m| m.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 301);
    assert_eq!(f.messages().len(), 301);
}

#[test]
fn events_that_make_a_file_ready_and_those_that_do_not() {
    use notify::event::{CreateKind, DataChange, Flag, RemoveKind};
    let dir = Path::new("/in");
    let ev = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
    let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
    let moved_in = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    let table: Vec<(Event, &str)> = vec![
        (ev(close_write, "/in/a.json"), "ready a.json"),
        (ev(moved_in, "/in/b"), "ready b"),
        (ev(close_write, "/in/.part"), "-"),
        (ev(moved_in, "/in/.x.too-large"), "-"),
        (ev(close_write, "/in/sub/c"), "-"),
        (ev(EventKind::Create(CreateKind::File), "/in/d"), "-"),
        (
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/in/d",
            ),
            "-",
        ),
        (
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/in/e",
            ),
            "-",
        ),
        (
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                "/in/f",
            ),
            "-",
        ),
        (
            ev(EventKind::Remove(RemoveKind::Folder), "/in"),
            "folder changed",
        ),
        (
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/in"),
            "folder changed",
        ),
        (
            Event::new(EventKind::Other).set_flag(Flag::Rescan),
            "rescan",
        ),
    ];
    for (event, want) in table {
        let got = match classify(dir, &event) {
            Some(Hint::Ready(n)) => format!("ready {}", n.to_string_lossy()),
            Some(Hint::Rescan) => "rescan".into(),
            Some(Hint::FolderChanged) => "folder changed".into(),
            None => "-".into(),
        };
        assert_eq!(got, want, "{event:?}");
    }
}
