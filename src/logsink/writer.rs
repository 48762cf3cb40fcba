//! The host's log-writing thread. Owns the file end ([`FileEnd`]) of every log handed
//! to it and does their writes, rotations and the steps queued after them (a run's
//! record), so a slow disk or a hung network LOGS stalls the logs and not the async
//! workers that run the API and the other jobs' pumps.
//!
//! What a wake costs is the point of the design: a run must not cost this thread a
//! wake of its own (the designs that did cost measurably more host CPU per run:
//! docs/development.md). A sink hands its batch over under a short lock and tells the thread
//! only when the thread sleeps with nothing to do; the thread then waits [`GATHER`]
//! so that the writes of the runs starting or ending in the same moments go out in
//! one wake, and keeps ticking at that pace while work keeps coming. A flood does not
//! wait out the gathering: a log with [`HURRY`] bytes queued wakes the thread at once,
//! or the job would wait on its pipe meanwhile.
//!
//! Memory is bounded per log: a pump stops reading its pipes while its log has more
//! than a bound not yet taken by the thread ([`Outbox::room`]), so a stuck write
//! turns into back pressure on the job's pipes, never into growth.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{FileEnd, LogStats};

/// How long the thread, once woken, lets hand-offs gather before it writes them.
/// Also the longest a handed line waits before it reaches the file (when the disk is
/// quick), and what a run's end waits for its record.
pub const GATHER: Duration = Duration::from_millis(10);

/// Bytes queued for one log past which the thread stops gathering and writes: far
/// more than runs print in a moment, a fraction of what a flood hands over in
/// [`GATHER`].
const HURRY: usize = 1 << 20;

/// A step for the thread, in the order the sink asked.
enum Item {
    /// Framed lines; `run_id` names the latest line's run for the writer's own notes.
    Bytes {
        buf: Vec<u8>,
        lines: u64,
        run_id: String,
    },
    Limits(u64, u32),
    /// Runs after the bytes handed before it are written (or failed).
    Then(Box<dyn FnOnce() + Send>),
}

/// What a hand-off found.
pub(super) struct Handed {
    /// The file end's stats as of the thread's latest write.
    pub stats: LogStats,
    /// Bytes not yet taken by the thread.
    pub queued: usize,
    /// The thread must be told of this log ([`LogWriter::ready`]).
    pub tell: bool,
    /// The log just passed [`HURRY`] ([`LogWriter::hurry`]).
    pub hurry: bool,
}

