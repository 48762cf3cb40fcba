//! Deploys and inputs that must not hurt the host (issue 9, "Security" and
//! "Limits"): zips whose links chain out of the job folder, uploads past the limit,
//! zips nested deeper than a run can copy, file names that are paths, a single
//! `settings.job` deploy, empty or oversized settings, and NUL bytes in arguments.
//! Every refusal is checked for what it left alone: a sentinel folder beside JOBS,
//! the job deployed before, and the staging area.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::client::*;
use crate::support::*;

/// The most a deploy body may be (`deploy::MAX_UPLOAD`).
const MAX_UPLOAD: usize = 64 * 1024 * 1024;
/// The most a settings.job may be (`settings::MAX_FILE_BYTES`).
const MAX_SETTINGS: usize = 64 * 1024;
/// How deep a run's private copy goes (`runner::copy::MAX_DEPTH`).
const MAX_DEPTH: usize = 64;

// ----- zips and trees ----------------------------------------------------------------

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn zip_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for e in entries {
        let opts = zip::write::SimpleFileOptions::default();
        match e {
            E::File(name, data) => {
                let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
                w.start_file(*name, opts.unix_permissions(mode)).unwrap();
                w.write_all(data).unwrap();
            }
            E::Dir(name) => w.add_directory(*name, opts).unwrap(),
            E::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
        }
    }
    w.finish().unwrap().into_inner()
}

/// A folder beside JOBS holding one file: what an escaping zip would write into.
fn sentinel(h: &TestHost) -> PathBuf {
    let dir = h.root.join("sentinel");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("keep.txt"), "untouched").unwrap();
    dir
}

// ----- links -------------------------------------------------------------------------

