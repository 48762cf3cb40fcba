#!/usr/bin/env python3
"""Two builds of jobhost side by side: host CPU of the lateness workload, A against B.

    python3 bench/side_by_side.py BIN_A BIN_B [--env-a K=V,...] [--env-b K=V,...]
                                  [--seconds 20] [--rounds 4] [--root /dev/shm/jobhost-sbs]

Each round starts both hosts at once, each on its own folder with 100 triggered jobs
on `* * * * * *` and full histories (as the lateness section), waits 8 s, and reads
both hosts' CPU over the same window; rounds alternate which host starts first.
Absolute CPU figures on a shared machine drift by 10-20% from minute to minute (the
file system's state, the neighbours); two hosts measured in the same seconds see the
same drift, so their ratio is steady to about 2%. Use it to decide whether a change
makes a run cheaper; bench/run.sh gives the figures. tmpfs (the default root) keeps
the file system's own noise out; pass --root on a disk folder to include it.

Standard library only (it borrows bench.py's helpers). Leaves no process behind: the
hosts get SIGTERM, then SIGKILL, on every way out.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

JOBS = 100


def env_with(spec):
    env = dict(os.environ)
    for kv in filter(None, (spec or "").split(",")):
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def start(binary, env, root):
    shutil.rmtree(root, ignore_errors=True)
    jobs, logs = os.path.join(root, "jobs"), os.path.join(root, "logs")
    names = [f"late-{i:03d}" for i in range(JOBS)]
    for name in names:
        bench.write_job(
            os.path.join(jobs, "triggered", name),
            bench.LATENESS_SCRIPT,
            {"schedule": "* * * * * *", "history_size": 50},
        )
    bench.prefill_history(os.path.join(logs, "triggered"), names, 49)
    env = dict(env, TMPDIR=root)
    cmd = [binary, "run", "--jobs", jobs, "--logs", logs, "--listen", "127.0.0.1:0"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bin_a")
    ap.add_argument("bin_b")
    ap.add_argument("--env-a", default="")
    ap.add_argument("--env-b", default="")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--root", default="/dev/shm/jobhost-sbs")
    a = ap.parse_args()
    hosts = {"A": (a.bin_a, env_with(a.env_a)), "B": (a.bin_b, env_with(a.env_b))}
    ratios = []
    for r in range(a.rounds):
        order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
        procs = {}
        try:
            for label in order:
                binary, env = hosts[label]
                procs[label] = start(binary, env, f"{a.root}-{label}")
            time.sleep(8)
            c0 = {k: sum(bench.cpu_split(p.pid)) for k, p in procs.items()}
            time.sleep(a.seconds)
            c1 = {k: sum(bench.cpu_split(p.pid)) for k, p in procs.items()}
        finally:
            stop(list(procs.values()))
        pct = {k: (c1[k] - c0[k]) / a.seconds * 100 for k in procs}
        ratios.append(pct["B"] / pct["A"])
        print(f"round {r + 1}: A {pct['A']:.2f}% of a core, B {pct['B']:.2f}%, B/A {ratios[-1]:.3f}", flush=True)
    for k in hosts:
        shutil.rmtree(f"{a.root}-{k}", ignore_errors=True)
    print(f"B/A median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
