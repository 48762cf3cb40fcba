//! Checks on every request before the token is looked at, and headers on every
//! response: what a browser needs from a server that holds a credential it caches.
//!
//! - **Host.** The `Host` header is echoed into `Location` and into every URL of the
//!   JSON, and a browser tricked by DNS rebinding sends its attacker's name there.
//!   When the API listens on loopback only loopback names with the bound port are
//!   accepted (a rebound name never matches); elsewhere the header must at least be
//!   a well-formed `host[:port]`, so nothing odd is echoed. A request without one
//!   gets the bound address (HTTP/1.0 clients send none).
//! - **Cross-site writes.** A browser with cached Basic credentials sends them with a
//!   cross-origin "simple" POST (a form, `text/plain`) without asking anyone, so a
//!   page elsewhere could run or stop jobs. Browsers say where a request comes from
//!   (`Sec-Fetch-Site`, `Origin`); a write whose origin is not this server is
//!   refused. Clients that send neither header (curl, the CLI, Kudu's clients) are
//!   not browsers and are unaffected.
//! - **Stalled bodies.** A request body that pauses longer than the client timeout
//!   fails the request (and frees its connection), as slow headers do.
//! - **Framing and sniffing.** No response may be framed (clickjacking of the
//!   dashboard's buttons) or content-sniffed (a log shown as HTML).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::ApiState;

/// Sent on every response.
pub const FRAME_POLICY: &str = "frame-ancestors 'none'";

pub async fn check_request(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let bound = st.0.bound;
    let host = match req.headers().get(header::HOST) {
        None => {
            let fallback = default_host(bound);
            if let Ok(v) = HeaderValue::from_str(&fallback) {
                req.headers_mut().insert(header::HOST, v);
            }
            fallback
        }
        Some(v) => match v.to_str().ok().map(|h| check_host(h, bound)) {
            Some(Ok(())) => v.to_str().unwrap_or_default().to_string(),
            Some(Err(why)) => return refuse(StatusCode::BAD_REQUEST, why),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the Host header is not text: send the address of this server".into(),
                );
            }
        },
    };
    if is_write(req.method())
        && let Err(why) = check_origin(
            header_str(&req, "sec-fetch-site"),
            header_str(&req, "origin"),
            &host,
        )
    {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    if has_body(&req) {
        let (parts, body) = req.into_parts();
        req = Request::from_parts(
            parts,
            limit_body_pauses(body, super::server::client_timeout()),
        );
    }
    let mut resp = next.run(req).await;
    add_security_headers(&mut resp);
    resp
}

fn has_body(req: &Request) -> bool {
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The body, failing when no piece of it arrives for `idle`: a client that sends
/// headers and then stops would otherwise hold its connection (and a handler) for
/// ever.
fn limit_body_pauses(body: Body, idle: Duration) -> Body {
    let stream = futures_util::stream::unfold(Some(body.into_data_stream()), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(s))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body paused for more than {} ms",
                        idle.as_millis()
                    ),
                )),
                None,
            )),
        }
    });
    Body::from_stream(stream)
}

fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Writes are what a cross-site request must not do; reads cannot be seen by the
/// other site (no CORS headers are ever sent).
fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut resp = (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response();
    add_security_headers(&mut resp);
    resp
}

/// The three headers, set on every response (a handler's own stricter
/// `Content-Security-Policy` is kept).
pub fn add_security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(FRAME_POLICY),
        );
    }
}

