//! Several hosts on one shared JOBS and LOGS (SPEC 5b): singletons run on exactly one
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
    a.start();
    b.start();

    let first = sb.wait_pids("single.pids", 1)[0];
    let mut holder = String::new();
    sb.wait_for(
        "one host Running the singleton, the other InactiveInstance",
        DEADLINE,
        || {
            let st = sb.read_status("single");
            if st["status"] != "Running" {
                return false;
            }
            holder = st["instance"].as_str().unwrap_or_default().to_string();
            let other = if holder == "a" { "b" } else { "a" };
            (holder == "a" || holder == "b")
                && sb.read_status_file("single", &format!("status-{other}.json"))["status"]
                    == "InactiveInstance"
        },
    );
    assert_eq!(
        sb.read_pids("single.pids"),
        vec![first],
        "exactly one process runs the singleton"
    );
    assert!(pid_alive(first));
    assert_eq!(
        sb.read_status("single")["pid"].as_i64(),
        Some(i64::from(first))
    );
    assert!(
        !sb.log_dir("single").join("job_log-a.txt").exists()
            && !sb.log_dir("single").join("job_log-b.txt").exists(),
        "a singleton's log is job_log.txt, written by the holder only"
    );

    let (dying, survivor) = if holder == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let survivor_name = survivor.instance.clone().unwrap();
    dying.kill9();
    sb.wait_dead("the dead holder's run", first);
    let second = sb.wait_pids("single.pids", 2)[1];
    sb.wait_for("the surviving host to run the singleton", DEADLINE, || {
        let st = sb.read_status("single");
        st["status"] == "Running"
            && st["instance"] == survivor_name.as_str()
            && st["pid"].as_i64() == Some(i64::from(second))
    });
    assert!(pid_alive(second));
    survivor.finish();
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