/// One log's hand-off point between its sink (on the async workers) and the thread.
pub struct Outbox {
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Locked only by the thread while it writes (and by the sink before the log is
    /// shared, to open it): never by an async worker once handed over.
    file: Mutex<FileEnd>,
    /// Told when the thread takes bytes and a pump waits for room.
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Bytes in `items`, not yet taken by the thread.
    bytes: usize,
    /// In the thread's list of logs with work.
    listed: bool,
    /// A pump waits for `bytes` to fall.
    waiting: bool,
    /// The file end's stats as of the thread's latest write.
    stats: LogStats,
    /// Emptied buffers, given back to the sink so a batch costs no allocation.
    spare: Vec<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change under these locks is one step: sound after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    pub(super) fn new(path: PathBuf, file: FileEnd) -> Arc<Self> {
        Arc::new(Outbox {
            path,
            queue: Mutex::new(Queue::default()),
            file: Mutex::new(file),
            room: tokio::sync::Notify::new(),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Opens the (just emptied) file now; only before the log is shared.
    pub(super) fn open_empty(&self) {
        lock(&self.file).open_empty();
    }

    /// Queues `batch` (swapped for a spare buffer).
    pub(super) fn hand(&self, batch: &mut Vec<u8>, lines: u64, run_id: &str) -> Handed {
        let mut q = lock(&self.queue);
        let before = q.bytes;
        if !batch.is_empty() {
            q.bytes += batch.len();
            match q.items.back_mut() {
                // Small batches (a run's few lines) join the one before, for one write;
                // a flood's are queued as they are, not copied again.
                Some(Item::Bytes {
                    buf,
                    lines: l,
                    run_id: r,
                }) if r == run_id && buf.len() + batch.len() <= super::AUTO_FLUSH_BYTES => {
                    buf.extend_from_slice(batch);
                    *l += lines;
                    batch.clear();
                }
                _ => {
                    // As large as the batch handed: the sink refills it without
                    // growing it step by step.
                    let fresh = q
                        .spare
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(batch.capacity()));
                    q.items.push_back(Item::Bytes {
                        buf: std::mem::replace(batch, fresh),
                        lines,
                        run_id: run_id.to_owned(),
                    });
                }
            }
        }
        let tell = !q.items.is_empty() && !q.listed;
        q.listed |= tell;
        Handed {
            stats: q.stats.clone(),
            queued: q.bytes,
            tell,
            hurry: before < HURRY && q.bytes >= HURRY,
        }
    }

    /// The file end's stats as of the thread's latest write.
    pub(super) fn stats(&self) -> LogStats {
        lock(&self.queue).stats.clone()
    }

    /// Everything handed so far is written (or failed): the thread found the queue
    /// empty after its last write, and nothing came since.
    pub(super) fn idle(&self) -> bool {
        !lock(&self.queue).listed
    }

    fn push(&self, item: Item) -> bool {
        let mut q = lock(&self.queue);
        q.items.push_back(item);
        let tell = !q.listed;
        q.listed = true;
        tell
    }

    /// Waits until fewer than `bound` handed bytes wait for the thread.
    pub async fn room(&self, bound: usize) {
        loop {
            let told = self.room.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if q.bytes < bound {
                    return;
                }
                q.waiting = true;
            }
            told.await;
        }
    }

    /// Writes everything queued, in order, until the queue is found empty.
    fn work(&self) {
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut stats = None;
        loop {
            let items = {
                let mut q = lock(&self.queue);
                if let Some(s) = stats.take() {
                    q.stats = s;
                }
                for mut buf in done.drain(..) {
                    // A flood's buffers are not kept: only a run's usual few lines.
                    if q.spare.len() < 2 && buf.capacity() <= super::AUTO_FLUSH_BYTES * 2 {
                        buf.clear();
                        q.spare.push(buf);
                    }
                }
                if q.items.is_empty() {
                    q.listed = false;
                    return;
                }
                q.bytes = 0;
                if std::mem::take(&mut q.waiting) {
                    self.room.notify_waiters();
                }
                std::mem::take(&mut q.items)
            };
            let mut file = lock(&self.file);
            for item in items {
                match item {
                    Item::Bytes { buf, lines, run_id } => {
                        file.write(&buf, lines, &run_id);
                        done.push(buf);
                    }
                    Item::Limits(max, keep) => file.set_limits(max, keep),
                    Item::Then(step) => step(),
                }
            }
            stats = Some(file.stats.clone());
        }
    }
}

/// The handle to the host's log-writing thread. Clones share the thread, which ends
/// (after writing what was handed to it) when the last clone is dropped.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<Arc<Outbox>>,
    /// The thread is gathering or writing: it will look at `ready` again unasked.
    awake: bool,
    /// A log passed [`HURRY`]: the gathering ends now.
    hurry: bool,
    stop: bool,
}

/// Stops the thread when the last handle goes.
struct Owner {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.inner.state).stop = true;
        self.inner.wake.notify_one();
        // Not joined: the thread may be stuck on a hung file system, and the host's
        // exit must not wait for it. `LogWriter::drain` is the orderly way.
        drop(lock(&self.thread).take());
    }
}