/// The address clients reach when they send no Host: the bound one (loopback for
/// an unspecified address, as in `LOGS/.jobhost-url`).
pub fn default_host(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

/// `Ok` when `host` may be echoed back as this server's address.
pub fn check_host(host: &str, bound: SocketAddr) -> Result<(), String> {
    let shown: String = host
        .chars()
        .flat_map(char::escape_default)
        .take(100)
        .collect();
    let Some((name, port)) = split_host(host) else {
        return Err(format!(
            "the Host header `{shown}` is not a valid host[:port]: send the address of this server"
        ));
    };
    if !bound.ip().is_loopback() {
        return Ok(());
    }
    let port_ok = port.unwrap_or(80) == bound.port();
    let name_ok = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if name_ok && port_ok {
        return Ok(());
    }
    Err(format!(
        "the Host header `{shown}` is not this server: it listens on {bound} (loopback), so only localhost, 127.x.x.x or [::1] with port {} are accepted (a name that resolves here from elsewhere is refused on purpose)",
        bound.port()
    ))
}

/// `host[:port]` as the URL grammar has it: a name of letters, digits, `.`, `-`, `_`,
/// an IPv4 address, or a bracketed IPv6 address; a port of digits up to 65535.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (n, rest) = host.split_at(end + 1);
        let inner = &n[1..n.len() - 1];
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        match rest {
            "" => (n, None),
            r => (n, Some(r.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if !name.starts_with('[')
        && (name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((name, port))
}

/// `Ok` when a write may go ahead: the browser says it comes from this server, or
/// the client is not a browser (neither header).
pub fn check_origin(
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    host: &str,
) -> Result<(), String> {
    const FIX: &str = "the API takes writes only from its own dashboard or from clients that are not browsers (curl, the jobhost CLI)";
    if let Some(site) = sec_fetch_site {
        let site = site.trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(format!(
                "cross-site request refused (Sec-Fetch-Site: {}): {FIX}",
                site.escape_default()
            ));
        }
    }
    if let Some(origin) = origin
        && !same_origin(origin.trim(), host)
    {
        // `Origin: null` (sandboxed frames, file: pages, some redirects) is an origin
        // nobody can vouch for: refused like any other.
        return Err(format!(
            "cross-origin request refused (Origin: {} is not http://{}): {FIX}",
            origin.escape_default(),
            host.escape_default()
        ));
    }
    Ok(())
}

/// `origin` is this server's address: `http://HOST` (or `https://`, for the
/// dashboard behind a TLS proxy that keeps the Host), ports 80/443 implied.
fn same_origin(origin: &str, host: &str) -> bool {
    let (rest, default_port) = if let Some(r) = strip_prefix_ci(origin, "http://") {
        (r, ":80")
    } else if let Some(r) = strip_prefix_ci(origin, "https://") {
        (r, ":443")
    } else {
        return false;
    };
    let norm = |s: &str| -> String {
        let s = s.to_ascii_lowercase();
        s.strip_suffix(default_port)
            .map(str::to_string)
            .unwrap_or(s)
    };
    !rest.is_empty() && norm(rest) == norm(host)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn on_loopback_only_loopback_names_with_the_bound_port_pass() {
        let b = addr("127.0.0.1:7070");
        for ok in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LocalHost:7070",
            "127.1.2.3:7070",
            "[::1]:7070",
        ] {
            assert!(check_host(ok, b).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1:7071",
            "127.0.0.1",
            "evil.example:7070",
            "localhost.evil.example:7070",
            "10.0.0.1:7070",
            "[::2]:7070",
            "",
            "localhost:7070/x",
            "a b:7070",
            "user@localhost:7070",
            "localhost:70700",
            "localhost:",
            "\"localhost\":7070",
        ] {
            assert!(check_host(bad, b).is_err(), "{bad:?}");
        }
        assert!(check_host("localhost", addr("127.0.0.1:80")).is_ok());
    }

    #[test]
    fn elsewhere_any_well_formed_host_passes() {
        let b = addr("0.0.0.0:7070");
        for ok in [
            "jobs.example.com",
            "jobs.example.com:8080",
            "10.1.2.3:7070",
            "[fe80::1]:7070",
            "my_host",
        ] {
            assert!(check_host(ok, b).is_ok(), "{ok}");
        }
        for bad in [
            "a/b",
            "a b",
            "a@b",
            "a\"b",
            "a\tb",
            "[nothex]:1",
            "host:port",
            "host:99999",
            "",
        ] {
            assert!(check_host(bad, b).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_host_is_the_bound_address() {
        assert_eq!(default_host(addr("0.0.0.0:81")), "127.0.0.1:81");
        assert_eq!(default_host(addr("10.0.0.1:81")), "10.0.0.1:81");
    }

    #[test]
    fn cross_site_writes_are_refused_and_other_clients_pass() {
        let host = "127.0.0.1:7070";
        // curl, the CLI, Kudu clients: no browser headers.
        assert!(check_origin(None, None, host).is_ok());
        // The dashboard itself.
        assert!(check_origin(Some("same-origin"), Some("http://127.0.0.1:7070"), host).is_ok());
        assert!(check_origin(None, Some("HTTP://127.0.0.1:7070"), host).is_ok());
        // Typed into the address bar, bookmarks.
        assert!(check_origin(Some("none"), None, host).is_ok());
        assert!(check_origin(None, Some("http://localhost"), "localhost:80").is_ok());
        for (site, origin) in [
            (Some("cross-site"), None),
            (Some("same-site"), None),
            (None, Some("http://evil.example")),
            (None, Some("null")),
            (None, Some("http://127.0.0.1:7071")),
            (None, Some("http://127.0.0.1:7070.evil.example")),
            (None, Some("ftp://127.0.0.1:7070")),
            (Some("same-origin"), Some("http://evil.example")),
            (Some("cross-site"), Some("http://127.0.0.1:7070")),
        ] {
            assert!(
                check_origin(site, origin, host).is_err(),
                "{site:?} {origin:?}"
            );
        }
    }
}