#[test]
fn zip_with_a_chain_of_symlinks_cannot_write_outside_the_job_folder() {
    let mut h = TestHost::new();
    h.write_job(TRIGGERED, "keep", &[("run.sh", QUICK_JOB)]);
    let sentinel = sentinel(&h);
    let inside_sentinel = sentinel.strip_prefix("/").unwrap().display().to_string();
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/keep", 200);

    // Each link alone reads as inside the job; followed by the kernel one after the
    // other they lead out of it.
    let two = zip_of(&[
        E::File("run.sh", b"echo two"),
        E::Link("l1", "a/b/l2/.."),
        E::Link("a/b/l2", "../.."),
        E::File("l1/E.txt", b"escaped"),
    ]);
    // `d/m0 -> ..`, `d/m1 -> m0/..`, ... `d/m11 -> m10/..`: eleven folders above the
    // job, which is `/` from the staging folder; then the sentinel's absolute path.
    let names: Vec<String> = (0..12).map(|i| format!("d/m{i}")).collect();
    let targets: Vec<String> = (0..12)
        .map(|i| match i {
            0 => "..".to_string(),
            _ => format!("m{}/..", i - 1),
        })
        .collect();
    let deep_file = format!("d/m11/{inside_sentinel}/E.txt");
    let mut entries = vec![E::File("run.sh", b"echo twelve")];
    for (n, t) in names.iter().zip(&targets) {
        entries.push(E::Link(n, t));
    }
    entries.push(E::File(&deep_file, b"escaped"));
    let twelve = zip_of(&entries);
    let abs_target = sentinel.display().to_string();
    let absolute = zip_of(&[
        E::File("run.sh", b"echo abs"),
        E::Link("out", &abs_target),
        E::File("out/E.txt", b"escaped"),
    ]);
    let up = zip_of(&[
        E::File("run.sh", b"echo up"),
        E::Link("up", ".."),
        E::File("up/E.txt", b"escaped"),
    ]);
    let under_inside_link = zip_of(&[
        E::File("run.sh", b"echo under"),
        E::Dir("sub/"),
        E::Link("l", "sub"),
        E::File("l/x.txt", b"through a link"),
    ]);
    let cases: [(&str, &Vec<u8>, &str); 5] = [
        ("a 2-link chain", &two, "l1"),
        ("a 12-link chain", &twelve, "d/m"),
        ("an absolute link", &absolute, "out"),
        ("a link to ..", &up, "up"),
        ("a file under a link", &under_inside_link, "l/x.txt"),
    ];

    let jobs_before = tree(&h.jobs);
    let sentinel_before = tree(&sentinel);
    for (what, zip, entry) in cases {
        for name in ["keep", "fresh"] {
            let path = format!("/api/triggeredwebjobs/{name}");
            let (code, body) = api.put_zip(&path, zip.clone());
            assert_eq!(code, 400, "PUT {path} with {what}: {body:#}");
            let msg = message(&body);
            assert!(
                msg.contains(&format!("`{entry}")),
                "the answer to {what} names the entry `{entry}`: {msg}"
            );
            assert!(msg.contains("nothing was written"), "{msg}");
            assert_eq!(
                tree(&sentinel),
                sentinel_before,
                "{what} wrote outside JOBS"
            );
            assert_eq!(tree(&h.jobs), jobs_before, "{what} changed JOBS");
        }
    }
    assert!(!h.root.join("E.txt").exists() && !h.jobs.join("E.txt").exists());
    assert_eq!(
        fs::read_to_string(h.job_dir(TRIGGERED, "keep").join("run.sh")).unwrap(),
        QUICK_JOB,
        "the job deployed before is unchanged"
    );

    // A zip with links that stay inside, chained, still deploys and runs.
    let good = zip_of(&[
        E::Dir("v2/"),
        E::File("v2/run.sh", b"#!/bin/bash\necho \"from v2\"\n"),
        E::Link("current", "v2"),
        E::Link("run.sh", "current/run.sh"),
    ]);
    let (code, body) = api.put_zip("/api/triggeredwebjobs/linked", good);
    assert_eq!(code, 201, "a zip with links inside the job: {body:#}");
    let dir = h.job_dir(TRIGGERED, "linked");
    assert_eq!(fs::read_link(dir.join("current")).unwrap(), Path::new("v2"));
    assert_eq!(
        fs::read_to_string(dir.join("run.sh")).unwrap(),
        "#!/bin/bash\necho \"from v2\"\n"
    );
    api.assert_code("/api/triggeredwebjobs/linked", 200);
    let (code, body) = api.call(api.req(Method::POST, "/api/triggeredwebjobs/linked/run"));
    assert_eq!(code, 202, "{body:#}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = api.wait_run_end(&h, "linked", &id);
    assert_eq!(run["status"], "Success", "{run:#}");
    assert_no_staging_leftovers(&h);
    h.finish();
}

#[test]
fn zip_nested_deeper_than_a_run_can_copy_is_refused_at_deploy() {
    let (mut h, api) = host_with_triggered("deep", QUICK_JOB);
    let folders = |n: usize| (0..n).map(|i| format!("d{i}/")).collect::<String>();
    let too_deep = format!("{}data.txt", folders(MAX_DEPTH + 1));
    let before = tree(&h.jobs);
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/deep",
        zip_of(&[E::File("run.sh", b"echo new"), E::File(&too_deep, b"x")]),
    );
    assert_eq!(code, 400, "{body:#}");
    assert!(
        message(&body).contains(&format!("at most {MAX_DEPTH} folders deep")),
        "{body:#}"
    );
    assert_eq!(tree(&h.jobs), before);

    // `..` and absolute entry names stay refused, even a `..` that stays inside.
    for bad in ["../x.txt", "/x.txt", "a/../x.txt"] {
        let (code, body) = api.put_zip(
            "/api/triggeredwebjobs/deep",
            zip_of(&[E::File("run.sh", b"echo new"), E::File(bad, b"x")]),
        );
        assert_eq!(code, 400, "{bad}: {body:#}");
        assert!(message(&body).contains(bad), "{bad}: {body:#}");
        assert_eq!(tree(&h.jobs), before);
    }

    // As deep as a run can copy: deploys and runs.
    let deepest = format!("{}data.txt", folders(MAX_DEPTH));
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/deep",
        zip_of(&[
            E::File("run.sh", QUICK_JOB.as_bytes()),
            E::File(&deepest, b"x"),
        ]),
    );
    assert_eq!(code, 200, "{body:#}");
    h.finish();
}

// ----- uploads past the limit --------------------------------------------------------

