#!/usr/bin/env python3
"""Benchmarks of `jobhost run` (see bench/README.md). Standard library only.

Started by bench/run.sh, which builds the release binary, makes the temp folder and
sweeps leftovers; this file can also be run on its own:

    python3 bench/bench.py --bin target/release/jobhost [--quick] [throughput pickup idle stop lateness api queue] [cluster]

Every process this script starts (hosts, their guardians and runs, reference
processes) carries JOBHOST_BENCH_TAG=<tag> in its environment, so that a sweep of
/proc finds and kills whatever is left, whatever happened.
"""

import argparse
import http.client
import datetime
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

TAG_VAR = "JOBHOST_BENCH_TAG"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LINE_BYTES = 100
SECTIONS = ("throughput", "pickup", "idle", "stop", "lateness", "api", "queue")
# Opt-in sections: run only when named.
EXTRA_SECTIONS = ("cluster",)


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


class Interrupted(BaseException):
    pass


def log(msg=""):
    print(msg, flush=True)


# ---------------------------------------------------------------- /proc helpers


def proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    return text[text.rindex(b")") + 2 :].split()


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    fields = proc_stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid):
    fields = proc_stat_fields(pid)
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    return None


def rss_mb(pid):
    return int(status_field(pid, "VmRSS")) / 1024.0


