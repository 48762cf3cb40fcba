//! What the cluster tests share: a PostgreSQL database of each test's own (dropped at
//! the end), skipped in one line when no server answers unless
//! `JOBHOST_REQUIRE_POSTGRES=1`; the API of a host started with `--instance`; and a
//! loopback proxy in front of PostgreSQL that cuts and restores the connections of the
//! hosts behind it (one host: a partition; every host: an outage of the store).

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

/// A loopback TCP proxy in front of PostgreSQL: `cut` closes every connection and
/// refuses new ones (a partition of the hosts behind it), `restore` lets them in.
pub struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (c, list, target) = (cut.clone(), conns.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for s in [&client, &server] {
                    list.lock().unwrap().push(s.try_clone().unwrap());
                }
                // Cut while this one was being connected: `cut` may have shut the
                // listed ones before these were listed.
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, conns }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by this proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (auth, path) = rest.split_once('/').unwrap();
        let user = auth
            .split_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{}/{path}", self.port)
    }
}