/// Sends a request head (and then `body_len` bytes of body, chunked, from another
/// thread, ignoring write errors: the server may stop reading) and returns the
/// status line and headers the server answered.
fn raw_upload(api: &Api, head: &str, chunked_len: usize) -> String {
    let mut s = TcpStream::connect(api.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let writer = (chunked_len > 0).then(|| {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'z'; 1 << 20];
            let mut sent = 0;
            while sent < chunked_len {
                let n = chunk.len().min(chunked_len - sent);
                let frame = format!("{n:x}\r\n");
                if w.write_all(frame.as_bytes()).is_err()
                    || w.write_all(&chunk[..n]).is_err()
                    || w.write_all(b"\r\n").is_err()
                {
                    return;
                }
                sent += n;
            }
            let _ = w.write_all(b"0\r\n\r\n");
        })
    });
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the end of the head is enough; a reset after it does not matter.
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    if let Some(w) = writer {
        let _ = w.join();
    }
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn a_deploy_larger_than_the_upload_limit_is_413_and_leaves_no_temp_file() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let jobs_before = tree(&h.jobs);

    // Declared too large: refused before a byte of body is sent.
    let head = format!(
        "PUT /api/triggeredwebjobs/big HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/zip\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        api.addr(),
        api.token,
        MAX_UPLOAD + 1
    );
    let answer = raw_upload(&api, &head, 0);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(tree(&h.jobs), jobs_before);

    // Streamed without a length: counted as it comes, refused past the limit.
    let head = format!(
        "PUT /api/triggeredwebjobs/big HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/zip\r\nTransfer-Encoding: chunked\r\n\r\n",
        api.addr(),
        api.token,
    );
    let answer = raw_upload(&api, &head, MAX_UPLOAD + (2 << 20));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_no_staging_leftovers(&h);
    assert_eq!(tree(&h.jobs), jobs_before);

    // A normal one, a few MiB, works.
    let data = vec![b'd'; 3 << 20];
    let (code, body) = api.put_zip(
        "/api/triggeredwebjobs/normal",
        zip_of(&[
            E::File("run.sh", QUICK_JOB.as_bytes()),
            E::File("data.bin", &data),
        ]),
    );
    assert_eq!(code, 201, "{body:#}");
    assert_eq!(
        fs::metadata(h.job_dir(TRIGGERED, "normal").join("data.bin"))
            .unwrap()
            .len(),
        3 << 20
    );
    assert_no_staging_leftovers(&h);
    h.finish();
}

// ----- file names ----------------------------------------------------------------------

#[test]
fn content_disposition_file_names_that_are_paths_are_refused() {
    let mut h = TestHost::start_new();
    let api = connect(&h);
    let before = tree(&h.jobs);
    for disposition in [
        "attachment; filename*=UTF-8''..%2Fx",
        "attachment; filename*=UTF-8''x%2F..",
        "attachment; filename*=UTF-8''..",
        "attachment; filename*=UTF-8''a%00b.sh",
        "attachment; filename*=UTF-8''.hidden.sh",
        "attachment; filename=\"../x\"",
        "attachment; filename=\"..\"",
        "attachment; filename=\"sub/run.sh\"",
        "attachment; filename=.hidden.sh",
    ] {
        let (code, body) =
            api.put_disposition("/api/triggeredwebjobs/named", disposition, b"echo hi\n");
        assert_eq!(code, 400, "{disposition}: {body:#}");
        assert!(
            message(&body).contains("Content-Disposition"),
            "{disposition}: {body:#}"
        );
        assert_eq!(tree(&h.jobs), before, "{disposition} wrote something");
    }
    // Decoded names that are plain file names are fine.
    let (code, body) = api.put_disposition(
        "/api/triggeredwebjobs/named",
        "attachment; filename*=UTF-8''run%2Esh",
        QUICK_JOB.as_bytes(),
    );
    assert_eq!(code, 201, "{body:#}");
    assert_eq!(
        fs::read_to_string(h.job_dir(TRIGGERED, "named").join("run.sh")).unwrap(),
        QUICK_JOB
    );
    h.finish();
}

// ----- settings --------------------------------------------------------------------------

#[test]
fn a_single_file_deploy_named_settings_job_updates_only_the_settings() {
    let (mut h, api) = host_with_triggered("conf", QUICK_JOB);
    let dir = h.job_dir(TRIGGERED, "conf");
    let disposition = "attachment; filename=settings.job";

    let good = br#"{"env": {"COLOR": "blue"}}"#;
    let (code, body) = api.put_disposition("/api/triggeredwebjobs/conf", disposition, good);
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(fs::read(dir.join("settings.job")).unwrap(), good);
    assert_eq!(
        fs::read_to_string(dir.join("run.sh")).unwrap(),
        QUICK_JOB,
        "the job's script is still there"
    );
    assert_eq!(body["settings"], json!({"env": {"COLOR": "blue"}}));

    // A bad one: 400 naming the key, the file untouched.
    let (code, body) = api.put_disposition(
        "/api/triggeredwebjobs/conf",
        disposition,
        br#"{"timeout": -1}"#,
    );
    assert_eq!(code, 400, "{body:#}");
    assert!(message(&body).contains("timeout"), "{body:#}");
    assert_eq!(fs::read(dir.join("settings.job")).unwrap(), good);
    assert!(dir.join("run.sh").is_file());

    // No such job: 404 saying what to do; nothing is created.
    let (code, body) = api.put_disposition("/api/triggeredwebjobs/nojob", disposition, good);
    assert_eq!(code, 404, "{body:#}");
    assert!(
        message(&body).contains("deploy a script or zip first"),
        "{body:#}"
    );
    assert!(!h.job_dir(TRIGGERED, "nojob").exists());
    assert_no_staging_leftovers(&h);
    h.finish();
}

