//! Several hosts on one shared JOBS and LOGS (docs/jobs.md): singletons run on exactly one
//! host and move when it dies; other jobs run everywhere with per-instance files.

use crate::support::*;

#[test]
fn a_singleton_runs_on_one_host_and_moves_when_that_host_dies() {
    let sb = Sandbox::new();
    sb.write_job(
        CONTINUOUS,
        "single",
        &[
            ("settings.job", r#"{"is_singleton": true}"#),
            ("run.sh", &sleeper("single")),
        ],
    );
    let mut a = TestHost::on(&sb, Some("a"));
    let mut b = TestHost::on(&sb, Some("b"));
    // One after the other, so `a` is the holder; hosts started together are
    // `hosts_started_together_on_a_fresh_logs_folder_all_run`.
    a.start();
    let first = sb.wait_pids("single.pids", 1)[0];
    sb.wait_for("host a to run the singleton", DEADLINE, || {
        let st = sb.read_status("single");
        st["status"] == "Running" && st["instance"] == "a"
    });
    b.start();
    sb.wait_status_file("single", "status-b.json", "InactiveInstance");
    assert_eq!(
        sb.read_pids("single.pids"),
        vec![first],
        "exactly one process runs the singleton"
    );
    assert!(pid_alive(first));
    let st = sb.read_status("single");
    assert_eq!(st["pid"].as_i64(), Some(i64::from(first)), "{st:#}");
    assert_eq!(
        st["instance"], "a",
        "only the holder writes status.json: {st:#}"
    );
    assert!(
        !sb.log_dir("single").join("job_log-a.txt").exists()
            && !sb.log_dir("single").join("job_log-b.txt").exists(),
        "a singleton's log is job_log.txt, written by the holder only"
    );

    a.kill9();
    sb.wait_dead("the dead holder's run", first);
    let second = sb.wait_pids("single.pids", 2)[1];
    sb.wait_for("host b to run the singleton", DEADLINE, || {
        let st = sb.read_status("single");
        st["status"] == "Running"
            && st["instance"] == "b"
            && st["pid"].as_i64() == Some(i64::from(second))
    });
    assert!(pid_alive(second));
    assert_eq!(
        sb.read_pids("single.pids").len(),
        2,
        "one takeover, one run"
    );
    b.finish();
}

#[test]
fn instances_write_their_own_log_and_status_for_ordinary_jobs() {
    let sb = Sandbox::new();
    sb.write_job(
        CONTINUOUS,
        "everywhere",
        &[(
            "run.sh",
            "#!/bin/bash\necho $$ >> \"$TEST_STATE/everywhere.pids\"\necho \"hello\"\nexec sleep 100000\n",
        )],
    );
    let mut a = TestHost::on(&sb, Some("a"));
    let mut b = TestHost::on(&sb, Some("b"));
    a.start();
    sb.wait_status_file("everywhere", "status-a.json", "Running");
    b.start();
    let pids = sb.wait_pids("everywhere.pids", 2);
    for i in ["a", "b"] {
        let log = format!("job_log-{i}.txt");
        let text = sb.wait_log_file("everywhere", &log, "INFO] hello\n");
        let lines = parse_log(text.as_bytes());
        let started = started_pids(&lines);
        assert_eq!(started.len(), 1, "{log}: {lines:#?}");
        assert!(pids.contains(&started[0]));
        let st = sb.wait_status_file("everywhere", &format!("status-{i}.json"), "Running");
        assert_eq!(st["pid"].as_i64(), Some(i64::from(started[0])), "{st:#}");
        assert_eq!(st["instance"], i, "{st:#}");
        assert!(sb.host_log_path(Some(i)).is_file(), "host-{i}.log");
    }
    assert!(!sb.log_dir("everywhere").join("job_log.txt").exists());
    assert!(!sb.log_dir("everywhere").join("status.json").exists());
    assert!(!sb.host_log_path(None).exists(), "no unnamed host.log");
    let sa = a.stop();
    let sbs = b.stop();
    assert_eq!((sa.code(), sbs.code()), (Some(0), Some(0)));
    sb.wait_no_leftovers();
}

/// Hosts sharing LOGS are typically started together (a deploy restarts them all).
/// None may fail because another is half-way through creating a shared file.
#[test]
fn hosts_started_together_on_a_fresh_logs_folder_all_run() {
    const HOSTS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
    for round in 0..10 {
        let sb = Sandbox::new();
        sb.write_job(
            CONTINUOUS,
            "everywhere",
            &[("run.sh", &sleeper("everywhere"))],
        );
        let mut hosts: Vec<TestHost> = HOSTS.iter().map(|i| TestHost::on(&sb, Some(i))).collect();
        for h in &mut hosts {
            h.start();
        }
        sb.wait_for(
            &format!("round {round}: every host to run the job, or one to exit"),
            DEADLINE,
            || {
                let exited = hosts.iter_mut().any(|h| h.exited().is_some());
                exited || sb.read_pids("everywhere.pids").len() == HOSTS.len()
            },
        );
        for h in &mut hosts {
            let name = h.instance.clone().unwrap();
            if let Some(status) = h.exited() {
                panic!(
                    "round {round}: host {name} exited ({}) while starting together with others:\n{}",
                    describe(&status),
                    sb.dump()
                );
            }
        }
        for h in &mut hosts {
            let status = h.stop();
            assert_eq!(status.code(), Some(0), "{}", describe(&status));
        }
        sb.wait_no_leftovers();
    }
}