impl LogWriter {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("jobhost-logs".into())
                .spawn(move || inner.run())?
        };
        Ok(LogWriter {
            _owner: Arc::new(Owner {
                inner: inner.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            inner,
        })
    }

    /// A log at `path` written by this thread.
    pub(super) fn outbox(&self, path: PathBuf, file: FileEnd) -> Arc<Outbox> {
        Outbox::new(path, file)
    }

    /// Puts `out` on the thread's list, telling the thread only if it sleeps idle.
    pub(super) fn ready(&self, out: Arc<Outbox>) {
        let mut st = lock(&self.inner.state);
        st.ready.push(out);
        if !st.awake {
            st.awake = true;
            drop(st);
            self.inner.wake.notify_one();
        }
    }

    /// Ends the thread's gathering: a log has a flood's worth queued.
    pub(super) fn hurry(&self) {
        lock(&self.inner.state).hurry = true;
        self.inner.wake.notify_one();
    }

    pub(super) fn limits(&self, out: &Arc<Outbox>, max: u64, keep: u32) {
        if out.push(Item::Limits(max, keep)) {
            self.ready(out.clone());
        }
    }

    /// Queues `step` after what `out` was handed so far.
    pub(super) fn then(&self, out: &Arc<Outbox>, step: Box<dyn FnOnce() + Send>) {
        if out.push(Item::Then(step)) {
            self.ready(out.clone());
        }
    }

    /// Waits (blocking) until everything handed so far is written.
    pub fn drain(&self) {
        let _ = self.drained().blocking_recv();
    }

    /// Answered once everything handed so far (to any log) is written: the host's exit
    /// awaits it, bounded, after the jobs have ended. Never answered if the thread is
    /// stuck on a hung file system, hence the bound.
    pub fn drained(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out = Outbox::new(PathBuf::new(), FileEnd::new(PathBuf::new(), 0, 0));
        // Listed last: the thread works its list in order, and each log until it is
        // found empty.
        self.then(
            &out,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        rx
    }
}

impl Inner {
    fn run(&self) {
        loop {
            {
                let mut st = lock(&self.state);
                while st.ready.is_empty() {
                    if st.stop {
                        return;
                    }
                    st.awake = false;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.awake = true;
                // Let the other runs of this moment hand theirs over too: one wake for
                // all. Not a flood, though.
                let (mut st, _) = self
                    .wake
                    .wait_timeout_while(st, GATHER, |st| !st.hurry && !st.stop)
                    .unwrap_or_else(|e| e.into_inner());
                st.hurry = false;
            }
            let ready = std::mem::take(&mut lock(&self.state).ready);
            for out in ready {
                out.work();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::logsink::{LogSink, Stream};
    use std::time::Instant;

    /// Drains and drops `writer` (off the async worker: it may wait on the FIFO), which
    /// closes the FIFO, then takes what `reader` read from it.
    async fn drain_then_read(
        writer: LogWriter,
        reader: std::thread::JoinHandle<Vec<u8>>,
    ) -> Vec<u8> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            writer.drain();
            drop(writer);
            let _ = tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || reader.join().unwrap()),
        )
        .await
        .unwrap()
        .unwrap()
    }

    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f()
    }

    /// A log's hand-offs ask the thread to stop gathering once, as its queue passes
    /// [`HURRY`]: a flood is written at once, the usual few lines of runs gathered.
    #[test]
    fn a_log_hurries_the_thread_once_as_its_queue_passes_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("job_log.txt");
        let out = Outbox::new(path.clone(), FileEnd::new(path, 1 << 30, 1));
        let hand = |n: usize| out.hand(&mut vec![b'x'; n], 1, "a1b2c3");
        let first = hand(HURRY / 2);
        assert!(first.tell && !first.hurry);
        let second = hand(HURRY / 2);
        assert!(!second.tell && second.hurry, "at the bound");
        assert_eq!(second.queued, HURRY);
        assert!(!hand(HURRY).hurry, "once");
        out.work();
        let after = hand(100);
        assert!(after.tell && !after.hurry, "the queue was taken");
        assert!(hand(HURRY).hurry, "and passes the bound again");
    }

    /// Lines, a change of limits and a step after them happen in the order asked, and
    /// the step sees the lines in the file.
    #[tokio::test(flavor = "current_thread")]
    async fn a_step_runs_after_the_lines_handed_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("output_log.txt");
        let writer = LogWriter::start().unwrap();
        let mut sink = LogSink::handed(path.clone(), 1 << 20, 1, &writer);
        sink.sys_info("r1", "one");
        sink.flush();
        sink.sys_info("r1", "two");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = path.clone();
        sink.then(Box::new(move || {
            let _ = tx.send(std::fs::read_to_string(p).unwrap_or_default());
        }));
        let seen = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.contains("SYS INFO] one\n"), "{seen:?}");
        assert!(seen.ends_with("SYS INFO] two\n"), "{seen:?}");
        assert_eq!(sink.stats().written_bytes, 0, "read at the hand-off");
        // The thread publishes its stats after the step: seen by a later hand-off.
        let len = seen.len() as u64;
        assert!(eventually(|| sink.flush().written_bytes == len).await);
    }

    /// A continuous job's `job_log.txt` through the thread: a flood handed in chunks
    /// of every size, with a change of limits on the way, lands complete and in order,
    /// rotated near the limit with `keep` files; a settled wait sees all of it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_handed_job_log_keeps_order_and_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("job_log.txt");
        let writer = LogWriter::start().unwrap();
        let sink = Mutex::new(LogSink::handed(path.clone(), 1 << 20, 100, &writer));
        let mut splitter = crate::logsink::LineSplitter::new();
        let input: Vec<u8> = (0..3000)
            .flat_map(|n| format!("line {n:05} {}\n", "p".repeat(n % 50)).into_bytes())
            .collect();
        let (mut rest, mut seed, mut fed) = (input.as_slice(), 0x9e37_79b9_u64, 0);
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let size = ((seed % 3000) as usize + 1).min(rest.len());
            let mut s = crate::logsink::lock(&sink);
            s.feed(&mut splitter, "9a2e7d", Stream::Stdout, &rest[..size]);
            s.flush();
            rest = &rest[size..];
            fed += size;
            if fed > input.len() / 3 && fed - size <= input.len() / 3 {
                // Taken by the thread between the batches, in their order.
                s.set_limits(8192, 100);
            }
        }
        crate::logsink::lock(&sink).finish_stream(&mut splitter, "9a2e7d", Stream::Stdout);
        let mut settle = crate::logsink::Settle::default();
        assert!(settle.wait(&sink, Duration::from_secs(30)).await);
        // The thread marks the log idle (and publishes its stats) just after the step.
        assert!(eventually(|| crate::logsink::lock(&sink).written().is_none()).await);
        let mut files: Vec<PathBuf> = (1..=100)
            .rev()
            .map(|n| crate::logsink::rotated_path(&path, n))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 10, "rotated at 8 KiB: {}", files.len());
        files.push(path.clone());
        let mut next = 0;
        for (i, file) in files.iter().enumerate() {
            let text = std::fs::read_to_string(file).unwrap();
            // The oldest holds what came before the limit changed (and the change
            // rotated it); the newest is the one being written.
            if i > 0 && file != &path {
                // One line over the limit at most (a line is under 100 bytes).
                assert!(text.len() < 8192 + 200, "{} bytes", text.len());
            }
            for line in text.lines() {
                if line.contains("SYS INFO] log rotated") {
                    continue;
                }
                let body = line.split("INFO] ").nth(1).unwrap();
                assert_eq!(body, format!("line {next:05} {}", "p".repeat(next % 50)));
                next += 1;
            }
        }
        assert_eq!(next, 3000);
        let on_disk: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        let stats = crate::logsink::lock(&sink).refresh_stats().clone();
        assert_eq!(stats.dropped_lines, 0);
        assert_eq!(stats.written_bytes, on_disk);
    }

    /// A wait on a hung log times out once; the next ones return at once without
    /// queueing more steps, until the log moves again.
    #[tokio::test(flavor = "current_thread")]
    async fn a_settle_on_a_hung_log_waits_once_then_skips_until_it_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("job_log.txt");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let writer = LogWriter::start().unwrap();
        let sink = Mutex::new(LogSink::handed(path.clone(), u64::MAX, 1, &writer));
        let mut settle = crate::logsink::Settle::default();
        crate::logsink::note(&sink, "000000", false, "first");
        assert!(!settle.wait(&sink, Duration::from_millis(100)).await);
        crate::logsink::note(&sink, "000000", false, "second");
        let t0 = Instant::now();
        // A long bound, not waited: the log is known stuck.
        assert!(!settle.wait(&sink, Duration::from_secs(600)).await);
        assert!(t0.elapsed() < Duration::from_secs(60));
        let reader = std::thread::spawn({
            let path = path.clone();
            move || std::fs::read(path).unwrap()
        });
        assert!(
            eventually(|| {
                // Not awaited here: `eventually` polls; a blocked wait would hang the test.
                crate::logsink::lock(&sink).refresh_stats().written_bytes > 0
            })
            .await
        );
        assert!(settle.wait(&sink, Duration::from_secs(30)).await);
        drop(sink);
        let text = drain_then_read(writer, reader).await;
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("SYS INFO] first\n"), "{text:?}");
        assert!(text.ends_with("SYS INFO] second\n"), "{text:?}");
    }

    /// A FIFO nobody reads as the log: the thread hangs opening it. The async worker
    /// (one, current-thread) goes on handing lines without blocking, a pump-like
    /// writer is held back at the bound instead of growing, and everything arrives in
    /// order once a reader opens the FIFO.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_log_file_does_not_block_the_async_worker() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("output_log.txt");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let writer = LogWriter::start().unwrap();
        let sink = Arc::new(Mutex::new(LogSink::handed(
            path.clone(),
            u64::MAX,
            1,
            &writer,
        )));
        const BOUND: usize = 64 * 1024;
        let fed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let feeder = {
            let (sink, fed) = (sink.clone(), fed.clone());
            tokio::spawn(async move {
                for n in 0..2000 {
                    let room = {
                        let mut s = crate::logsink::lock(&sink);
                        s.line(
                            "r1",
                            Stream::Stdout,
                            format!("line {n:04} {}", "x".repeat(90)).as_bytes(),
                        );
                        s.flush();
                        s.over_backlog(BOUND)
                    };
                    fed.store(n + 1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(out) = room {
                        out.room(BOUND).await;
                    }
                }
            })
        };
        // The worker is free: a timer on it fires while the writer hangs.
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        // The feeder stops near the bound (the thread took at most one batch first).
        assert!(eventually(|| fed.load(std::sync::atomic::Ordering::SeqCst) > 0).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stalled = fed.load(std::sync::atomic::Ordering::SeqCst);
        assert!(stalled < 2000, "back pressure holds the feeder");
        assert!(
            stalled * 110 < 3 * BOUND,
            "{stalled} lines held, bound {BOUND} bytes"
        );
        // A reader appears: everything arrives, in order.
        let reader = std::thread::spawn({
            let path = path.clone();
            move || std::fs::read(path).unwrap()
        });
        tokio::time::timeout(Duration::from_secs(30), feeder)
            .await
            .unwrap()
            .unwrap();
        drop(sink);
        // The writer keeps the FIFO open; dropping it and draining ends the reader.
        let text = drain_then_read(writer, reader).await;
        let numbers: Vec<usize> = String::from_utf8_lossy(&text)
            .lines()
            .map(|l| l.split("INFO] line ").nth(1).unwrap()[..4].parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..2000).collect::<Vec<_>>());
    }
}
