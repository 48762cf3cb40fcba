//! Tests' own PostgreSQL databases: each test creates a fresh database on the server
//! named by `JOBHOST_TEST_POSTGRES` (default `postgres://root@127.0.0.1:5432/test`)
//! and drops it when done, even when the test fails. Where no server answers, the
//! test says so in one line and passes, unless `JOBHOST_REQUIRE_POSTGRES=1` (as in
//! `.ci/run`) makes that a failure.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use postgres::{Client, NoTls};

const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// The server the tests use.
pub fn base_url() -> String {
    std::env::var("JOBHOST_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail.split_once('?').map(|(_, q)| q);
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

fn admin(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(NoTls)
}

/// A database of its own for one test; dropped (with any connection still in it)
/// when this is.
pub struct TestDb {
    pub url: String,
    base: String,
    name: String,
}

impl TestDb {
    /// A raw connection to the test's database, for what the code under test must
    /// not be able to do (tamper with the schema, kill a backend).
    pub fn raw(&self) -> Client {
        admin(&self.url).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = admin(&self.base) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh database, or `None` (after one line saying why) when no server answers
/// and none is required.
pub fn fresh() -> Option<TestDb> {
    let base = base_url();
    let mut client = match admin(&base) {
        Ok(c) => c,
        Err(e) => {
            let at = super::pg::redact(&base);
            if std::env::var("JOBHOST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "JOBHOST_REQUIRE_POSTGRES=1 but cannot connect to {at} ({}): start PostgreSQL or set JOBHOST_TEST_POSTGRES",
                    super::pg::describe(&e)
                );
            }
            eprintln!(
                "postgres tests skipped: cannot connect to {at} ({}); .ci/run makes them mandatory",
                super::pg::describe(&e)
            );
            return None;
        }
    };
    let name = format!("jobhost_test_{}", crate::ids::random_hex(8));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    Some(TestDb {
        url: with_database(&base, &name),
        base,
        name,
    })
}

/// Polls `cond` until it holds; the deadline only bounds a hang.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