def proc_io(pid):
    """Read/write syscall counts of the process's live threads. Not /proc/PID/io: that
    also adds the counters of every child the process has reaped (a finished job)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/io") as f:
                for line in f:
                    k, v = line.split(":")
                    out[k.strip()] = out.get(k.strip(), 0) + int(v)
        except OSError:
            pass
    return out


def thread_cpu(pid):
    """utime + stime per thread name (`comm`) of a live process, in seconds: which of
    its threads did the work (the queue's writer thread is `queue-writer`)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index(b"(") + 1 : text.rindex(b")")].decode(errors="replace")
        fields = text[text.rindex(b")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def pids_with_env(entry):
    """Live processes whose environment holds exactly `entry` (b"NAME=value")."""
    me = os.getpid()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if entry in env.split(b"\0"):
            try:
                if proc_stat_fields(d)[0] in (b"Z", b"X"):
                    continue
            except (OSError, ValueError):
                continue
            found.append(int(d))
    return found


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if int(proc_stat_fields(d)[1]) == pid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


# ---------------------------------------------------------------- small utilities


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, q):
    """Nearest-rank percentile, q in (0, 1]."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")


def p95(xs):
    return pct(xs, 0.95)


def p99(xs):
    return pct(xs, 0.99)


def read_stamp(path):
    """A start time written by a job (bash $EPOCHREALTIME) or by gen; None until written."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


def wait_until(pred, timeout, what, interval=0.005, alive=None):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_tail(path, needle, timeout, alive=None, interval=0.002, stall=30.0):
    """Polls `path` until its last 8 KiB contain `needle`; returns the wall time seen.
    Follows the path if the file is replaced (log rotation); gives up after `timeout`
    seconds, or after `stall` seconds without growth."""
    deadline = time.monotonic() + timeout
    fd = None
    ino = None
    last_size = -1
    last_growth = time.monotonic()
    try:
        while True:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != ino:
                if fd is not None:
                    os.close(fd)
                fd = os.open(path, os.O_RDONLY)
                ino = os.fstat(fd).st_ino
                last_size = -1
            if fd is not None:
                size = os.fstat(fd).st_size
                if size != last_size:
                    last_size = size
                    last_growth = time.monotonic()
                    tail = os.pread(fd, 8192, max(0, size - 8192))
                    if needle in tail:
                        return time.time()
            if alive is not None:
                alive()
            now = time.monotonic()
            if now > deadline or now - last_growth > stall:
                why = f"{timeout:.0f} s" if now > deadline else f"{stall:.0f} s without growth"
                raise BenchError(
                    f"gave up after {why} waiting for {needle!r} at the end of {path} "
                    f"(size {max(last_size, 0)} bytes)"
                )
            time.sleep(interval)
    finally:
        if fd is not None:
            os.close(fd)


def parse_log_time(stamp):
    """`2026-11-30T10:00:00.123Z` -> epoch seconds."""
    dt = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


LOG_LINE = re.compile(rb"^\[(\S+) > ([0-9a-f]{6}): (INFO|ERROR|SYS INFO|SYS ERROR)\] (.*)$")


def sys_lines(path):
    """(time, label, text) of every SYS line of a job log."""
    out = []
    try:
        with open(path, "rb") as f:
            for raw in f:
                m = LOG_LINE.match(raw.rstrip(b"\n"))
                if m and m.group(3).startswith(b"SYS"):
                    out.append(
                        (parse_log_time(m.group(1).decode()), m.group(3).decode(), m.group(4).decode(errors="replace"))
                    )
    except FileNotFoundError:
        pass
    return out


def fmt_s(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f} s"


# ---------------------------------------------------------------- the bench context


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.tmp = os.path.abspath(args.tmp)
        self.tag = args.tag
        self.tag_entry = f"{TAG_VAR}={self.tag}".encode()
        self.hosts = []  # Host objects, for clean-up
        self.children = []  # other Popen objects (reference processes), session leaders
        self.notes = []  # observations for the report
        self.rows = []  # summary rows
        self.results = {}
        self.pg_dbs = []  # (admin URL, database) created by the cluster section, dropped at clean-up
        scratch = os.path.join(self.tmp, "scratch")
        os.makedirs(scratch, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBHOST_")}
        env[TAG_VAR] = self.tag
        # The host keeps private copies of job folders under TMPDIR: keep them in ours.
        env["TMPDIR"] = scratch
        env["LC_ALL"] = "C"
        self.env = env

    def note(self, text):
        self.notes.append(text)
        log(f"  note: {text}")

    def spawn(self, argv, **kw):
        kw.setdefault("env", self.env)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(argv, **kw)
        self.children.append(p)
        return p

    def reap_children(self):
        for p in self.children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.children = [p for p in self.children if p.poll() is None]

    def kill_marked(self, entry, rounds=50):
        """SIGKILLs every live process carrying `entry` until none is left."""
        killed = 0
        for _ in range(rounds):
            pids = pids_with_env(entry)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        return killed

    def cleanup(self):
        for h in self.hosts:
            h.shutdown()
        self.reap_children()
        # A guardian outlives its host by a moment (its sweep, then it removes the
        # scratch folder): give what is left a few seconds to end on its own.
        deadline = time.monotonic() + 3.0
        while pids_with_env(self.tag_entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        n = self.kill_marked(self.tag_entry)
        if n:
            log(f"clean-up: killed {n} leftover process(es) of this benchmark")
        for admin, db in self.pg_dbs:
            try:
                psql(self, admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except BenchError as e:
                log(f"clean-up: {e}")
        self.pg_dbs = []

    def row(self, name, figure, reference, ratio, target, ok, unit=""):
        self.rows.append(
            {
                "figure": name,
                "value": figure,
                "reference": reference,
                "ratio": ratio,
                "target": target,
                "result": "PASS" if ok is True else ("FAIL" if ok is False else "info"),
            }
        )


class Host:
    """One `jobhost run` process on its own JOBS and LOGS folders."""

    def __init__(self, bench, name, store=None, instance=None, extra=()):
        self.b = bench
        # A cluster host: `--store URL --instance NAME`; its host log and URL file
        # then carry the instance name.
        self.store = store
        self.instance = instance
        self.extra = list(extra)
        self.root = os.path.join(bench.tmp, name)
        self.jobs = os.path.join(self.root, "jobs")
        self.logs = os.path.join(self.root, "logs")
        self.cont = os.path.join(self.jobs, "continuous")
        os.makedirs(self.cont, exist_ok=True)
        os.makedirs(os.path.join(self.jobs, "triggered"), exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        self.proc = None
        self.stderr = None
        self.t_start = None

    def start(self):
        self.stderr = open(os.path.join(self.root, "host.stderr"), "wb")
        argv = [
            self.b.bin, "run",
            "--jobs", self.jobs,
            "--logs", self.logs,
            # Port 0: the kernel picks a free port; the host writes its URL to LOGS/.jobhost-url.
            "--listen", "127.0.0.1:0",
        ]
        if self.store:
            argv += ["--store", self.store]
        if self.instance:
            argv += ["--instance", self.instance]
        argv += self.extra
        # A restarted host: only what it writes from now on counts.
        try:
            os.remove(self.url_file())
        except FileNotFoundError:
            pass
        log_from = len(self.host_log())
        self.t_start = time.time()
        self.proc = subprocess.Popen(
            argv,
            env=self.b.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            start_new_session=True,
        )
        self.b.hosts.append(self)
        wait_until(lambda: "started" in self.host_log()[log_from:], 15, "the host's `started` log line", alive=self.check_alive)
        if "falling back to a rescan" in self.host_log():
            self.b.note(f"host {os.path.basename(self.root)}: inotify unavailable, polling fallback in use")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def api(self, timeout=15):
        """(host, port, token) of the host's HTTP API, from LOGS/.jobhost-url and
        LOGS/.jobhost-token (both written once the listener is bound)."""

        def read():
            try:
                with open(self.url_file()) as f:
                    url = f.read().strip()
                with open(os.path.join(self.logs, ".jobhost-token")) as f:
                    token = f.read().strip()
            except FileNotFoundError:
                return None
            m = re.fullmatch(r"http://([^:/]+):(\d+)/?", url)
            return (m.group(1), int(m.group(2)), token) if m and token else None

        return wait_until(read, timeout, "LOGS/.jobhost-url and LOGS/.jobhost-token", interval=0.02, alive=self.check_alive)

    def url_file(self):
        return os.path.join(self.logs, f".jobhost-url-{self.instance}" if self.instance else ".jobhost-url")

    def host_log(self):
        name = f"host-{self.instance}.log" if self.instance else "host.log"
        try:
            with open(os.path.join(self.logs, name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.host_log()[-2000:]
            raise BenchError(f"the host exited with code {self.proc.returncode}; host.log ends:\n{tail}")

    def guardian_pid(self):
        for c in children_of(self.pid):
            if b"__guardian" in cmdline(c):
                return c
        return None

    def job_log(self, name):
        return os.path.join(self.logs, "continuous", name, "job_log.txt")

    def status(self, name):
        try:
            with open(os.path.join(self.logs, "continuous", name, "status.json")) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def add_job(self, name, script, settings=None):
        """Writes the job under a hidden name, then renames it in: it appears at once.
        Returns the wall time just before the rename."""
        tmp = os.path.join(self.cont, f".{name}.deploying")
        write_job(tmp, script, settings)
        t = time.time()
        os.rename(tmp, os.path.join(self.cont, name))
        return t

    def stop(self, timeout, sample=None):
        """SIGTERM and wait; returns (seconds, exit code). With `sample` (a dict), the
        host's CPU time is sampled every few ms until it exits, and the last sample is
        stored there as user/sys seconds used since the signal."""
        if sample is None:
            t0 = time.time()
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise BenchError(f"the host did not exit within {timeout} s of SIGTERM")
            return time.time() - t0, rc
        u0, s0 = cpu_split(self.pid)
        last = (u0, s0)
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None:
            try:
                last = cpu_split(self.pid)
            except (OSError, ValueError, IndexError):
                pass
            if time.time() - t0 > timeout:
                raise BenchError(f"the host did not exit within {timeout} s of SIGTERM")
            time.sleep(0.003)
        secs = time.time() - t0
        sample["user_s"] = last[0] - u0
        sample["sys_s"] = last[1] - s0
        return secs, self.proc.returncode

    def shutdown(self):
        """Clean-up path: never leaves the host running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.stderr:
            self.stderr.close()
            self.stderr = None


def write_job(path, script, settings=None):
    os.makedirs(path)
    run = os.path.join(path, "run.sh")
    with open(run, "w") as f:
        f.write(script)
    os.chmod(run, 0o755)
    if settings is not None:
        with open(os.path.join(path, "settings.job"), "w") as f:
            json.dump(settings, f)


Q = shlex.quote

# ---------------------------------------------------------------- 1. throughput


def build_generator(b):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen.c")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc and os.path.exists(src):
        out = os.path.join(b.tmp, "gen")
        r = subprocess.run([cc, "-O2", "-o", out, src], capture_output=True, text=True)
        if r.returncode == 0:
            return [out], f"C generator ({os.path.basename(cc)} -O2 bench/gen.c)"
        log(f"  compiling gen.c failed, using the Python generator:\n{r.stderr}")
    return [sys.executable, os.path.abspath(__file__), "--gen"], "Python generator (os.write)"


def python_gen(mode, count, stamp):
    with open(stamp, "w") as f:
        f.write(f"{time.time():.9f}\n")
    block = mode == "block"
    buf = bytearray()
    for i in range(1, count + 1):
        line = (b"%09d " % i).ljust(LINE_BYTES - 1, b"x") + b"\n"
        if not block:
            os.write(1, line)
            continue
        buf += line
        if len(buf) >= 65536:
            mv = memoryview(bytes(buf[:65536]))
            while mv:
                mv = mv[os.write(1, mv) :]
            del buf[:65536]
    mv = memoryview(bytes(buf))
    while mv:
        mv = mv[os.write(1, mv) :]


def verify_lines(path, count, in_log):
    """Checks that `path` holds lines 1..count, in order, unaltered. Returns a problem or None."""
    with open(path, "rb") as f:
        data = f.read()
    if in_log:
        pat = re.compile(rb"^\[[^\]]* > [0-9a-f]{6}: INFO\] (\d{9}) x{89}$", re.M)
        info = data.count(b": INFO] ")
    else:
        pat = re.compile(rb"^(\d{9}) x{89}$", re.M)
        info = data.count(b"\n")
    nums = pat.findall(data)
    if len(nums) != count or info != count:
        return f"{len(nums)} well-formed lines of {count} ({info} output lines in all)"
    expect = b"%09d" % 1
    if nums[0] != expect or nums[-1] != b"%09d" % count:
        return "first or last line out of place"
    prev = 0
    for n in nums:
        v = int(n)
        if v != prev + 1:
            return f"line {prev + 1} missing or out of order (found {v} after {prev})"
        prev = v
    return None


def run_reference(b, gen, mode, count, rep):
    stamp = os.path.join(b.tmp, f"ref-{mode}-{rep}.stamp")
    out = os.path.join(b.tmp, f"ref-{mode}-{rep}.txt")
    needle = b"%09d x" % count
    # gen stamps its own start, so the shell that wires the pipe is not timed.
    pipeline = f"{' '.join(Q(a) for a in gen)} {mode} {count} {Q(stamp)} | cat > {Q(out)}"
    p = b.spawn(["bash", "-c", pipeline])
    t_end = wait_for_tail(out, needle, 300)
    if p.wait() != 0:
        raise BenchError(f"reference pipeline failed: {pipeline}")
    t0 = read_stamp(stamp)
    problem = verify_lines(out, count, in_log=False)
    os.unlink(out)
    if problem:
        raise BenchError(f"reference output is wrong: {problem}")
    return t_end - t0


def run_job(b, host, gen, mode, count, rep):
    name = f"tp-{mode}-{rep}"
    done = os.path.join(b.tmp, f"{name}.done")
    stamp = os.path.join(b.tmp, f"{name}.stamp")
    script = (
        "#!/bin/bash\n"
        "# Generate once, then idle: a continuous job is restarted when it exits.\n"
        f"if [ -e {Q(done)} ]; then exec sleep 100000; fi\n"
        f": > {Q(done)}\n"
        f"exec {' '.join(Q(a) for a in gen)} {mode} {count} {Q(stamp)}\n"
    )
    # A log limit above the output's size, so every line stays in job_log.txt.
    settings = {"log_max_bytes": 1 << 36, "restart_delay": 60}
    cpu0, io0 = cpu_split(host.pid), proc_io(host.pid)
    host.add_job(name, script, settings)
    wait_until(lambda: read_stamp(stamp), 10, f"job {name} to start", alive=host.check_alive)
    t0 = read_stamp(stamp)
    t_end = wait_for_tail(host.job_log(name), b"INFO] %09d " % count, 300, alive=host.check_alive)
    cpu1, io1 = cpu_split(host.pid), proc_io(host.pid)
    secs = t_end - t0
    problem = verify_lines(host.job_log(name), count, in_log=True)
    size = os.path.getsize(host.job_log(name))
    extra = {
        "host_user_s": cpu1[0] - cpu0[0],
        "host_sys_s": cpu1[1] - cpu0[1],
        "host_read_syscalls": io1.get("syscr", 0) - io0.get("syscr", 0),
        "host_write_syscalls": io1.get("syscw", 0) - io0.get("syscw", 0),
        "log_bytes": size,
    }
    # Remove the job (the host stops its idle sleep) and its 100+ MB log.
    shutil.rmtree(os.path.join(host.cont, name))
    os.unlink(host.job_log(name))
    if problem:
        raise BenchError(f"job log of {name} is wrong: {problem}")
    return secs, extra


def bench_throughput(b):
    a = b.args
    count, reps = a.lines, a.reps
    gen, gen_desc = build_generator(b)
    log(f"[throughput] {count} lines of {LINE_BYTES} bytes, {reps} run(s) per mode, {gen_desc}")
    host = Host(b, "throughput").start()
    out = {}
    for mode, label in (("line", "one write(2) per line"), ("block", "64 KiB write(2)s")):
        refs, jobs, ratios, extras = [], [], [], []
        for rep in range(reps):
            r = run_reference(b, gen, mode, count, rep)
            j, extra = run_job(b, host, gen, mode, count, rep)
            refs.append(r)
            jobs.append(j)
            ratios.append(j / r)
            extras.append(extra)
            log(
                f"  {mode:5} run {rep + 1}: job {j:.3f} s, cat {r:.3f} s, ratio {j / r:.2f}; "
                f"host cpu user {extra['host_user_s']:.2f} s sys {extra['host_sys_s']:.2f} s, "
                f"{extra['host_read_syscalls']} read / {extra['host_write_syscalls']} write syscalls"
            )
        ex = {k: median([e[k] for e in extras]) for k in extras[0]}
        out[mode] = {"job_s": jobs, "cat_s": refs, "ratios": ratios, "host": ex}
        b.row(
            f"throughput, {label} (s)",
            fmt_s(median(jobs)),
            "cat " + fmt_s(median(refs)),
            f"{median(ratios):.2f}x",
            "<= 1.5x cat",
            median(ratios) <= 1.5,
        )
        lines_per_write = count / max(1, ex["host_write_syscalls"])
        log(
            f"  {mode}: median job {median(jobs):.3f} s vs cat {median(refs):.3f} s; "
            f"host wrote {ex['log_bytes'] / 1e6:.0f} MB in {ex['host_write_syscalls']:.0f} write syscalls "
            f"(~{lines_per_write:.1f} lines per write), "
            f"cpu user {ex['host_user_s']:.2f} s + sys {ex['host_sys_s']:.2f} s"
        )
    host.stop(30)
    b.results["throughput"] = {"lines": count, "generator": gen_desc, **out}


# ---------------------------------------------------------------- 2. pickup


def stamp_script(stamp, tail="exec sleep 100000"):
    return (
        "#!/bin/bash\n"
        f"printf '%s\\n' \"$EPOCHREALTIME\" > {Q(stamp)}\n"
        f"{tail}\n"
    )


def bench_pickup(b):
    tries = b.args.pickup_tries
    gap = b.args.pickup_gap
    log(f"[pickup] {tries} tries: hidden folder renamed into continuous/ -> first line of run.sh")
    host = Host(b, "pickup").start()
    time.sleep(0.5)
    stamps = os.path.join(b.tmp, "pickup-stamps")
    os.makedirs(stamps)
    lat, ref, spawn_logged = [], [], []
    for i in range(tries):
        # Reference: the same script started directly (process start + bash start-up).
        rstamp = os.path.join(stamps, f"ref-{i}")
        rdir = os.path.join(b.tmp, "pickup-ref", f"r{i}")
        write_job(rdir, stamp_script(rstamp))
        t = time.time()
        p = b.spawn(["bash", os.path.join(rdir, "run.sh")], cwd=rdir, stdout=subprocess.DEVNULL)
        wait_until(lambda: read_stamp(rstamp), 10, "the reference script", interval=0.001)
        ref.append(read_stamp(rstamp) - t)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

        name = f"pk-{i:02d}"
        stamp = os.path.join(stamps, name)
        tmp = os.path.join(host.cont, f".{name}.deploying")
        write_job(tmp, stamp_script(stamp))
        time.sleep(0.3)  # let the events of the hidden folder's creation settle
        t = time.time()
        os.rename(tmp, os.path.join(host.cont, name))
        wait_until(lambda: read_stamp(stamp), 15, f"job {name} to start", interval=0.001, alive=host.check_alive)
        lat.append(read_stamp(stamp) - t)
        started = [x for x in sys_lines(host.job_log(name)) if x[2].startswith("started")]
        if started:
            spawn_logged.append(started[0][0] - t)
        log(f"  try {i + 1:2}: {lat[-1] * 1000:7.1f} ms (direct start {ref[-1] * 1000:.1f} ms)")
        time.sleep(gap)
    host.stop(30)
    m, r = median(lat), median(ref)
    b.results["pickup"] = {"latency_s": lat, "direct_s": ref, "started_line_s": spawn_logged}
    b.row("pickup latency, median", fmt_s(m), "direct " + fmt_s(r), f"{m / r:.0f}x", "< 0.300 s", m < 0.3)
    b.row("pickup latency, p95", fmt_s(p95(lat)), "direct " + fmt_s(p95(ref)), f"{p95(lat) / p95(ref):.0f}x", "(info)", None)
    if spawn_logged:
        log(
            f"  median {m * 1000:.1f} ms, p95 {p95(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms; "
            f"the host's `started` SYS line is stamped {median(spawn_logged) * 1000:.0f} ms after the rename "
            "(ms resolution)"
        )


# ---------------------------------------------------------------- 3. idle


def bench_idle(b):
    n, window = b.args.jobs, b.args.idle_seconds
    log(f"[idle] {n} continuous jobs that sleep; host RSS and CPU over {window:.0f} idle seconds")
    host = Host(b, "idle")
    stamps = os.path.join(b.tmp, "idle-stamps")
    os.makedirs(stamps)
    names = [f"idle-{i:03d}" for i in range(n)]
    for name in names:
        write_job(os.path.join(host.cont, name), stamp_script(os.path.join(stamps, name)))
    host.start()
    t_host = host.t_start
    wait_until(lambda: len(os.listdir(stamps)) >= n, 120, f"all {n} jobs to start", interval=0.02, alive=host.check_alive)
    t_all = max(read_stamp(os.path.join(stamps, x)) or time.time() for x in names)
    wait_until(
        lambda: all((host.status(x) or {}).get("status") == "Running" for x in names),
        30,
        "every status.json to say Running",
        interval=0.05,
    )
    startup_cpu = cpu_seconds(host.pid)
    time.sleep(3)  # past the follow-up rescan a second after the jobs appeared
    guardian = host.guardian_pid()
    rss_samples, g_rss = [], []
    c0 = cpu_split(host.pid)
    g0 = cpu_seconds(guardian) if guardian else 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        rss_samples.append(rss_mb(host.pid))
        if guardian:
            g_rss.append(rss_mb(guardian))
        time.sleep(1.0)
    rss_samples.append(rss_mb(host.pid))
    c1 = cpu_split(host.pid)
    g1 = cpu_seconds(guardian) if guardian else 0.0
    threads = int(status_field(host.pid, "Threads"))
    hwm = int(status_field(host.pid, "VmHWM")) / 1024.0
    cpu = (c1[0] - c0[0]) + (c1[1] - c0[1])
    restarts = sum((host.status(x) or {}).get("restarts", 0) for x in names)
    alive = len(pids_with_env(b.tag_entry))
    host.stop(60)
    rss = max(rss_samples)
    cpu_target = 0.05 * window / 20.0
    b.results["idle"] = {
        "jobs": n,
        "window_s": window,
        "rss_mb_samples": rss_samples,
        "rss_peak_mb": hwm,
        "cpu_s": cpu,
        "cpu_user_s": c1[0] - c0[0],
        "cpu_sys_s": c1[1] - c0[1],
        "guardian_rss_mb": median(g_rss),
        "guardian_cpu_s": g1 - g0,
        "threads": threads,
        "startup_to_all_running_s": t_all - t_host,
        "startup_cpu_s": startup_cpu,
        "restarts": restarts,
    }
    log(
        f"  all {n} running {t_all - t_host:.2f} s after the host started (host CPU so far {startup_cpu:.2f} s); "
        f"{alive} tagged processes alive (host, guardian, {n} jobs)"
    )
    log(
        f"  RSS {min(rss_samples):.1f}..{rss:.1f} MB (peak VmHWM {hwm:.1f} MB), {threads} threads; "
        f"CPU {cpu:.3f} s in {window:.0f} s (user {c1[0] - c0[0]:.2f}, sys {c1[1] - c0[1]:.2f}); "
        f"guardian {median(g_rss):.1f} MB, {g1 - g0:.2f} s CPU; restarts seen: {restarts}"
    )
    b.row(f"idle RSS, {n} jobs (MB)", f"{rss:.1f} MB", f"guardian {median(g_rss):.1f} MB", f"{rss / median(g_rss):.1f}x" if g_rss else "-", "< 20 MB", rss < 20)
    b.row(f"idle CPU, {window:.0f} s (s)", f"{cpu:.3f} s", f"guardian {g1 - g0:.3f} s", "-", f"< {cpu_target:.3f} s", cpu < cpu_target)


# ---------------------------------------------------------------- 4. stop


def stop_script(stamp, escape):
    lines = [
        "#!/bin/bash",
        "trap 'exit 0' TERM",
        "sleep 100000 &",
    ]
    if escape:
        lines.append("setsid sleep 100000 &   # leaves the run's process group and session")
    lines += [f"printf '%s\\n' \"$EPOCHREALTIME\" > {Q(stamp)}", "wait", ""]
    return "\n".join(lines)


def reference_stop(b, n, escape, rep):
    """The same process trees, started and stopped by this script: SIGTERM to each
    group and to each marked process, then wait for the main processes."""
    mark = f"{b.tag}-refstop{rep}"
    entry = f"BENCH_STOP_MARK={mark}".encode()
    stamps = os.path.join(b.tmp, f"refstop{rep}-stamps")
    os.makedirs(stamps)
    env = dict(b.env, BENCH_STOP_MARK=mark)
    procs = []
    for i in range(n):
        d = os.path.join(b.tmp, f"refstop{rep}", f"j{i:03d}")
        write_job(d, stop_script(os.path.join(stamps, str(i)), escape))
        procs.append(b.spawn(["bash", os.path.join(d, "run.sh")], cwd=d, env=env, stdout=subprocess.DEVNULL))
    wait_until(lambda: len(os.listdir(stamps)) >= n, 60, "reference jobs to start", interval=0.02)
    time.sleep(0.5)
    t0 = time.time()
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids_with_env(entry):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait()
    # Done when every process of the trees is gone, as for the host.
    deadline = time.monotonic() + 5.0
    while pids_with_env(entry) and time.monotonic() < deadline:
        time.sleep(0.001)
    secs = time.time() - t0
    left = len(pids_with_env(entry))
    b.kill_marked(entry)
    return secs, left


def bench_stop(b):
    n, reps, escape = b.args.jobs, b.args.stop_reps, b.args.escape
    if escape and not shutil.which("setsid"):
        b.note("setsid(1) not found: stop jobs have no grandchild outside the process group")
        escape = False
    kids = "an in-group `sleep &` and a `setsid sleep &`" if escape else "a `sleep &`"
    log(f"[stop] {n} jobs, each bash with a TERM trap and {kids}; host SIGTERM -> host exit; {reps} run(s)")
    secs, refs, orphans, orphans_late, breakdowns = [], [], [], [], []
    for rep in range(reps):
        r, rleft = reference_stop(b, n, escape, rep)
        refs.append(r)
        mark = f"{b.tag}-stop{rep}"
        entry = f"BENCH_STOP_MARK={mark}".encode()
        host = Host(b, f"stop{rep}")
        stamps = os.path.join(b.tmp, f"stop{rep}-stamps")
        os.makedirs(stamps)
        names = [f"stop-{i:03d}" for i in range(n)]
        for name in names:
            write_job(
                os.path.join(host.cont, name),
                stop_script(os.path.join(stamps, name), escape),
                {"env": {"BENCH_STOP_MARK": mark}},
            )
        host.start()
        wait_until(lambda: len(os.listdir(stamps)) >= n, 120, f"all {n} jobs to start", interval=0.02, alive=host.check_alive)
        per_job = 3 if escape else 2
        wait_until(lambda: len(pids_with_env(entry)) >= n * per_job, 30, "every grandchild to exist", interval=0.05)
        time.sleep(2.0)
        before = len(pids_with_env(entry))
        guardian = host.guardian_pid()
        nproc = sum(1 for d in os.listdir("/proc") if d.isdigit())
        t_scan = time.perf_counter()
        pids_with_env(entry)
        scan_ms = (time.perf_counter() - t_scan) * 1000
        cpu = {}
        t0 = time.time()
        s, rc = host.stop(120, sample=cpu)
        left = len(pids_with_env(entry))
        time.sleep(2.5)
        left_late = len(pids_with_env(entry))
        guardian_alive = guardian is not None and os.path.exists(f"/proc/{guardian}") and proc_stat_fields(guardian)[0] not in (b"Z", b"X")
        b.kill_marked(entry)
        # Where the time went, from the SYS lines of each job log (ms resolution).
        begin, end, forced = [], [], 0
        for name in names:
            for t, label, text in sys_lines(host.job_log(name)):
                if text.startswith("stopping (host shutting down)"):
                    begin.append(t - t0)
                elif text == "stopped":
                    end.append(t - t0)
                elif "killed with SIGKILL" in text:
                    forced += 1
        bd = {
            "first_stop_begins_s": min(begin) if begin else None,
            "last_stop_begins_s": max(begin) if begin else None,
            "median_stop_begins_s": median(begin) if begin else None,
            "last_stopped_s": max(end) if end else None,
            "jobs_logged_stopped": len(end),
            "forced_kills": forced,
            "host_cpu_user_s": cpu.get("user_s"),
            "host_cpu_sys_s": cpu.get("sys_s"),
            "processes_on_machine": nproc,
            "python_proc_scan_ms": scan_ms,
        }
        breakdowns.append(bd)
        secs.append(s)
        orphans.append(left)
        orphans_late.append(left_late)
        log(
            f"  run {rep + 1}: host exit {s:.3f} s (code {rc}), direct {r:.3f} s; {before} marked processes "
            f"before, {left} alive at host exit, {left_late} 2.5 s later (reference left {rleft}); "
            f"guardian {'still alive' if guardian_alive else 'gone'}"
        )
        log(
            f"    job logs: stop sequences began {fmt_s(bd['first_stop_begins_s'])} .. {fmt_s(bd['last_stop_begins_s'])} "
            f"after SIGTERM (median {fmt_s(bd['median_stop_begins_s'])}), last `stopped` at {fmt_s(bd['last_stopped_s'])}; "
            f"{bd['jobs_logged_stopped']} of {n} jobs logged `stopped`, {forced} needed SIGKILL"
        )
        log(
            f"    host CPU during the stop (sampled until exit): user {cpu.get('user_s', 0):.2f} s, "
            f"sys {cpu.get('sys_s', 0):.2f} s; {nproc} processes on the machine "
            f"(one /proc environ scan from Python: {scan_ms:.1f} ms)"
        )
        if rc != 0:
            b.note(f"stop run {rep + 1}: host exit code {rc}, expected 0")
        if guardian_alive:
            b.note(f"stop run {rep + 1}: the guardian was still alive 2.5 s after the host exited")
    m, r = median(secs), median(refs)
    b.results["stop"] = {
        "jobs": n,
        "escaping_grandchild": escape,
        "host_s": secs,
        "direct_s": refs,
        "orphans_at_exit": orphans,
        "orphans_after_2_5_s": orphans_late,
        "breakdown": breakdowns,
    }
    b.row(f"stop, {n} jobs: SIGTERM -> exit", fmt_s(m), "direct " + fmt_s(r), f"{m / r:.1f}x", "< 5 s (one grace)", m < 5.0)
    b.row("stop: orphans at host exit", str(max(orphans)), "0", "-", "0", max(orphans) == 0)


# ---------------------------------------------------------------- 5. lateness


# The job prints the time it started, by its own clock: bash's $EPOCHREALTIME is a
# builtin, so this is the moment the script's first command ran.
LATENESS_SCRIPT = '#!/bin/bash\necho "$EPOCHREALTIME"\n'


def reference_lateness_loop(root, seconds, out_json):
    """The reference of the lateness section, run as its own process
    (`bench.py --ref-lateness ROOT SECONDS OUT`): sleep until each whole second, then
    Popen `bash run.sh` of every job folder under ROOT/jobs, one after the other, stdout
    to a file. Records, per run, the time just before its Popen and the script's stamp."""
    jobs = sorted(os.listdir(os.path.join(root, "jobs")))
    outdir = os.path.join(root, "out")
    os.makedirs(outdir, exist_ok=True)
    first = math.floor(time.time()) + 2

    def sleep_until(t):
        while True:
            d = t - time.time()
            if d <= 0:
                return
            time.sleep(d)

    def cpu():
        r = os.times()
        return r.user + r.system

    live, decided = [], []
    sleep_until(first - 0.5)
    c0 = cpu()
    for k in range(seconds):
        sec = first + k
        sleep_until(sec)
        for name in jobs:
            t = time.time()
            with open(os.path.join(outdir, f"{name}.{k}"), "wb") as f:
                live.append(
                    subprocess.Popen(
                        ["bash", "run.sh"],
                        cwd=os.path.join(root, "jobs", name),
                        stdin=subprocess.DEVNULL,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            decided.append(t - sec)
        live = [p for p in live if p.poll() is None]
    sleep_until(first + seconds - 0.5)
    c1 = cpu()
    for p in live:
        p.wait()
    started = []
    for k in range(seconds):
        for name in jobs:
            v = read_stamp(os.path.join(outdir, f"{name}.{k}"))
            if v is not None:
                started.append(v - (first + k))
    with open(out_json, "w") as f:
        json.dump({"first": first, "runs": len(decided), "decided_s": decided, "started_s": started, "cpu_s": c1 - c0}, f)


def prefill_history(tlogs, names, count):
    """`count` finished manual runs from 2000-01-01 in each job's history."""
    t0 = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    for name in names:
        for k in range(count):
            t = t0 + datetime.timedelta(seconds=k)
            rid = t.strftime("%Y%m%d%H%M%S") + "0000"
            d = os.path.join(tlogs, name, rid)
            os.makedirs(d)
            stamp = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            rec = {
                "schema_version": 1, "id": rid, "name": name, "status": "Success", "trigger": "manual",
                "arguments": [], "start_time": stamp, "end_time": stamp, "duration_ms": 0, "exit_code": 0,
                "signal": None, "error": None, "scheduled_for": None, "lateness_ms": None, "pid": None,
                "instance": None,
            }
            with open(os.path.join(d, "status.json"), "w") as f:
                json.dump(rec, f)
            with open(os.path.join(d, "output_log.txt"), "w") as f:
                f.write(f"[{stamp} > 000000: INFO] old run\n")


def ms(v):
    return f"{v * 1000:.1f} ms"


def lat_summary(xs):
    return {"median_s": median(xs), "p99_s": p99(xs), "max_s": max(xs) if xs else float("nan"), "n": len(xs)}


def bench_lateness(b):
    n, secs = b.args.lateness_jobs, b.args.lateness_seconds
    log(
        f"[lateness] {n} triggered jobs on `* * * * * *` (run.sh: echo $EPOCHREALTIME); "
        f"{secs} s window; reference: a Python loop that Popens the same {n} scripts at each whole second"
    )
    names = [f"late-{i:03d}" for i in range(n)]

    # Reference first, while no host runs.
    ref_root = os.path.join(b.tmp, "lateness-ref")
    for name in names:
        write_job(os.path.join(ref_root, "jobs", name), LATENESS_SCRIPT)
    ref_json = os.path.join(ref_root, "result.json")
    p = b.spawn([sys.executable, os.path.abspath(__file__), "--ref-lateness", ref_root, str(secs), ref_json], stdout=subprocess.DEVNULL)
    try:
        rc = p.wait(timeout=secs + 60)
    except subprocess.TimeoutExpired:
        raise BenchError("the reference loop did not finish")
    if rc != 0:
        raise BenchError(f"the reference loop failed (exit code {rc})")
    with open(ref_json) as f:
        ref = json.load(f)
    ref_cpu_pct = ref["cpu_s"] / secs * 100
    log(
        f"  reference: {ref['runs']} Popens, {len(ref['started_s'])} stamps; before Popen: median {ms(median(ref['decided_s']))}, "
        f"p99 {ms(p99(ref['decided_s']))}; script start: median {ms(median(ref['started_s']))}, p99 {ms(p99(ref['started_s']))}, "
        f"max {ms(max(ref['started_s']))}; loop CPU {ref['cpu_s']:.2f} s ({ref_cpu_pct:.1f}% of a core)"
    )
    # The reference's 3000 output files stay until the end: deleting them now would
    # leave the host's first minute allocating inodes next to 3000 fresh deletions,
    # which ext4 without a journal makes slow (it skips recently freed inodes).

    # The host.
    host = Host(b, "lateness")
    settings = {"schedule": "* * * * * *"}
    keep = max(50, secs + 30)  # every run of the window is still there at the end
    settings["history_size"] = keep
    for name in names:
        write_job(os.path.join(host.jobs, "triggered", name), LATENESS_SCRIPT, settings)
    fresh = b.args.lateness_fresh
    if not fresh:
        # A host that has run for a while has full histories: each new run recycles
        # the oldest folder. Fill them (keep - 1 old manual runs) so the window shows
        # that steady state, not a host's first minutes (BENCH_LATENESS_FRESH=1).
        prefill_history(os.path.join(host.logs, "triggered"), names, keep - 1)
    log(f"  history: {'empty at start (fresh host)' if fresh else f'full from the first run ({keep - 1} old runs per job)'}")
    host.start()
    tlogs = os.path.join(host.logs, "triggered")

    def sched_log(name):
        try:
            with open(os.path.join(tlogs, name, "job_scheduler.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    wait_until(
        lambda: all("scheduled `" in sched_log(x) for x in names),
        60,
        f"all {n} jobs to be scheduled",
        interval=0.1,
        alive=host.check_alive,
    )
    first = math.ceil(time.time()) + 2  # the first whole second of the window
    guardian = host.guardian_pid()

    def sleep_until(t):
        while True:
            host.check_alive()
            d = t - time.time()
            if d <= 0:
                return
            time.sleep(min(d, 0.5))

    sleep_until(first - 0.5)
    c0, g0 = cpu_split(host.pid), (cpu_seconds(guardian) if guardian else 0.0)
    io0 = proc_io(host.pid)
    threads = []
    for k in range(secs):
        sleep_until(first + k + 0.25)
        threads.append(int(status_field(host.pid, "Threads")))
    sleep_until(first + secs - 0.5)
    c1, g1 = cpu_split(host.pid), (cpu_seconds(guardian) if guardian else 0.0)
    io1 = proc_io(host.pid)
    rss = rss_mb(host.pid)

    def window_done():
        # Every job has fired past the window and no run of the window is still going,
        # so stopping the host aborts none of them.
        for name in names:
            d = os.path.join(tlogs, name)
            newest = max((x for x in os.listdir(d) if x.isdigit()), default=None) if os.path.isdir(d) else None
            if newest is None:
                return False
            try:
                with open(os.path.join(d, newest, "status.json")) as f:
                    st = json.load(f)
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            if not st.get("scheduled_for") or parse_log_time(st["scheduled_for"]) < hi:
                return False
        return True

    lo, hi = first, first + secs
    try:
        wait_until(window_done, 20, "the window's last runs to end", interval=0.2, alive=host.check_alive)
    except BenchError as e:
        b.note(f"lateness: {e}; stopping the host anyway")
    host.stop(60)
    cpu = (c1[0] - c0[0]) + (c1[1] - c0[1])
    cpu_pct = cpu / secs * 100

    # Every run of the window, from the files the host left.
    mine, theirs, started, started_line, statuses = [], [], [], [], {}
    runs_in_window, runs_total, diff_max = 0, 0, 0.0
    per_second = {}
    fired = {name: set() for name in names}  # whole seconds of the window that ran
    for name in names:
        d = os.path.join(tlogs, name)
        for rid in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            try:
                with open(os.path.join(d, rid, "status.json")) as f:
                    st = json.load(f)
            except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
                continue
            runs_total += 1
            if not st.get("scheduled_for"):
                continue
            sched = parse_log_time(st["scheduled_for"])
            if not lo <= sched < hi:
                continue
            runs_in_window += 1
            per_second[sched] = per_second.get(sched, 0) + 1
            fired[name].add(round(sched))
            statuses[st.get("status")] = statuses.get(st.get("status"), 0) + 1
            own = parse_log_time(st["start_time"]) - sched
            mine.append(own)
            if st.get("lateness_ms") is not None:
                theirs.append(st["lateness_ms"] / 1000.0)
                diff_max = max(diff_max, abs(st["lateness_ms"] / 1000.0 - own))
            try:
                with open(os.path.join(d, rid, "output_log.txt"), "rb") as f:
                    for raw in f:
                        m = LOG_LINE.match(raw.rstrip(b"\n"))
                        if not m:
                            continue
                        if m.group(3) == b"INFO":
                            started.append(float(m.group(4).decode().replace(",", ".")) - sched)
                        elif m.group(4).startswith(b"run ") and b" started (pid" in m.group(4):
                            started_line.append(parse_log_time(m.group(1).decode()) - sched)
            except (FileNotFoundError, ValueError):
                pass
    expected = n * secs
    # Schedule decisions the host logged as missed or skipped, during the whole run,
    # and the occurrences of the window they account for: `skipped AT: run ...` is AT;
    # `missed N occurrence(s) before AT` is the N whole seconds before AT.
    missed_lines = []
    unaccounted = []  # (job, second): no run and no line about it
    logged_missed = 0  # occurrences of the window that a missed/skipped line names
    for name in names:
        covered = set()
        for line in sched_log(name).splitlines():
            low = line.lower()
            if "missed" in low or "skipped" in low:
                missed_lines.append(f"{name}: {line}")
            m = re.search(r"skipped (\S+Z): run ", line)
            if m:
                covered.add(round(parse_log_time(m.group(1))))
            m = re.search(r"missed (\d+) occurrence\(s\) (?:before|up to) (\S+Z)", line)
            if m:
                at, k = round(parse_log_time(m.group(2))), int(m.group(1))
                covered.update(range(at - k, at) if "before" in m.group(0) else range(at - k + 1, at + 1))
        for sec in range(round(lo), round(hi)):
            if sec in covered:
                logged_missed += 1
            elif sec not in fired[name]:
                unaccounted.append((name, sec))
    if not mine:
        raise BenchError("no run of the window found in LOGS/triggered/*/RUN_ID/status.json")

    sm, sr = lat_summary(mine), lat_summary(ref["decided_s"])
    pm, pr = lat_summary(started), lat_summary(ref["started_s"])
    b.results["lateness"] = {
        "jobs": n,
        "window_s": secs,
        "first_second": first,
        "runs_expected": expected,
        "runs_in_window": runs_in_window,
        "runs_total": runs_total,
        "history_full_at_start": not b.args.lateness_fresh,
        "statuses": statuses,
        "runs_per_second_min": min(per_second.values()) if per_second else 0,
        "missed_or_skipped_lines": missed_lines,
        "logged_missed_in_window": logged_missed,
        "unaccounted_occurrences": [[j, datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()] for j, t in unaccounted],
        "status_json_lateness": sm,
        "host_lateness_ms_field": lat_summary(theirs),
        "max_abs_diff_own_vs_field_s": diff_max,
        "script_start_lateness": pm,
        "started_line_lateness": lat_summary(started_line),
        "host_cpu_s": cpu,
        "host_cpu_user_s": c1[0] - c0[0],
        "host_cpu_sys_s": c1[1] - c0[1],
        "host_cpu_pct_of_core": cpu_pct,
        "host_threads_max": max(threads) if threads else None,
        "host_read_syscalls": io1.get("syscr", 0) - io0.get("syscr", 0),
        "host_write_syscalls": io1.get("syscw", 0) - io0.get("syscw", 0),
        "host_rss_mb": rss,
        "guardian_cpu_s": g1 - g0,
        "reference": {
            "before_popen": sr,
            "script_start": pr,
            "loop_cpu_s": ref["cpu_s"],
            "loop_cpu_pct_of_core": ref_cpu_pct,
            "runs": ref["runs"],
        },
    }
    log(
        f"  host: {runs_in_window} runs scheduled in the window (expected {expected}; fewest in one second: "
        f"{b.results['lateness']['runs_per_second_min']}); statuses {statuses}; {runs_total} run folders in all"
    )
    log(
        f"  status.json start_time - scheduled_for: median {ms(sm['median_s'])}, p99 {ms(sm['p99_s'])}, max {ms(sm['max_s'])}; "
        f"host's lateness_ms: median {ms(median(theirs))}, p99 {ms(p99(theirs))} (largest difference to mine {ms(diff_max)})"
    )
    log(
        f"  script start (its $EPOCHREALTIME) - scheduled second: median {ms(pm['median_s'])}, p99 {ms(pm['p99_s'])}, "
        f"max {ms(pm['max_s'])} ({pm['n']} stamps); the `started` SYS line: median {ms(median(started_line))}, p99 {ms(p99(started_line))}"
    )
    log(
        f"  host CPU over the {secs} s window: {cpu:.2f} s (user {c1[0] - c0[0]:.2f}, sys {c1[1] - c0[1]:.2f}) = "
        f"{cpu_pct:.1f}% of a core; guardian {g1 - g0:.2f} s; up to {b.results['lateness']['host_threads_max']} threads; RSS {rss:.1f} MB"
    )
    per_run = max(1, runs_in_window)
    log(
        f"  per run: {cpu / per_run * 1000:.2f} ms host CPU (loop: {ref['cpu_s'] / max(1, ref['runs']) * 1000:.2f} ms per Popen), "
        f"{b.results['lateness']['host_read_syscalls'] / per_run:.0f} read-type and "
        f"{b.results['lateness']['host_write_syscalls'] / per_run:.0f} write-type syscalls (live threads' /proc/PID/task/*/io)"
    )
    if missed_lines:
        b.note(
            f"lateness: {len(missed_lines)} missed/skipped line(s) in job_scheduler.log over the whole run, "
            f"naming {logged_missed} occurrence(s) of the window; e.g. {missed_lines[0]}"
        )
    else:
        log("  job_scheduler.log: no missed or skipped occurrence")
    if runs_in_window != expected:
        b.note(f"lateness: {runs_in_window} runs scheduled in the window, expected {expected}")
    if unaccounted:
        j, t = unaccounted[0]
        b.note(
            f"lateness: {len(unaccounted)} occurrence(s) of the window neither ran nor appear in job_scheduler.log "
            f"(e.g. {j} at {datetime.datetime.fromtimestamp(t, datetime.timezone.utc):%H:%M:%S}); "
            "host.log at JOBHOST_LOG=debug may say why"
        )
    bad = {k: v for k, v in statuses.items() if k != "Success"}
    if bad:
        b.note(f"lateness: runs not Success: {bad}")

    def ratio(a, r):
        return f"{a / r:.1f}x" if r > 0 else "-"

    b.row(
        f"lateness, {n} jobs/s: start_time p99",
        ms(sm["p99_s"]),
        "loop, before Popen " + ms(sr["p99_s"]),
        ratio(sm["p99_s"], sr["p99_s"]),
        "< 50 ms",
        sm["p99_s"] < 0.050,
    )
    b.row(
        "lateness: start_time median / max",
        f"{ms(sm['median_s'])} / {ms(sm['max_s'])}",
        f"{ms(sr['median_s'])} / {ms(sr['max_s'])}",
        ratio(sm["median_s"], sr["median_s"]),
        "(info)",
        None,
    )
    b.row(
        "lateness: script start p99",
        ms(pm["p99_s"]),
        "loop " + ms(pr["p99_s"]),
        ratio(pm["p99_s"], pr["p99_s"]),
        "< 50 ms",
        pm["p99_s"] < 0.050,
    )
    b.row(
        "lateness: script start median / max",
        f"{ms(pm['median_s'])} / {ms(pm['max_s'])}",
        f"{ms(pr['median_s'])} / {ms(pr['max_s'])}",
        ratio(pm["median_s"], pr["median_s"]),
        "(info)",
        None,
    )
    b.row(
        f"lateness: host CPU, {secs} s (% core)",
        f"{cpu:.2f} s = {cpu_pct:.1f}%",
        f"loop {ref['cpu_s']:.2f} s = {ref_cpu_pct:.1f}%",
        ratio(cpu, ref["cpu_s"]),
        "< 5%",
        cpu_pct < 5.0,
    )
    b.row(
        "lateness: runs / logged missed / unlogged",
        f"{runs_in_window} / {logged_missed} / {len(unaccounted)}",
        f"expected {expected}",
        "-",
        f"{expected} / 0 / 0",
        runs_in_window == expected and not logged_missed and not unaccounted,
    )


# ---------------------------------------------------------------- 6. api


class Api:
    """A keep-alive connection to the host's API (http.client, reused)."""

    def __init__(self, host, port, token):
        self.addr = (host, port)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.sock = None
        self.connects = 0

    def request(self, method, path, auth=True, body=None):
        self.conn.request(method, path, body=body, headers=self.auth if auth else {})
        r = self.conn.getresponse()
        data = r.read()
        if self.conn.sock is not self.sock:  # http.client reconnected (or first use)
            self.sock = self.conn.sock
            self.connects += 1
        if r.will_close:
            self.conn.close()
        return r.status, data

    def get_ok(self, path, auth=True):
        status, data = self.request("GET", path, auth)
        if status != 200:
            raise BenchError(f"GET {path}: HTTP {status}: {data[:300]!r}")
        return data

    def close(self):
        self.conn.close()


def timed_gets(api, path, count, auth=True):
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        api.get_ok(path, auth)
        lat.append(time.perf_counter() - t)
    return lat


def concurrent_gets(addr, path, clients, total, auth=True):
    """`clients` threads, each its own keep-alive connection, `total` requests in all.
    Returns (wall seconds, all latencies, connections opened)."""
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    apis = [Api(*addr) for _ in range(clients)]
    for a in apis:  # connect (and warm) before the clock starts
        a.get_ok(path, auth)
    barrier = threading.Barrier(clients + 1)
    lats = [[] for _ in range(clients)]
    errors = []

    def worker(i):
        try:
            barrier.wait()
            lats[i] = timed_gets(apis[i], path, per[i], auth)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    connects = sum(a.connects for a in apis)
    for a in apis:
        a.close()
    if errors:
        raise BenchError(f"concurrent GET {path}: {errors[0]}")
    return wall, [x for l in lats for x in l], connects


def bench_api(b):
    a = b.args
    n, ncont = a.api_jobs, min(a.api_continuous, a.api_jobs)
    ntrig = n - ncont
    count, total, clients = a.api_requests, a.api_concurrent, a.api_clients
    log(
        f"[api] {n} jobs ({ncont} continuous `exec sleep 100000`, {ntrig} triggered without schedule, each run once); "
        f"GET /api/webjobs vs GET /api/health: {count} requests on one keep-alive connection, "
        f"then {total} over {clients} concurrent connections"
    )
    host = Host(b, "api")
    for i in range(ncont):
        write_job(os.path.join(host.cont, f"api-c-{i:03d}"), "#!/bin/bash\nexec sleep 100000\n", {"stopping_wait_time": 2})
    for i in range(ntrig):
        write_job(os.path.join(host.jobs, "triggered", f"api-t-{i:03d}"), "#!/bin/bash\nexit 0\n", {"timeout": 60})
    t_start = time.time()
    host.start()
    api = Api(*host.api())

    def listing():
        return json.loads(api.get_ok("/api/webjobs"))

    def all_running():
        jobs = listing()
        cont = [j for j in jobs if j.get("type") == "continuous"]
        return len(jobs) == n and all(j.get("status") == "Running" for j in cont)

    wait_until(all_running, 120, f"all {n} jobs listed and every continuous one Running", interval=0.25, alive=host.check_alive)
    log(f"  {n} jobs listed, {ncont} running, {time.time() - t_start:.1f} s after the host started")
    # One run of every triggered job, so that each carries a latest_run as in real use.
    post_lat = []
    for i in range(ntrig):
        t = time.perf_counter()
        status, data = api.request("POST", f"/api/triggeredwebjobs/api-t-{i:03d}/run")
        post_lat.append(time.perf_counter() - t)
        if status != 202:
            raise BenchError(f"POST run of api-t-{i:03d}: HTTP {status}: {data[:300]!r}")

    def all_done():
        jobs = listing()
        trig = [j for j in jobs if j.get("type") == "triggered"]
        return all((j.get("latest_run") or {}).get("status") == "Success" for j in trig)

    wait_until(all_done, 120, "every triggered run to end Success", interval=0.25, alive=host.check_alive)
    time.sleep(1.0)
    body = api.get_ok("/api/webjobs")
    jobs = json.loads(body)
    if len(jobs) != n:
        raise BenchError(f"/api/webjobs lists {len(jobs)} jobs, expected {n}")
    health_body = api.get_ok("/api/health", auth=False)
    log(
        f"  POST .../run x{ntrig}: median {ms(median(post_lat))}, p99 {ms(p99(post_lat))}; "
        f"/api/webjobs body {len(body) / 1024:.0f} KiB, /api/health body {len(health_body)} bytes"
    )

    # One client: health and webjobs alternate in blocks, so load drift hits both alike.
    timed_gets(api, "/api/webjobs", 20)
    timed_gets(api, "/api/health", 20, auth=False)
    seq_w, seq_h = [], []
    cpu_w = 0.0
    block = 100
    done = 0
    while done < count:
        k = min(block, count - done)
        seq_h += timed_gets(api, "/api/health", k, auth=False)
        c0 = cpu_seconds(host.pid)
        seq_w += timed_gets(api, "/api/webjobs", k)
        cpu_w += cpu_seconds(host.pid) - c0
        done += k
    connects = api.connects
    api.close()
    addr = host.api()

    # Concurrent clients.
    c0 = cpu_seconds(host.pid)
    wall_h, con_h, conn_h = concurrent_gets(addr, "/api/health", clients, total, auth=False)
    c1 = cpu_seconds(host.pid)
    wall_w, con_w, conn_w = concurrent_gets(addr, "/api/webjobs", clients, total)
    c2 = cpu_seconds(host.pid)
    threads = int(status_field(host.pid, "Threads"))
    rss = rss_mb(host.pid)
    host.stop(60)
    rps_h, rps_w = total / wall_h, total / wall_w
    b.results["api"] = {
        "jobs": n,
        "continuous": ncont,
        "triggered": ntrig,
        "webjobs_body_bytes": len(body),
        "post_run_s": lat_summary(post_lat),
        "single": {"webjobs": lat_summary(seq_w), "health": lat_summary(seq_h), "connections": connects},
        "host_cpu_per_webjobs_ms": cpu_w / count * 1000,
        "concurrent": {
            "clients": clients,
            "requests": total,
            "webjobs_rps": rps_w,
            "health_rps": rps_h,
            "webjobs": lat_summary(con_w),
            "health": lat_summary(con_h),
            "webjobs_host_cpu_s": c2 - c1,
            "health_host_cpu_s": c1 - c0,
            "connections": conn_h + conn_w,
        },
        "host_threads": threads,
        "host_rss_mb": rss,
    }
    log(
        f"  one client, {count} each: /api/webjobs median {ms(median(seq_w))}, p99 {ms(p99(seq_w))}, max {ms(max(seq_w))}; "
        f"/api/health median {ms(median(seq_h))}, p99 {ms(p99(seq_h))}; host CPU per listing {cpu_w / count * 1000:.2f} ms; "
        f"{connects} connection(s) opened"
    )
    log(
        f"  {clients} clients, {total} requests each path: /api/webjobs {rps_w:.0f} req/s (p99 {ms(p99(con_w))}, host CPU {c2 - c1:.2f} s); "
        f"/api/health {rps_h:.0f} req/s (p99 {ms(p99(con_h))}, host CPU {c1 - c0:.2f} s); "
        f"{conn_h + conn_w} connections for {2 * clients} clients; host {threads} threads, RSS {rss:.1f} MB"
    )
    if connects != 1 or conn_h + conn_w != 2 * clients:
        b.note(f"api: keep-alive not kept: {connects} connection(s) for the single client, {conn_h + conn_w} for {2 * clients} concurrent ones")
    b.row(
        f"api: GET /api/webjobs ({n} jobs) p99",
        ms(p99(seq_w)),
        "health " + ms(p99(seq_h)),
        f"{p99(seq_w) / p99(seq_h):.1f}x",
        "< 10 ms",
        p99(seq_w) < 0.010,
    )
    b.row(
        "api: GET /api/webjobs median",
        ms(median(seq_w)),
        "health " + ms(median(seq_h)),
        f"{median(seq_w) / median(seq_h):.1f}x",
        "(info)",
        None,
    )
    b.row(
        f"api: /api/webjobs req/s, {clients} clients",
        f"{rps_w:.0f}/s",
        f"health {rps_h:.0f}/s",
        f"{rps_w / rps_h:.2f}x",
        "(info)",
        None,
    )


# ---------------------------------------------------------------- 7. queue

QUEUE_STAMP_SCRIPT = (
    "#!/bin/bash\n"
    "# Its first command stamps the time, named by the message (or the manual run).\n"
    'printf \'%s\\n\' "$EPOCHREALTIME" > "$BENCH_STAMPS/${WEBJOBS_MESSAGE_ID:-$WEBJOBS_RUN_ID}"\n'
)
QUEUE_EXIT_SCRIPT = "#!/bin/bash\nexit 0\n"
RUN_ENDED = ("Success", "Failed", "Aborted")


def qratio(a, r):
    return f"{a / r:.2f}x" if r > 0 else "-"


def iso_time(text):
    """RFC 3339 (`...Z`, any fraction) -> epoch seconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def started_line_time(path):
    """When the host stamped the run's `run ... started (pid N)` SYS line, or None."""
    for t, _label, text in sys_lines(path):
        if text.startswith("run ") and " started (pid" in text:
            return t
    return None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunWatch:
    """Waits for a triggered run's status.json to say it ended: stats the file every
    0.5 ms and parses it only when it was replaced (the host writes it by rename), so
    the waiting client costs little CPU beside the host."""

    def __init__(self, path):
        self.path = path
        self.ino = None

    def ended(self):
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        if ino == self.ino:
            return None
        self.ino = ino
        st = read_json(self.path)
        return st if st and st.get("status") in RUN_ENDED else None


def queue_schema_sql():
    """The store's schema, read from the host's source so the reference table is shaped
    exactly like the host's (columns, indexes, tally triggers)."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "queue", "sqlite", "schema.rs")
    try:
        with open(src) as f:
            text = f.read()
    except OSError as e:
        raise BenchError(f"cannot read the store's schema from {src}: {e}")
    m = re.search(r'const V1: &str = "(.*?)";', text, re.S)
    if not m:
        raise BenchError(f"{src}: no `const V1: &str = \"...\";` found: update queue_schema_sql() in bench.py")
    return m.group(1)


# The host's own INSERT (src/queue/sqlite/mod.rs, fn insert), parameter for parameter.
QUEUE_INSERT = (
    "INSERT INTO messages (id, job, content_type, idempotency_key, correlation_id, name, "
    "priority, not_before, reply_to, state, attempts, enqueued_at, due, payload_bytes, payload) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'Queued', 0, ?10, ?11, ?12, ?13)"
)


def queue_row(job, enq_ms, seq, payload, not_before_ms):
    """One row as the host writes it; the id as new_message_id() makes it: 12 hex digits
    of ms, 4 of a sequence, 6 random."""
    mid = f"{enq_ms & 0xFFFFFFFFFFFF:012x}{seq & 0xFFFF:04x}{os.urandom(3).hex()}"
    due = not_before_ms if not_before_ms is not None else enq_ms
    return (mid, job, None, None, None, None, 0, not_before_ms, None, enq_ms, due, len(payload), payload)


def sqlite_reference(b, per_commit_max, per_commit_secs, batched, batch):
    """Python's sqlite3 on a table shaped like the host's, in the same folder tree (same
    file system), WAL + synchronous=FULL: inserts/s with one commit per insert, and
    with `batch` inserts per commit (what group commit can reach)."""
    import sqlite3

    d = os.path.join(b.tmp, "queue-ref")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "ref.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-2000")
    conn.executescript(queue_schema_sql())
    payload = b"x" * 100
    out = {"sqlite_version": sqlite3.sqlite_version}

    def bench(count, per, limit_s=None):
        n = 0
        t0 = time.perf_counter()
        c0 = sum(os.times()[:2])
        while n < count:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(min(per, count - n)):
                now = time.time_ns() // 1_000_000
                conn.execute(QUEUE_INSERT, queue_row("ref", now, n, payload, now + 3_600_000))
                n += 1
            conn.execute("COMMIT")
            if limit_s is not None and time.perf_counter() - t0 > limit_s:
                break
        wall = time.perf_counter() - t0
        return {"rows": n, "per_commit": per, "wall_s": wall, "rows_per_s": n / wall, "cpu_s": sum(os.times()[:2]) - c0}

    out["one_per_commit"] = bench(per_commit_max, 1, per_commit_secs)
    out["batched"] = bench(batched, batch)
    conn.close()
    shutil.rmtree(d, ignore_errors=True)
    return out


def qload_binary(b):
    """bench/qload.c compiled, or None (then the Python client is used)."""
    if hasattr(b, "qload"):
        return b.qload
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qload.c")
    cc = shutil.which("gcc") or shutil.which("cc")
    b.qload = None
    if cc and os.path.exists(src):
        out = os.path.join(b.tmp, "qload")
        r = subprocess.run([cc, "-O2", "-pthread", "-o", out, src], capture_output=True, text=True)
        if r.returncode == 0:
            b.qload = out
        else:
            log(f"  compiling qload.c failed, using the Python client:\n{r.stderr}")
    return b.qload


def py_load(addr, path, clients, total, body):
    """The Python fallback of qload: threads, each a keep-alive http.client connection."""
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    apis = [Api(*addr) for _ in range(clients)]
    for a in apis:
        a.request("POST", path, body=body)
    barrier = threading.Barrier(clients + 1)
    lats = [[] for _ in range(clients)]
    codes = [{} for _ in range(clients)]
    errors = []

    def worker(i):
        try:
            barrier.wait()
            for _ in range(per[i]):
                t = time.perf_counter()
                status, _ = apis[i].request("POST", path, body=body)
                lats[i].append(time.perf_counter() - t)
                codes[i][status] = codes[i].get(status, 0) + 1
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    c0 = os.times()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    c1 = os.times()
    for a in apis:
        a.close()
    ok = sum(c.get(202, 0) for c in codes)
    return {
        "wall_s": wall,
        "ok": ok,
        "other": sum(sum(c.values()) for c in codes) - ok,
        "client_user_s": c1[0] - c0[0],
        "client_sys_s": c1[1] - c0[1],
        "error": str(errors[0]) if errors else None,
        "lat_s": [x for l in lats for x in l],
        "client": "Python http.client threads",
    }


def load_messages(b, addr, job, clients, total, query="", body_bytes=100):
    """POSTs `total` messages to `job` over `clients` keep-alive connections."""
    path = f"/api/triggeredwebjobs/{job}/messages{query}"
    exe = qload_binary(b)
    if exe is None:
        r = py_load(addr, path, clients, total, b"x" * body_bytes)
    else:
        host, port, token = addr
        p = subprocess.run(
            [exe, host, str(port), token, path, str(clients), str(total), str(body_bytes)],
            capture_output=True, text=True, env=b.env, timeout=600,
        )
        try:
            r = json.loads(p.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"qload failed (exit {p.returncode}): {p.stderr.strip() or p.stdout[:300]}")
        r["lat_s"] = [x / 1e6 for x in r.pop("lat_us")]
        r["client"] = "C (bench/qload.c, pthreads)"
    if r.get("error"):
        raise BenchError(f"enqueue load on {job}: {r['error']}")
    if r["other"]:
        raise BenchError(f"enqueue load on {job}: {r['other']} answer(s) not 202, e.g. HTTP {r.get('bad_status')}: {r.get('bad_body', '')[:200]}")
    return r


def queue_counts(api, job):
    j = json.loads(api.get_ok(f"/api/triggeredwebjobs/{job}"))
    q = j.get("queue")
    if not q:
        raise BenchError(f"GET /api/triggeredwebjobs/{job}: no `queue` in the job object: {str(j)[:300]}")
    if q.get("error"):
        raise BenchError(f"job {job}: the queue is unavailable: {q['error']}")
    return q


def queue_ready(api, job):
    """Whether the host lists `job` with its queue yet (jobs register just after start)."""
    try:
        return queue_counts(api, job)
    except BenchError:
        return None


def list_messages(api, job, state=None):
    """Every message of `job` (optionally of one state), following next_url."""
    path = f"/api/triggeredwebjobs/{job}/messages?limit=1000" + (f"&state={state}" if state else "")
    out = []
    while path:
        page = json.loads(api.get_ok(path))
        out += page["messages"]
        nxt = page.get("next_url")
        path = re.sub(r"^https?://[^/]+", "", nxt) if nxt else None
    return out


def queue_host(b, name, jobs):
    """A host whose triggered jobs are `jobs`: {name: (script, settings)}. Not started."""
    host = Host(b, name)
    for job, (script, settings) in jobs.items():
        write_job(os.path.join(host.jobs, "triggered", job), script, settings)
    return host


def bench_queue_latency(b, n):
    stamps = os.path.join(b.tmp, "queue-stamps")
    os.makedirs(stamps)
    env = {"BENCH_STAMPS": stamps}
    host = queue_host(
        b, "queue-latency",
        {"qlat": (QUEUE_STAMP_SCRIPT, {"queue": {}, "env": env}), "mlat": (QUEUE_STAMP_SCRIPT, {"env": env})},
    )
    host.start()
    api = Api(*host.api())
    wait_until(lambda: queue_ready(api, "qlat"), 30, "job qlat listed with its queue", interval=0.1)
    tlogs = os.path.join(host.logs, "triggered")

    def message():
        t0 = time.time()
        status, data = api.request("POST", "/api/triggeredwebjobs/qlat/messages", body=b"{}")
        if status != 202:
            raise BenchError(f"POST qlat/messages: HTTP {status}: {data[:300]!r}")
        mid = json.loads(data)["id"]
        stamp = wait_until(lambda: read_stamp(os.path.join(stamps, mid)), 30, f"message {mid}'s run to start", interval=0.001, alive=host.check_alive)
        m = json.loads(api.get_ok(f"/api/triggeredwebjobs/qlat/messages/{mid}?wait=30"))
        if m.get("state") != "Succeeded" or not m.get("runs"):
            raise BenchError(f"message {mid} ended {m.get('state')}: {m.get('last_error')}")
        line = started_line_time(os.path.join(tlogs, "qlat", m["runs"][-1], "output_log.txt"))
        return stamp - t0, (line - t0) if line else None

    def manual():
        t0 = time.time()
        status, data = api.request("POST", "/api/triggeredwebjobs/mlat/run")
        if status != 202 or not json.loads(data).get("id"):
            raise BenchError(f"POST mlat/run: HTTP {status}: {data[:300]!r}")
        rid = json.loads(data)["id"]
        stamp = wait_until(lambda: read_stamp(os.path.join(stamps, rid)), 30, f"run {rid} to start", interval=0.001, alive=host.check_alive)
        w = RunWatch(os.path.join(tlogs, "mlat", rid, "status.json"))
        st = wait_until(w.ended, 30, f"run {rid} to end", interval=0.001, alive=host.check_alive)
        if st["status"] != "Success":
            raise BenchError(f"run {rid} of mlat ended {st['status']}")
        line = started_line_time(os.path.join(tlogs, "mlat", rid, "output_log.txt"))
        return stamp - t0, (line - t0) if line else None

    for _ in range(5):  # warm: first runs fill caches, the first connection is made
        message()
        manual()
    q_script, q_line, m_script, m_line = [], [], [], []
    block = 20
    done = 0
    while done < n:
        k = min(block, n - done)
        for _ in range(k):
            s, l = message()
            q_script.append(s)
            if l is not None:
                q_line.append(l)
            time.sleep(0.02)  # spacing, so each message meets an idle host
        for _ in range(k):
            s, l = manual()
            m_script.append(s)
            if l is not None:
                m_line.append(l)
            time.sleep(0.02)
        done += k
    api.close()
    host.stop(60)
    res = {
        "messages": n,
        "message_to_script": lat_summary(q_script),
        "message_to_started_line": lat_summary(q_line),
        "manual_to_script": lat_summary(m_script),
        "manual_to_started_line": lat_summary(m_line),
    }
    res["message_to_script"]["p50_s"] = median(q_script)
    res["manual_to_script"]["p50_s"] = median(m_script)
    log(
        f"  enqueue -> run start, {n} sequential messages: script p50 {ms(median(q_script))}, p99 {ms(p99(q_script))}, max {ms(max(q_script))}; "
        f"host `started` line p50 {ms(median(q_line))}, p99 {ms(p99(q_line))}"
    )
    log(
        f"  manual trigger -> run start, {n} sequential runs: script p50 {ms(median(m_script))}, p99 {ms(p99(m_script))}, max {ms(max(m_script))}; "
        f"host `started` line p50 {ms(median(m_line))}, p99 {ms(p99(m_line))}"
    )
    b.row(
        "queue: enqueue -> run start p99",
        ms(p99(q_script)),
        "manual " + ms(p99(m_script)),
        qratio(p99(q_script), p99(m_script)),
        "<= 20 ms",
        p99(q_script) <= 0.020,
    )
    b.row(
        "queue: enqueue -> run start p50",
        ms(median(q_script)),
        "manual " + ms(median(m_script)),
        qratio(median(q_script), median(m_script)),
        "(info)",
        None,
    )
    return res


def bench_queue_enqueue(b, n, clients, reps):
    per_commit_max = 300 if b.args.quick else 2000
    batched_rows = 20_000 if b.args.quick else 50_000
    # The disk's flush time drifts from minute to minute on a shared machine: the
    # reference is taken right before and right after the host's runs.
    refs = [sqlite_reference(b, per_commit_max, 10.0, batched_rows, 512)]
    host = queue_host(
        b, "queue-enqueue", {"qhold": (QUEUE_EXIT_SCRIPT, {"queue": {}}), "qoff": (QUEUE_EXIT_SCRIPT, {"queue": {}})}
    )
    # A twin that is disabled: it takes messages but its task does not claim on each
    # wake-up, which isolates what those claims cost the writer thread.
    with open(os.path.join(host.jobs, "triggered", "qoff", "disable.job"), "w"):
        pass
    host.start()
    addr = host.api()
    api = Api(*addr)
    wait_until(lambda: queue_ready(api, "qhold"), 30, "job qhold listed with its queue", interval=0.1)
    # Delayed an hour: no run takes CPU while the enqueue rate is measured.
    query = "?delay=3600"
    wait_until(lambda: queue_ready(api, "qoff"), 30, "job qoff listed with its queue", interval=0.1)
    sent = load_messages(b, addr, "qhold", clients, min(500, n), query)["ok"] + clients
    runs, off_runs = [], []
    for rep in range(reps):
        r = load_messages(b, addr, "qoff", clients, n, query)
        off_runs.append(r["ok"] / r["wall_s"])
        log(f"  run {rep + 1}, disabled twin qoff: {off_runs[-1]:.0f}/s, latency p50 {ms(median(r['lat_s']))}, p99 {ms(p99(r['lat_s']))}")
        c0, io0, th0 = cpu_split(host.pid), proc_io(host.pid), thread_cpu(host.pid)
        r = load_messages(b, addr, "qhold", clients, n, query)
        c1, io1, th1 = cpu_split(host.pid), proc_io(host.pid), thread_cpu(host.pid)
        sent += r["ok"] + clients  # and one untimed request per connection
        threads = {k: th1.get(k, 0.0) - th0.get(k, 0.0) for k in th1}
        run = {
            "rate_per_s": r["ok"] / r["wall_s"],
            "wall_s": r["wall_s"],
            "messages": r["ok"],
            "latency": lat_summary(r["lat_s"]),
            "host_cpu_s": (c1[0] - c0[0]) + (c1[1] - c0[1]),
            "host_user_s": c1[0] - c0[0],
            "host_sys_s": c1[1] - c0[1],
            "host_threads_cpu_s": threads,
            "host_write_syscalls": io1.get("syscw", 0) - io0.get("syscw", 0),
            "client_cpu_s": r["client_user_s"] + r["client_sys_s"],
            "client": r["client"],
        }
        runs.append(run)
        wall = r["wall_s"]
        busy = sorted(threads.items(), key=lambda kv: -kv[1])[:3]
        log(
            f"  run {rep + 1}: {clients} clients ({r['client']}), {r['ok']} POST messages?delay=3600 of 100 bytes: "
            f"{run['rate_per_s']:.0f}/s over {wall:.2f} s; latency p50 {ms(run['latency']['median_s'])}, p99 {ms(run['latency']['p99_s'])}; "
            f"host CPU {run['host_cpu_s']:.2f} s = {run['host_cpu_s'] / wall * 100:.0f}% of a core "
            f"(user {run['host_user_s']:.2f} + sys {run['host_sys_s']:.2f}; "
            + ", ".join(f"{k} {v:.2f} s" for k, v in busy)
            + f"), client CPU {run['client_cpu_s'] / wall * 100:.0f}% of a core; "
            f"{run['host_write_syscalls'] / max(1, r['ok']):.1f} host write(2)s per message"
        )
    api.close()
    api = Api(*addr)  # the first one sat idle through the loads: the host may have closed it
    q = queue_counts(api, "qhold")
    api.close()
    host.stop(60)
    if q.get("queued", 0) != sent:
        b.note(f"queue enqueue: the job shows {q.get('queued')} queued after {sent} acknowledged enqueues")
    refs.append(sqlite_reference(b, per_commit_max, 10.0, batched_rows, 512))
    for label, ref in zip(("before", "after"), refs):
        one, batched = ref["one_per_commit"], ref["batched"]
        log(
            f"  reference {label}, Python sqlite3 {ref['sqlite_version']} on the same schema, WAL + synchronous=FULL: "
            f"one commit per insert {one['rows_per_s']:.0f}/s ({one['rows']} rows, {one['wall_s']:.2f} s, CPU {one['cpu_s']:.2f} s); "
            f"512 per commit {batched['rows_per_s']:.0f}/s ({batched['rows']} rows, CPU {batched['cpu_s']:.2f} s)"
        )
    rate = median([x["rate_per_s"] for x in runs])
    one = statistics.mean(x["one_per_commit"]["rows_per_s"] for x in refs)
    batched = statistics.mean(x["batched"]["rows_per_s"] for x in refs)
    writer = median([x["host_threads_cpu_s"].get("queue-writer", 0.0) / x["wall_s"] for x in runs])
    host_pct = median([x["host_cpu_s"] / x["wall_s"] for x in runs]) * 100
    client_pct = median([x["client_cpu_s"] / x["wall_s"] for x in runs]) * 100
    per_msg = median([x["host_write_syscalls"] / max(1, x["messages"]) for x in runs])
    b.row(
        f"queue: durable enqueues/s, {clients} clients",
        f"{rate:.0f}/s",
        f"sqlite 1/commit {one:.0f}/s",
        f"{rate / one:.1f}x",
        ">= 5000/s",
        rate >= 5000,
    )
    b.row(
        "queue: enqueue vs batched sqlite (512/commit)",
        f"{rate:.0f}/s",
        f"sqlite batched {batched:.0f}/s",
        f"{rate / batched:.2f}x",
        "(info)",
        None,
    )
    b.row(
        "queue: enqueues/s into a disabled twin",
        f"{median(off_runs):.0f}/s",
        f"enabled {rate:.0f}/s",
        f"{median(off_runs) / rate:.2f}x",
        "(info)",
        None,
    )
    b.row(
        "queue: enqueue CPU, % of a core",
        f"host {host_pct:.0f}% (writer {writer * 100:.0f}%)",
        f"client {client_pct:.0f}%",
        "-",
        "(info)",
        None,
    )
    b.row(
        "queue: enqueue write(2)s per message",
        f"{per_msg:.1f}",
        "-",
        "-",
        "(info)",
        None,
    )
    return {"clients": clients, "runs": runs, "rate_per_s": rate, "disabled_twin_per_s": off_runs, "references": refs}


def bench_queue_throughput(b, n, clients):
    host = queue_host(
        b, "queue-throughput",
        {"qtp": (QUEUE_EXIT_SCRIPT, {"queue": {}}), "mtp": (QUEUE_EXIT_SCRIPT, {})},
    )
    disable = os.path.join(host.jobs, "triggered", "qtp", "disable.job")
    with open(disable, "w"):
        pass
    host.start()
    addr = host.api()
    api = Api(*addr)
    tlogs = os.path.join(host.logs, "triggered")
    wait_until(lambda: queue_ready(api, "qtp"), 30, "job qtp listed with its queue", interval=0.1)

    # Messages: enqueued while the job is disabled (they wait, Queued), then released
    # at once by removing disable.job; timed until the last one finished.
    load_messages(b, addr, "qtp", clients, n, body_bytes=2)
    # Both clients send one untimed request per connection before the timed ones.
    wait_until(lambda: queue_counts(api, "qtp").get("queued") == n + clients, 60, "the messages to be counted", interval=0.2)
    total_q = queue_counts(api, "qtp")["queued"]
    c0 = cpu_split(host.pid)
    t0 = time.time()
    os.unlink(disable)

    def drained():
        q = queue_counts(api, "qtp")
        return q["queued"] == 0 and q["running"] == 0

    wait_until(drained, 60 + total_q * 0.2, f"{total_q} messages to run", interval=0.25, alive=host.check_alive)
    c1 = cpu_split(host.pid)
    msgs = list_messages(api, "qtp")
    states = {}
    for m in msgs:
        states[m["state"]] = states.get(m["state"], 0) + 1
    if states.get("Succeeded") != total_q:
        raise BenchError(f"qtp: {total_q} messages released, ended {states}")
    q_end = max(iso_time(m["finished_at"]) for m in msgs)
    q_secs = q_end - t0
    q_cpu = (c1[0] - c0[0]) + (c1[1] - c0[1])

    # Manual runs of a twin job without a queue: trigger, wait for status.json to say
    # the run ended, trigger the next (one run at a time, as `overlap: skip` requires).
    refused = 0
    last_end = None
    cc0 = os.times()
    c0 = cpu_split(host.pid)
    t0 = time.time()
    for i in range(total_q):
        while True:
            status, data = api.request("POST", "/api/triggeredwebjobs/mtp/run")
            rid = json.loads(data).get("id") if status == 202 else None
            if rid:
                break
            if status != 409 and status != 202:
                raise BenchError(f"POST mtp/run: HTTP {status}: {data[:300]!r}")
            refused += 1  # the job had not yet taken in that its last run ended
            time.sleep(0.0005)
        w = RunWatch(os.path.join(tlogs, "mtp", rid, "status.json"))
        st = wait_until(w.ended, 30, f"run {rid} of mtp to end", interval=0.0005, alive=host.check_alive)
        if st["status"] != "Success":
            raise BenchError(f"run {rid} of mtp ended {st['status']}")
        last_end = st.get("end_time")
    c1 = cpu_split(host.pid)
    cc1 = os.times()
    m_secs = (iso_time(last_end) if last_end else time.time()) - t0
    m_cpu = (c1[0] - c0[0]) + (c1[1] - c0[1])
    client_cpu = (cc1[0] - cc0[0]) + (cc1[1] - cc0[1])
    api.close()
    host.stop(60)
    q_rate, m_rate = total_q / q_secs, total_q / m_secs
    log(
        f"  {total_q} messages (concurrency 1) released by removing disable.job: {q_secs:.1f} s = {q_rate:.0f} msg/s; "
        f"host CPU {q_cpu:.1f} s ({q_cpu / total_q * 1000:.2f} ms per message)"
    )
    log(
        f"  {total_q} manual runs back to back (trigger, wait for status.json, next): {m_secs:.1f} s = {m_rate:.0f} runs/s; "
        f"host CPU {m_cpu:.1f} s ({m_cpu / total_q * 1000:.2f} ms per run); client CPU {client_cpu:.1f} s; "
        f"{refused} trigger(s) refused with 409 and retried"
    )
    b.row(
        f"queue: {total_q} messages, job exiting 0 (msg/s)",
        f"{q_rate:.0f}/s ({q_secs:.1f} s)",
        f"manual {m_rate:.0f}/s ({m_secs:.1f} s)",
        f"{q_rate / m_rate:.2f}x",
        ">= 0.9x",
        q_rate / m_rate >= 0.9,
    )
    return {
        "messages": total_q,
        "messages_s": q_secs,
        "messages_per_s": q_rate,
        "messages_host_cpu_s": q_cpu,
        "manual_s": m_secs,
        "manual_per_s": m_rate,
        "manual_host_cpu_s": m_cpu,
        "manual_client_cpu_s": client_cpu,
        "manual_refused": refused,
    }


def settle_and_sample(host, settle, window):
    """Waits `settle` s, then samples VmRSS every 0.25 s for `window` s: (max RSS MB,
    host CPU s over the window)."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        host.check_alive()
        time.sleep(0.1)
    c0 = cpu_seconds(host.pid)
    peak = 0.0
    end = time.monotonic() + window
    while time.monotonic() < end:
        peak = max(peak, rss_mb(host.pid))
        time.sleep(0.25)
    return peak, cpu_seconds(host.pid) - c0


def probe_reads(api, job, count):
    """Latencies of the reads a user makes on a big queue."""
    mid = None
    page = json.loads(api.get_ok(f"/api/triggeredwebjobs/{job}/messages?limit=50"))
    if page["messages"]:
        mid = page["messages"][-1]["id"]
    paths = {
        "job object": f"/api/triggeredwebjobs/{job}",
        "first page (50)": f"/api/triggeredwebjobs/{job}/messages?limit=50",
        "Queued page (50)": f"/api/triggeredwebjobs/{job}/messages?state=Queued&limit=50",
        "job listing": "/api/triggeredwebjobs",
    }
    if mid:
        paths["next page (50)"] = f"/api/triggeredwebjobs/{job}/messages?limit=50&before={mid}"
    out = {}
    for label, path in paths.items():
        timed_gets(api, path, 3)
        out[label] = lat_summary(timed_gets(api, path, count))
    return out


def bench_queue_rss(b, n):
    host = queue_host(b, "queue-rss", {"qbig": (QUEUE_EXIT_SCRIPT, {"queue": {}})})
    db = os.path.join(host.logs, "queue.db")
    settle, window, probes = (2, 2, 20) if b.args.quick else (3, 4, 50)

    def measure(label):
        # A restart on the same LOGS: the last start's URL, token and log lines must not
        # be mistaken for this one's.
        for f in (".jobhost-url", ".jobhost-token", "host.log"):
            try:
                os.unlink(os.path.join(host.logs, f))
            except FileNotFoundError:
                pass
        host.start()
        t_ready = time.time()
        api = Api(*host.api())
        wait_until(lambda: queue_ready(api, "qbig"), 120, "job qbig listed with its queue", interval=0.1, alive=host.check_alive)
        ready = time.time() - t_ready
        rss0, idle_cpu = settle_and_sample(host, settle, window)
        reads = probe_reads(api, "qbig", probes)
        # Enqueues into the big queue, one at a time (each wakes the job, which claims).
        enq = []
        for _ in range(probes):
            t0 = time.perf_counter()
            status, data = api.request("POST", "/api/triggeredwebjobs/qbig/messages?delay=3600", body=b"{}")
            enq.append(time.perf_counter() - t0)
            if status != 202:
                raise BenchError(f"POST qbig/messages: HTTP {status}: {data[:300]!r}")
        reads["enqueue (delayed)"] = lat_summary(enq)
        rss1 = rss_mb(host.pid)
        q = queue_counts(api, "qbig")
        api.close()
        host.stop(60)
        host.proc = None
        log(
            f"  {label}: {q['queued']} queued; RSS {rss0:.1f} MB settled, {rss1:.1f} MB after the reads; "
            f"host CPU {idle_cpu:.3f} s over {window} s idle; API answering {ready:.2f} s after start; "
            + "; ".join(f"{k} p50 {ms(v['median_s'])} max {ms(v['max_s'])}" for k, v in reads.items())
        )
        return {"queued": q["queued"], "rss_mb": rss0, "rss_after_reads_mb": rss1, "idle_cpu_s": idle_cpu, "ready_s": ready, "reads": reads}

    empty = measure("empty queue")
    # The million (or --quick's fewer) go straight into LOGS/queue.db while the host is
    # stopped, with the host's own INSERT and id format, delayed an hour.
    import sqlite3

    t = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - n // 10  # ten enqueues per ms, ending now
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        QUEUE_INSERT,
        (queue_row("qbig", start_ms + i // 10, i, b'{"n": %d}' % i, now_ms + 3_600_000 + i // 10) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = os.path.getsize(db)
    log(f"  {n} messages inserted into {db} in {time.time() - t:.1f} s; file {size / 1e6:.0f} MB")
    # The host's claim query (src/queue/sqlite/mod.rs, claim_sql) when nothing is due:
    # it walks the claim index past every delayed message of the job.
    conn = sqlite3.connect(db, isolation_level=None)
    claim = (
        "SELECT seq FROM messages INDEXED BY messages_claim WHERE job = ?1 AND state = 'Queued' "
        "AND due <= ?2 ORDER BY priority DESC, due, seq LIMIT ?3"
    )
    conn.execute(claim, ("qbig", time.time_ns() // 1_000_000, 1)).fetchall()
    t = time.perf_counter()
    for _ in range(5):
        conn.execute(claim, ("qbig", time.time_ns() // 1_000_000, 1)).fetchall()
    claim_s = (time.perf_counter() - t) / 5
    conn.close()
    log(f"  the host's claim query on {n} delayed messages, nothing due: {ms(claim_s)} (Python sqlite3, warm cache)")
    full = measure(f"{n} queued")
    grow = full["rss_mb"] - empty["rss_mb"]
    grow_after = full["rss_after_reads_mb"] - empty["rss_after_reads_mb"]
    b.row(
        f"queue: host RSS, {n} queued",
        f"{full['rss_mb']:.1f} MB (+{grow:.1f})",
        f"empty {empty['rss_mb']:.1f} MB",
        f"{full['rss_mb'] / empty['rss_mb']:.2f}x",
        "within 5 MB",
        grow <= 5.0,
    )
    b.row(
        f"queue: host RSS after reads, {n} queued",
        f"{full['rss_after_reads_mb']:.1f} MB (+{grow_after:.1f})",
        f"empty {empty['rss_after_reads_mb']:.1f} MB",
        f"{full['rss_after_reads_mb'] / empty['rss_after_reads_mb']:.2f}x",
        "within 5 MB",
        grow_after <= 5.0,
    )
    for label in ("job object", "first page (50)"):
        f, e = full["reads"][label], empty["reads"][label]
        b.row(
            f"queue: GET {label} p50, {n} queued",
            ms(f["median_s"]),
            "empty " + ms(e["median_s"]),
            qratio(f["median_s"], e["median_s"]),
            "(info)",
            None,
        )
    f, e = full["reads"]["enqueue (delayed)"], empty["reads"]["enqueue (delayed)"]
    b.row(
        f"queue: one enqueue p50, {n} queued",
        ms(f["median_s"]),
        "empty " + ms(e["median_s"]),
        qratio(f["median_s"], e["median_s"]),
        "(info)",
        None,
    )
    b.row(
        f"queue: claim query, {n} delayed, none due",
        ms(claim_s),
        "-",
        "-",
        "(info)",
        None,
    )
    return {"messages": n, "db_bytes": size, "claim_query_s": claim_s, "empty": empty, "full": full}


def bench_queue(b):
    a = b.args
    log(
        f"[queue] enqueue -> run start ({a.queue_latency} sequential messages vs manual triggers); "
        f"durable enqueues/s ({a.queue_clients} clients, {a.queue_enqueues} messages) vs Python sqlite3; "
        f"{a.queue_runs} messages vs {a.queue_runs} back-to-back manual runs; host RSS with {a.queue_million} queued"
    )
    parts = (os.environ.get("BENCH_QUEUE_PARTS") or "latency enqueue throughput rss").split()
    out = {}
    if "latency" in parts:
        out["latency"] = bench_queue_latency(b, a.queue_latency)
    if "enqueue" in parts:
        out["enqueue"] = bench_queue_enqueue(b, a.queue_enqueues, a.queue_clients, a.queue_enqueue_reps)
    if "throughput" in parts:
        out["throughput"] = bench_queue_throughput(b, a.queue_runs, a.queue_clients)
    if "rss" in parts:
        out["rss"] = bench_queue_rss(b, a.queue_million)
    b.results["queue"] = out


# ---------------------------------------------------------------- 8. cluster (opt-in)


def psql(b, url, sql):
    """One statement through `psql` (no ~/.psqlrc); its output, tuples only."""
    try:
        p = subprocess.run(
            ["psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60, env=b.env,
        )
    except FileNotFoundError:
        raise BenchError("`psql` not found: the cluster section needs the PostgreSQL client (apt-get install postgresql-client)")
    except subprocess.TimeoutExpired:
        raise BenchError(f"psql {url}: `{sql[:80]}` did not answer within 60 s")
    if p.returncode != 0:
        raise BenchError(f"psql {url}: `{sql[:80]}` failed: {p.stderr.strip()[:300]} (set BENCH_PG to a server URL whose role may create databases)")
    return p.stdout.strip()


def pg_url(admin, db):
    """The admin URL with its database replaced by `db`."""
    return re.sub(r"^(postgres(?:ql)?://[^/]+)(?:/[^?]*)?", lambda m: f"{m.group(1)}/{db}", admin)


def pg_create(b, name):
    """A fresh database for one measure, dropped at clean-up; its URL."""
    admin = b.args.pg_admin
    db = f"jobhost_bench_{os.getpid()}_{name}"
    psql(b, admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(b, admin, f'CREATE DATABASE "{db}"')
    b.pg_dbs.append((admin, db))
    return pg_url(admin, db), db


def pg_xacts(b, db):
    """Transactions committed + rolled back in `db` so far (pg_stat_database)."""
    out = psql(b, b.args.pg_admin, f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'")
    return int(out or 0)


def cluster_host(b, name, jobs, url, instance, ttl=None):
    host = Host(b, name, store=url, instance=instance, extra=["--lease-ttl", str(ttl)] if ttl else [])
    for job, (script, settings) in jobs.items():
        write_job(os.path.join(host.jobs, "triggered", job), script, settings)
    return host


def disable(host, job, kind="triggered"):
    with open(os.path.join(host.jobs, kind, job, "disable.job"), "w"):
        pass


def bench_cluster_latency(b, n):
    url, _ = pg_create(b, "lat")
    stamps = os.path.join(b.tmp, "cluster-stamps")
    os.makedirs(stamps)
    jobs = {"qlat": (QUEUE_STAMP_SCRIPT, {"queue": {}, "env": {"BENCH_STAMPS": stamps}})}
    # `a` must have the job for its API to take the enqueue (an unknown job is a 404),
    # but disabled it never claims: every message runs on `b`.
    ha = cluster_host(b, "cluster-a", jobs, url, "a")
    disable(ha, "qlat")
    hb = cluster_host(b, "cluster-b", jobs, url, "b")
    hr = queue_host(b, "cluster-ref", jobs)  # embedded store
    for h in (ha, hb, hr):
        h.start()
    apis = {k: Api(*h.api()) for k, h in (("a", ha), ("b", hb), ("ref", hr))}
    for k, api in apis.items():
        wait_until(lambda: queue_ready(api, "qlat"), 30, f"job qlat listed with its queue on {k}", interval=0.1)

    def message(enq, runner):
        api = apis[enq]
        run_api = apis["b" if runner is hb else "ref"]
        t0 = time.time()
        status, data = api.request("POST", "/api/triggeredwebjobs/qlat/messages", body=b"{}")
        if status != 202:
            raise BenchError(f"POST qlat/messages on {enq}: HTTP {status}: {data[:300]!r}")
        mid = json.loads(data)["id"]
        stamp = wait_until(lambda: read_stamp(os.path.join(stamps, mid)), 30, f"message {mid}'s run to start", interval=0.001, alive=runner.check_alive)
        m = json.loads(run_api.get_ok(f"/api/triggeredwebjobs/qlat/messages/{mid}?wait=30"))
        if m.get("state") != "Succeeded" or not m.get("runs"):
            raise BenchError(f"message {mid} ended {m.get('state')}: {m.get('last_error')}")
        line = started_line_time(os.path.join(runner.logs, "triggered", "qlat", m["runs"][-1], "output_log.txt"))
        return stamp - t0, (line - t0) if line else None

    kinds = {"cross": ("a", hb), "same-pg": ("b", hb), "ref": ("ref", hr)}
    res = {k: ([], []) for k in kinds}
    for _ in range(5):  # warm
        for enq, runner in kinds.values():
            message(enq, runner)
    done, block = 0, 20
    while done < n:
        k = min(block, n - done)
        for kind, (enq, runner) in kinds.items():
            for _ in range(k):
                s, l = message(enq, runner)
                res[kind][0].append(s)
                if l is not None:
                    res[kind][1].append(l)
                time.sleep(0.02)
        done += k
    for api in apis.values():
        api.close()
    for h in (ha, hb, hr):
        h.stop(60)
    out = {}
    labels = {"cross": "enqueue on a -> start on b (PostgreSQL)", "same-pg": "enqueue on b -> start on b (PostgreSQL)", "ref": "one host, embedded store"}
    for kind, (sc, li) in res.items():
        out[kind] = {"script": lat_summary(sc), "started_line": lat_summary(li)}
        out[kind]["script"]["p50_s"] = median(sc)
        log(
            f"  {labels[kind]}, {len(sc)} messages: script start p50 {ms(median(sc))}, p99 {ms(p99(sc))}, max {ms(max(sc))}; "
            f"host `started` line p50 {ms(median(li))}, p99 {ms(p99(li))}"
        )
    c, r, s = res["cross"][0], res["ref"][0], res["same-pg"][0]
    b.row("cluster: enqueue a -> run start b, p99", ms(p99(c)), "one host embedded " + ms(p99(r)), qratio(p99(c), p99(r)), "<= 50 ms", p99(c) <= 0.050)
    b.row("cluster: enqueue a -> run start b, p50", ms(median(c)), "one host embedded " + ms(median(r)), qratio(median(c), median(r)), "(info)", None)
    b.row("cluster: enqueue b -> run start b, p99", ms(p99(s)), "one host embedded " + ms(p99(r)), qratio(p99(s), p99(r)), "(info)", None)
    return out


def lateness_once(b, label, url, secs, n=100, xacts_db=None):
    """The lateness section's host workload (n jobs on `* * * * * *`, full histories)
    on one host, with the cluster store at `url` or embedded; start_time - scheduled_for
    of every run of the window, the host's `lateness_ms`, its CPU."""
    names = [f"late-{i:03d}" for i in range(n)]
    keep = max(50, secs + 30)
    settings = {"schedule": "* * * * * *", "history_size": keep}
    host = Host(b, f"cluster-lateness-{label}", store=url, instance="solo" if url else None)
    for name in names:
        write_job(os.path.join(host.jobs, "triggered", name), LATENESS_SCRIPT, settings)
    prefill_history(os.path.join(host.logs, "triggered"), names, keep - 1)
    host.start()
    tlogs = os.path.join(host.logs, "triggered")

    def sched_log(name):
        try:
            with open(os.path.join(tlogs, name, "job_scheduler.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    wait_until(lambda: all("scheduled `" in sched_log(x) for x in names), 60, f"all {n} jobs to be scheduled", interval=0.1, alive=host.check_alive)
    first = math.ceil(time.time()) + 2

    def sleep_until(t):
        while True:
            host.check_alive()
            d = t - time.time()
            if d <= 0:
                return
            time.sleep(min(d, 0.5))

    sleep_until(first - 0.5)
    c0 = cpu_split(host.pid)
    x0 = pg_xacts(b, xacts_db) if xacts_db else None
    sleep_until(first + secs - 0.5)
    c1 = cpu_split(host.pid)
    x1 = pg_xacts(b, xacts_db) if xacts_db else None
    lo, hi = first, first + secs
    time.sleep(3)  # the window's last runs end
    host.stop(60)
    own, field, runs, statuses = [], [], 0, {}
    for name in names:
        d = os.path.join(tlogs, name)
        for rid in (x for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []:
            st = read_json(os.path.join(d, rid, "status.json"))
            if not st or not st.get("scheduled_for"):
                continue
            sched = parse_log_time(st["scheduled_for"])
            if not lo <= sched < hi:
                continue
            runs += 1
            statuses[st.get("status")] = statuses.get(st.get("status"), 0) + 1
            own.append(parse_log_time(st["start_time"]) - sched)
            if st.get("lateness_ms") is not None:
                field.append(st["lateness_ms"] / 1000.0)
    if not own:
        raise BenchError(f"lateness ({label}): no run of the window found")
    cpu = (c1[0] - c0[0]) + (c1[1] - c0[1])
    out = {
        "store": label, "runs": runs, "expected": n * secs, "statuses": statuses,
        "start_time": lat_summary(own), "lateness_ms_field": lat_summary(field),
        "host_cpu_s": cpu, "host_cpu_pct": cpu / secs * 100,
        "xacts": (x1 - x0) if xacts_db else None,
    }
    log(
        f"  {label}: {runs} runs in the {secs} s window (expected {n * secs}; {statuses}); lateness_ms p50 {ms(median(field))}, "
        f"p99 {ms(p99(field))}, max {ms(max(field))}; start_time p99 {ms(p99(own))}; host CPU {cpu:.2f} s = {cpu / secs * 100:.1f}% of a core"
        + (f"; {x1 - x0} transactions in the window" if xacts_db else "")
    )
    return out


def bench_cluster_lateness(b, secs):
    url, db = pg_create(b, "late")
    emb = lateness_once(b, "embedded", None, secs)
    pg = lateness_once(b, "postgres", url, secs, xacts_db=db)
    e99, p99_ = emb["lateness_ms_field"]["p99_s"], pg["lateness_ms_field"]["p99_s"]
    # "No more than 10% worse"; 2 ms of slack so that sub-10-ms figures are not judged on noise.
    goal = max(e99 * 1.10, e99 + 0.002)
    b.row(f"cluster: lateness p99, 100 jobs/s, {secs} s", ms(p99_), "embedded " + ms(e99), qratio(p99_, e99), "<= 1.10x (+2 ms)", p99_ <= goal)
    b.row("cluster: lateness p50", ms(pg["lateness_ms_field"]["median_s"]), "embedded " + ms(emb["lateness_ms_field"]["median_s"]),
          qratio(pg["lateness_ms_field"]["median_s"], emb["lateness_ms_field"]["median_s"]), "(info)", None)
    b.row("cluster: lateness runs in window", f"{pg['runs']}", f"embedded {emb['runs']}", "-", f"{pg['expected']}", pg["runs"] == pg["expected"] and emb["runs"] == emb["expected"])
    b.row("cluster: lateness host CPU (% core)", f"{pg['host_cpu_pct']:.1f}%", f"embedded {emb['host_cpu_pct']:.1f}%", qratio(pg["host_cpu_s"], emb["host_cpu_s"]), "(info)", None)
    return {"embedded": emb, "postgres": pg}


SINGLETON_SCRIPT = (
    "#!/bin/sh\n"
    'echo "start $WEBJOBS_FENCING_TOKEN $HOST $(date +%s.%N)" >> "$SHARED/log"\n'
    "while true; do sleep 0.1; done\n"
)


def singleton_starts(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 4 and p[0] == "start":
                    out.append((int(p[1]), p[2], float(p[3])))
    except FileNotFoundError:
        pass
    return out


def bench_cluster_takeover(b, rounds, ttl):
    url, _ = pg_create(b, "solo")
    shared = os.path.join(b.tmp, "cluster-solo")
    os.makedirs(shared)
    log_path = os.path.join(shared, "log")
    hosts = {}
    for name in ("a", "b", "c"):
        h = Host(b, f"cluster-solo-{name}", store=url, instance=name, extra=["--lease-ttl", str(ttl)])
        write_job(os.path.join(h.cont, "solo"), SINGLETON_SCRIPT,
                  {"is_singleton": True, "stopping_wait_time": 1, "env": {"SHARED": shared, "HOST": name}})
        hosts[name] = h.start()
    wait_until(lambda: singleton_starts(log_path), 60, "the singleton to start on one host", interval=0.05)
    takeovers = []
    for r in range(rounds):
        before = singleton_starts(log_path)
        token, holder, _ = before[-1]
        t_kill = time.time()
        hosts[holder].proc.kill()
        hosts[holder].proc.wait()
        alive = [h for k, h in hosts.items() if k != holder]

        def moved():
            for h in alive:
                h.check_alive()
            s = singleton_starts(log_path)
            return s[len(before):] or None

        new = wait_until(moved, ttl + 60, f"another host to take the singleton over (round {r + 1})", interval=0.01)
        tok2, host2, t2 = new[0]
        if len(new) > 1 or host2 == holder or tok2 <= token:
            b.note(f"cluster takeover round {r + 1}: unexpected starts after the kill of {holder}: {new}")
        takeovers.append(t2 - t_kill)
        log(f"  round {r + 1}: killed {holder} (token {token}); {host2} started token {tok2} after {t2 - t_kill:.2f} s")
        hosts[holder].start()  # a fresh process; waits its turn
    for h in hosts.values():
        h.stop(60)
    tk = sorted(takeovers)
    res = {"ttl_s": ttl, "takeovers_s": takeovers, "min_s": tk[0], "p50_s": median(tk), "p90_s": pct(tk, 0.90), "max_s": tk[-1]}
    log(f"  takeover after SIGKILL, {rounds} rounds, ttl {ttl} s: min {tk[0]:.2f} s, p50 {median(tk):.2f} s, p90 {pct(tk, 0.90):.2f} s, max {tk[-1]:.2f} s")
    b.row(f"cluster: singleton takeover max, ttl {ttl} s", f"{tk[-1]:.2f} s", f"ttl {ttl} s", f"{tk[-1] / ttl:.2f}x", f"<= {ttl + 2} s", tk[-1] <= ttl + 2)
    b.row("cluster: takeover min / p50 / p90", f"{tk[0]:.2f} / {median(tk):.2f} / {pct(tk, 0.90):.2f} s", f"ttl {ttl} s", f"{median(tk) / ttl:.2f}x", "(info)", None)
    return res


class StatementLog:
    """What the server logged for one database, read from the server's log file when
    this user may read it. The database (only it) gets `log_min_duration_statement = 0`,
    so every protocol step is a line: `parse` (a statement prepared: one round trip),
    `bind` + `execute` (one round trip), `statement` (a simple query, one round trip). A
    backend process id seen for the first time is a new connection."""

    def __init__(self, b, db):
        self.db = db
        self.path = os.environ.get("BENCH_PG_LOG") or self.find(b)
        self.offset = os.path.getsize(self.path) if self.path else 0

    @staticmethod
    def find(b):
        try:
            cur = psql(b, b.args.pg_admin, "SELECT coalesce(pg_current_logfile(), '')")
        except BenchError:
            cur = ""
        if cur:
            d = psql(b, b.args.pg_admin, "SHOW data_directory")
            p = cur if cur.startswith("/") else os.path.join(d, cur)
            if os.access(p, os.R_OK):
                return p
        for p in sorted(glob_files("/var/log/postgresql", ".log")):
            if os.access(p, os.R_OK):
                return p
        return None

    def lines(self):
        """(epoch seconds, step, statement's first line) for every round trip of the
        database since this object was made: step is `parse`, `execute`, `statement`
        or `connect`."""
        if not self.path:
            return []
        pat = re.compile(
            r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+ \[(\d+)\] \S*@" + re.escape(self.db)
            + r" LOG:  duration: [\d.]+ ms  (parse|execute|statement)[^:]*: (.*)$"
        )
        out = []
        pids = set()
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            for line in f:
                m = pat.match(line)
                if m:
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
                    if m.group(2) not in pids:
                        pids.add(m.group(2))
                        out.append((t, "connect", ""))
                    out.append((t, m.group(3), m.group(4).strip()))
        return out


def glob_files(d, suffix):
    try:
        return [os.path.join(d, x) for x in os.listdir(d) if x.endswith(suffix)]
    except OSError:
        return []


def statement_kind(step, sql):
    """A short name for one round trip: prepares and connections by their step,
    statements by their text (numbers of the same shape merged)."""
    if step == "connect":
        return "(new connection)"
    if step == "parse":
        return "(prepare)"
    s = " ".join(sql.split())
    s = re.sub(r"^WITH picked AS .*", "claim (WITH picked ... UPDATE jobhost_messages)", s)
    return s[:72]


def bench_cluster_roundtrips(b, count):
    url, db = pg_create(b, "rt")
    logging_on = True
    try:
        psql(b, b.args.pg_admin, f"ALTER DATABASE \"{db}\" SET log_min_duration_statement = 0")
    except BenchError as e:
        logging_on = False
        b.note(f"cluster round trips: no statement log ({e}); transactions only")
    slog = StatementLog(b, db) if logging_on else None
    if slog is not None and not slog.path:
        b.note("cluster round trips: the server log is not readable here (BENCH_PG_LOG names it); transactions only")
        slog = None
    nsched = max(1, count // 20)  # jobs on `* * * * * *`: `count` runs take 20 s
    secs = math.ceil(count / nsched)
    stamps = os.path.join(b.tmp, "cluster-rt-stamps")
    os.makedirs(stamps)
    done_file = os.path.join(stamps, "done")
    jobs = {
        "rtq": ('#!/bin/bash\necho x >> "$BENCH_DONE"\n', {"queue": {}, "history_size": 50, "env": {"BENCH_DONE": done_file}}),
        "rth": (QUEUE_EXIT_SCRIPT, {"queue": {}}),
    }
    for i in range(nsched):
        jobs[f"rts-{i:03d}"] = (LATENESS_SCRIPT, {"schedule": "* * * * * *", "history_size": secs + 30})
    host = cluster_host(b, "cluster-rt", jobs, url, "solo")
    for i in range(nsched):
        disable(host, f"rts-{i:03d}")
    host.start()
    addr = host.api()
    api = Api(*addr)
    for j in ("rtq", "rth"):
        wait_until(lambda: queue_ready(api, j), 30, f"job {j} listed with its queue", interval=0.1)
    api.close()
    time.sleep(3)  # start-up statements settle

    windows = {}

    def window(name, fn):
        time.sleep(1.2)  # backends flush their statistics at most once a second
        x0, t0 = pg_xacts(b, db), time.time()
        k = fn()
        time.sleep(3)  # the last settlements end, and their statistics are flushed
        x1, t1 = pg_xacts(b, db), time.time()
        windows[name] = {"t0": t0, "t1": t1, "xacts": x1 - x0, "count": k}
        return k

    idle_s = 10.0 if b.args.quick else 20.0
    window("idle", lambda: time.sleep(idle_s) or 0)

    def enqueue(job, query):
        def go():
            api = Api(*addr)  # fresh: the host closes a connection left idle
            for _ in range(count):
                status, data = api.request("POST", f"/api/triggeredwebjobs/{job}/messages{query}", body=b"{}")
                if status != 202:
                    raise BenchError(f"POST {job}/messages: HTTP {status}: {data[:300]!r}")
            api.close()
            return count
        return go

    window("enqueue", enqueue("rth", "?delay=3600"))

    def messages():
        enqueue("rtq", "")()

        def ran():
            try:
                with open(done_file) as f:
                    return sum(1 for _ in f) >= count
            except FileNotFoundError:
                return False

        wait_until(ran, 300, f"{count} messages of rtq to run", interval=0.05, alive=host.check_alive)
        return count

    window("messages", messages)

    def scheduled():
        # Enabled at once; the window is whole seconds from 2 s on.
        for i in range(nsched):
            os.remove(os.path.join(host.jobs, "triggered", f"rts-{i:03d}", "disable.job"))
        first = math.ceil(time.time()) + 2
        while time.time() < first + secs:
            host.check_alive()
            time.sleep(0.2)
        return first

    window("scheduled", scheduled)
    for i in range(nsched):
        disable(host, f"rts-{i:03d}")
    # Runs of the window: from the run records.
    tlogs = os.path.join(host.logs, "triggered")
    runs = 0
    t0s, t1s = windows["scheduled"]["t0"], windows["scheduled"]["t1"]
    for i in range(nsched):
        d = os.path.join(tlogs, f"rts-{i:03d}")
        for rid in (x for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []:
            st = read_json(os.path.join(d, rid, "status.json"))
            if st and st.get("scheduled_for") and t0s <= parse_log_time(st["scheduled_for"]) < t1s:
                runs += 1
    windows["scheduled"]["count"] = runs
    api.close()
    api = Api(*addr)
    q = queue_counts(api, "rtq")
    api.close()
    host.stop(60)
    if q.get("queued") or q.get("running"):
        b.note(f"cluster round trips: rtq still shows {q}")
    stmts = slog.lines() if slog else []
    idle = windows["idle"]
    idle_x_rate = idle["xacts"] / (idle["t1"] - idle["t0"])

    def stmts_in(w):
        # Round trips: prepares, executes, simple statements (not connections).
        return [(step, sql) for t, step, sql in stmts if w["t0"] <= t < w["t1"] and step != "connect"]

    def connects_in(w):
        return sum(1 for t, step, _ in stmts if w["t0"] <= t < w["t1"] and step == "connect")

    idle_s_rate = len(stmts_in(idle)) / (idle["t1"] - idle["t0"])
    res = {"idle_xacts_per_s": idle_x_rate, "idle_round_trips_per_s": idle_s_rate, "statement_log": slog.path if slog else None, "windows": windows}
    log(f"  idle baseline ({idle['t1'] - idle['t0']:.0f} s, 1 host, {nsched} disabled scheduled jobs, 2 idle queue jobs): "
        f"{idle_x_rate:.2f} transactions/s" + (f", {idle_s_rate:.2f} round trips/s, {connects_in(idle)} new connection(s): " + kinds_text(stmts_in(idle)) if slog else ""))
    per = {}
    for name in ("enqueue", "messages", "scheduled"):
        w = windows[name]
        dt = w["t1"] - w["t0"]
        k = max(1, w["count"])
        x = (w["xacts"] - idle_x_rate * dt) / k
        sl = stmts_in(w)
        s = (len(sl) - idle_s_rate * dt) / k if slog else None
        per[name] = {"count": w["count"], "seconds": dt, "xacts_per": x, "round_trips_per": s, "connections": connects_in(w), "kinds": kinds_count(sl)}
        log(f"  {name}: {w['count']} in {dt:.1f} s: {x:.2f} transactions each (net of idle)"
            + (f", {s:.2f} round trips each, {connects_in(w)} new connection(s); per item (gross): " + kinds_text(sl, k) if slog else ""))
    res["per"] = per
    run_x = per["scheduled"]["xacts_per"]
    msg_x = per["messages"]["xacts_per"]
    run_s = per["scheduled"]["round_trips_per"]
    msg_s = per["messages"]["round_trips_per"]
    val = lambda s, x: (f"{s:.2f} trips" if s is not None else "-") + f" / {x:.2f} xacts"  # noqa: E731
    b.row("cluster: round trips per scheduled run", val(run_s, run_x), "embedded: 0", "-", "<= 3", (run_s if run_s is not None else run_x) <= 3)
    # The host's trips to run a message: all of them but the enqueue's INSERT (one per
    # message, the client's request). Without the statement log: transactions minus one.
    ins = sum(v for k, v in per["messages"]["kinds"].items() if k.startswith("INSERT INTO jobhost_messages")) / max(1, per["messages"]["count"])
    run_side = (msg_s - ins) if msg_s is not None else msg_x - 1
    res["message_run_side_round_trips"] = run_side
    b.row("cluster: round trips to run a message", f"{run_side:.2f}", "with its enqueue " + val(msg_s, msg_x), "-", "<= 2", run_side <= 2)
    b.row("cluster: round trips per enqueue (delayed)", val(per["enqueue"]["round_trips_per"], per["enqueue"]["xacts_per"]), "embedded: 0", "-", "(info)", None)
    return res


def kinds_count(stmts):
    out = {}
    for step, sql in stmts:
        k = statement_kind(step, sql)
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def kinds_text(stmts, per=None):
    c = kinds_count(stmts)
    return "; ".join(f"{v / per:.2f} {k}" if per else f"{v} {k}" for k, v in list(c.items())[:10])


def bench_cluster(b):
    a = b.args
    log(
        f"[cluster] PostgreSQL at {a.pg_admin} (a database per measure): enqueue on one host -> run on another "
        f"({a.cluster_latency} messages) vs one embedded host; lateness of 100 jobs/s with and without the store "
        f"({a.cluster_lateness_seconds} s each); singleton takeover after SIGKILL ({a.cluster_takeovers} rounds, ttl {a.cluster_ttl} s); "
        f"round trips per scheduled run and per message ({a.cluster_rt} each)"
    )
    psql(b, a.pg_admin, "SELECT 1")
    parts = (os.environ.get("BENCH_CLUSTER_PARTS") or "latency lateness takeover roundtrips").split()
    out = {}
    if "latency" in parts:
        out["latency"] = bench_cluster_latency(b, a.cluster_latency)
    if "lateness" in parts:
        out["lateness"] = bench_cluster_lateness(b, a.cluster_lateness_seconds)
    if "takeover" in parts:
        out["takeover"] = bench_cluster_takeover(b, a.cluster_takeovers, a.cluster_ttl)
    if "roundtrips" in parts:
        out["roundtrips"] = bench_cluster_roundtrips(b, a.cluster_rt)
    b.results["cluster"] = out


# ---------------------------------------------------------------- main


def print_summary(b):
    cols = ("figure", "value", "reference", "ratio", "target", "result")
    heads = ("figure", "value (median)", "same-run reference", "ratio", "target", "result")
    widths = [max(len(h), *(len(str(r[c])) for r in b.rows)) for c, h in zip(cols, heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    log("")
    log("=" * len(line))
    log(line)
    log("  ".join("-" * w for w in widths))
    for r in b.rows:
        log("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    log("=" * len(line))
    if b.notes:
        log("notes:")
        for n in b.notes:
            log(f"  - {n}")


def machine_line(b):
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except OSError:
        load = ["?"]
    ver = subprocess.run([b.bin, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{ver or b.bin}; {os.cpu_count()} CPUs; load average {' '.join(load)}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--gen":
        python_gen(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--ref-lateness":
        reference_lateness_loop(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description="jobhost benchmarks (see bench/README.md)")
    ap.add_argument("sections", nargs="*", help="any of: " + " ".join(SECTIONS) + " (default: all)")
    ap.add_argument("--bin", required=True, help="the jobhost binary")
    ap.add_argument("--tmp", required=True, help="an empty temp folder for this run")
    ap.add_argument("--tag", default=f"jobhost-bench-{os.getpid()}-{time.time_ns()}")
    ap.add_argument("--quick", action="store_true", help="smaller, single runs (about a minute)")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--lines", type=int)
    ap.add_argument("--reps", type=int, help="throughput runs per mode")
    ap.add_argument("--jobs", type=int, help="jobs for idle and stop (default 100, env BENCH_JOBS)")
    ap.add_argument("--no-escape", dest="escape", action="store_false", help="stop jobs: no setsid grandchild")
    a = ap.parse_args()
    for s in a.sections:
        if s not in SECTIONS + EXTRA_SECTIONS:
            ap.error(f"unknown section {s!r}: use any of {' '.join(SECTIONS + EXTRA_SECTIONS)}")
    sections = a.sections or list(SECTIONS)
    env_int = lambda k, d: int(os.environ[k]) if os.environ.get(k) else d  # noqa: E731
    a.lines = a.lines or env_int("BENCH_LINES", 200_000 if a.quick else 1_000_000)
    a.reps = a.reps or env_int("BENCH_REPS", 1 if a.quick else 5)
    a.pickup_tries = env_int("BENCH_PICKUP_TRIES", 8 if a.quick else 20)
    a.pickup_gap = 0.5 if a.quick else 1.2
    a.idle_seconds = float(env_int("BENCH_IDLE_SECONDS", 5 if a.quick else 20))
    a.stop_reps = env_int("BENCH_STOP_REPS", 1 if a.quick else 3)
    a.jobs = a.jobs or env_int("BENCH_JOBS", 100)
    a.lateness_jobs = env_int("BENCH_LATENESS_JOBS", 100)
    a.lateness_seconds = env_int("BENCH_LATENESS_SECONDS", 10 if a.quick else 30)
    a.lateness_fresh = env_int("BENCH_LATENESS_FRESH", 0) == 1
    a.api_jobs = env_int("BENCH_API_JOBS", 500)
    a.api_continuous = env_int("BENCH_API_CONTINUOUS", a.api_jobs // 2)
    a.api_requests = env_int("BENCH_API_REQUESTS", 200 if a.quick else 1000)
    a.api_concurrent = env_int("BENCH_API_CONCURRENT_REQUESTS", 800 if a.quick else 2000)
    a.api_clients = env_int("BENCH_API_CLIENTS", 8)
    a.queue_latency = env_int("BENCH_QUEUE_LATENCY", 50 if a.quick else 200)
    a.queue_enqueues = env_int("BENCH_QUEUE_ENQUEUES", 5_000 if a.quick else 20_000)
    a.queue_clients = env_int("BENCH_QUEUE_CLIENTS", 8)
    a.queue_enqueue_reps = env_int("BENCH_QUEUE_ENQUEUE_REPS", 1 if a.quick else 3)
    a.queue_runs = env_int("BENCH_QUEUE_RUNS", 2_000 if a.quick else 10_000)
    a.queue_million = env_int("BENCH_QUEUE_MESSAGES", 100_000 if a.quick else 1_000_000)
    a.pg_admin = os.environ.get("BENCH_PG") or "postgres://root@127.0.0.1:5432/test"
    a.cluster_latency = env_int("BENCH_CLUSTER_LATENCY", 50 if a.quick else 200)
    a.cluster_lateness_seconds = env_int("BENCH_CLUSTER_LATENESS_SECONDS", 10 if a.quick else 30)
    a.cluster_takeovers = env_int("BENCH_CLUSTER_TAKEOVERS", 5 if a.quick else 20)
    a.cluster_ttl = env_int("BENCH_CLUSTER_TTL", 3)
    a.cluster_rt = env_int("BENCH_CLUSTER_ROUNDTRIP_COUNT", 300 if a.quick else 1000)

    b = Bench(a)

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    rc = 0
    t_begin = time.monotonic()
    try:
        log(f"jobhost benchmark: {machine_line(b)}")
        log(f"sections: {' '.join(sections)}{' (quick)' if a.quick else ''}; temp folder {b.tmp}")
        for s in sections:
            t = time.monotonic()
            try:
                globals()[f"bench_{s}"](b)
            except BenchError as e:
                rc = 1
                log(f"  ERROR in {s}: {e}")
                b.row(s, "ERROR", "-", "-", "-", False)
                b.cleanup()
            log(f"  ({s}: {time.monotonic() - t:.0f} s)")
    except Interrupted as e:
        log(f"\ninterrupted ({e}): cleaning up")
        rc = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        b.cleanup()
    if rc != 130:
        print_summary(b)
        try:
            with open("/proc/loadavg") as f:
                load = " ".join(f.read().split()[:3])
        except OSError:
            load = "?"
        log(f"total {time.monotonic() - t_begin:.0f} s; load average at the end {load}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rows": b.rows, "results": b.results, "notes": b.notes}, f, indent=2)
        if rc == 0 and any(r["result"] == "FAIL" for r in b.rows):
            rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
