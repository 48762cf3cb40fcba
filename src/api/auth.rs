//! Token auth: `Authorization: Bearer TOKEN`, or Basic with the token as password
//! (what Kudu clients send). Compared in constant time. `/api/health` is open, for
//! load balancers and container health checks, and so are the dashboard's page and
//! script, which hold no data: the page asks for the token in a form, keeps it for
//! the tab and sends it as Bearer.
//!
//! A refusal challenges with `Bearer` only, never `Basic`: a Basic challenge makes
//! a browser prompt and then cache the credentials and replay them on every request
//! to this origin, which is the ambient credential that cross-site requests ride on.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::ApiState;

pub async fn require_token(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_from_header);
    let ok = presented.is_some_and(|t| t.as_bytes().ct_eq(st.0.token.as_bytes()).into());
    if ok {
        return next.run(req).await;
    }
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "message": "missing or wrong token: send `Authorization: Bearer TOKEN` (the token is in LOGS/.jobhost-token or JOBHOST_TOKEN)"
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(CHALLENGE),
    );
    resp
}

/// What answers without the token: health, and the dashboard's assets (no data).
pub const OPEN_PATHS: &[&str] = &["/api/health", "/", "/dashboard.js"];

/// The only challenge sent: browsers do not prompt for it, so never cache a credential.
pub const CHALLENGE: &str = "Bearer realm=\"jobhost\"";

/// The token in a Bearer or Basic header value.
pub fn token_from_header(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.trim().to_string()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (_, password) = text.split_once(':')?;
            Some(password.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_headers() {
        assert_eq!(token_from_header("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_from_header("bearer  abc ").as_deref(), Some("abc"));
        // "user:abc"
        assert_eq!(
            token_from_header("Basic dXNlcjphYmM=").as_deref(),
            Some("abc")
        );
        assert_eq!(token_from_header("Basic !!!"), None);
        assert_eq!(token_from_header("Digest abc"), None);
        assert_eq!(token_from_header("abc"), None);
    }
}