#[test]
fn an_empty_settings_put_is_refused_and_the_file_stays() {
    let mut h = TestHost::new();
    let original = "{\"env\": {\"COLOR\": \"red\"}}\n";
    h.write_job(
        TRIGGERED,
        "conf",
        &[("run.sh", QUICK_JOB), ("settings.job", original)],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/conf", 200);
    let file = h.job_dir(TRIGGERED, "conf").join("settings.job");
    let path = "/api/triggeredwebjobs/conf/settings";
    for empty in [&b""[..], b"  \n", b"\xEF\xBB\xBF"] {
        let (code, body) = api.put_settings(path, empty);
        assert_eq!(code, 400, "{empty:?}: {body:#}");
        assert!(message(&body).contains("empty"), "{body:#}");
        assert_eq!(fs::read_to_string(&file).unwrap(), original);
    }
    // Over 64 KiB: 413, the file stays.
    let mut big = b"{\"env\": {\"X\": \"".to_vec();
    big.resize(MAX_SETTINGS + 1 - 3, b'x');
    big.extend_from_slice(b"\"}}");
    assert_eq!(big.len(), MAX_SETTINGS + 1);
    let (code, body) = api.put_settings(path, &big);
    assert_eq!(code, 413, "{body:#}");
    assert!(message(&body).contains("65536"), "{body:#}");
    assert_eq!(fs::read_to_string(&file).unwrap(), original);
    // `{}` is how to reset.
    let (code, body) = api.put_settings(path, b"{}");
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "{}");
    h.finish();
}

#[test]
fn a_settings_job_over_64_kib_is_the_jobs_error_and_is_not_echoed() {
    let mut h = TestHost::new();
    let mut big = String::from("{\"env\": {\"X\": \"");
    big.push_str(&"x".repeat(100_000));
    big.push_str("\"}}");
    h.write_job(
        TRIGGERED,
        "huge",
        &[("run.sh", QUICK_JOB), ("settings.job", &big)],
    );
    let size = big.len();
    let want = format!("is {size} bytes; the limit is 65536; shorten it");

    // `jobhost check` says so and fails.
    let (code, out) = run_cli(&["check".into(), "--jobs".into(), h.jobs.clone().into()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&want), "{out}");

    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/huge", 200);
    let (_, job) = api.get_json("/api/triggeredwebjobs/huge");
    assert!(
        job["error"].as_str().unwrap_or_default().contains(&want),
        "{job:#}"
    );
    assert_eq!(job["settings"], json!({}), "the file is not echoed");
    let (code, settings) = api.get_json("/api/triggeredwebjobs/huge/settings");
    assert_eq!((code, settings), (200, json!({})));
    let (_, all) = api.get_json("/api/webjobs");
    assert!(all.to_string().len() < 10_000, "{}", all.to_string().len());
    h.finish();
}

// ----- arguments ---------------------------------------------------------------------------

#[test]
fn a_nul_in_arguments_is_a_400_and_nothing_starts() {
    let mut h = TestHost::new();
    h.write_job(
        TRIGGERED,
        "args",
        &[(
            "run.sh",
            "#!/bin/bash\necho started >> \"$TEST_STATE/args.runs\"\n",
        )],
    );
    h.start();
    let api = connect(&h);
    api.wait_code(&h, "/api/triggeredwebjobs/args", 200);
    let (code, body) = api.call(api.req(
        Method::POST,
        "/api/triggeredwebjobs/args/run?arguments=a%00b",
    ));
    assert_eq!(code, 400, "{body:#}");
    assert!(message(&body).contains("NUL"), "{body:#}");
    let (code, body) = api.call(
        api.req(Method::POST, "/api/triggeredwebjobs/args/run")
            .header("Content-Type", "application/json")
            .body(r#"{"arguments": ["ok", "a\u0000b"]}"#),
    );
    assert_eq!(code, 400, "{body:#}");
    assert!(message(&body).contains("argument 2"), "{body:#}");
    let (code, history) = api.get_json("/api/triggeredwebjobs/args/history");
    assert_eq!(code, 200);
    assert_eq!(history["runs"], json!([]), "nothing was started");
    assert!(!h.state_exists("args.runs"));
    h.finish();
}
