//! What the cluster tests share: a PostgreSQL database of each test's own (dropped at
//! the end), skipped in one line when no server answers unless
//! `JOBHOST_REQUIRE_POSTGRES=1`; and the API of a host started with `--instance`.

use std::io::Write;

use crate::support::client::{Api, http_client};
use crate::support::{DEADLINE, TestHost};

/// A database of its own, dropped (connections and all) at the end.
pub struct TestDb {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDb {
    /// A connection of the test's own, for what no host would do (a row by hand).
    pub fn raw(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub fn test_db(test: &str) -> Option<TestDb> {
    let admin = std::env::var("JOBHOST_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let mut client = match postgres::Client::connect(&admin, postgres::NoTls) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("JOBHOST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "JOBHOST_REQUIRE_POSTGRES=1 but PostgreSQL cannot be reached at {admin}: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "cluster test {test} skipped: cannot connect to PostgreSQL ({e}); .ci/run makes it mandatory"
            );
            return None;
        }
    };
    let name = format!("jobhost_it_{}_{}", std::process::id(), rand_suffix());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("creating the test database");
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("JOBHOST_TEST_POSTGRES has no database part: {admin}"),
    };
    Some(TestDb { admin, name, url })
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher, RandomState};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// The API of the host `h` started as `--instance name`, once it answers.
pub fn connect_instance(h: &TestHost, name: &str) -> Api {
    let url_file = h.logs.join(format!(".jobhost-url-{name}"));
    h.wait_for("the host's URL file", DEADLINE, || {
        std::fs::read_to_string(&url_file).is_ok_and(|u| !u.trim().is_empty())
            && h.logs.join(".jobhost-token").exists()
    });
    let api = Api {
        base: std::fs::read_to_string(&url_file)
            .unwrap()
            .trim()
            .to_string(),
        token: std::fs::read_to_string(h.logs.join(".jobhost-token"))
            .unwrap()
            .trim()
            .to_string(),
        http: http_client(),
    };
    api.wait_code(h, "/api/health", 200);
    api
}
