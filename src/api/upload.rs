//! Receiving a deploy over HTTP: the file name a `Content-Disposition` header gives,
//! the request body streamed into the registry's staging folder (counted against the
//! limit as it comes), a small body (settings) in memory, and the status code each
//! [`DeployError`] answers with. Building and swapping in the job is the registry's
//! (`supervisor::deploy`).

use axum::body::{Body, Bytes};
use axum::http::StatusCode;

use crate::supervisor::deploy::{DeployError, Staging, check_file_name, io};

impl DeployError {
    /// The HTTP status this error answers with: bad input is a 400, a body over a
    /// limit a 413, a failure of ours a 500.
    pub fn status(&self) -> StatusCode {
        match self {
            DeployError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            DeployError::UploadTooLarge { .. } | DeployError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The file name a `Content-Disposition` header value gives, decoded: `filename*`
/// (RFC 5987, `UTF-8''name%20encoded`) wins over `filename` (RFC 6266). A name that
/// is there but is not a plain file name is an error, so it can never become a path.
pub fn disposition_file_name(value: &str) -> Result<Option<String>, DeployError> {
    let (mut plain, mut extended) = (None, None);
    for (key, val) in disposition_params(value) {
        if key.eq_ignore_ascii_case("filename*") {
            extended = Some(decode_ext_value(&val)?);
        } else if key.eq_ignore_ascii_case("filename") {
            plain = Some(val);
        }
    }
    let name = extended.or(plain);
    if let Some(n) = &name {
        check_file_name(n)?;
    }
    Ok(name)
}

/// `key=value` parameters of a header value, `value` unquoted (a quoted string may
/// hold `;` and backslash escapes).
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(semi) = rest.find(';') {
        rest = &rest[semi + 1..];
        let Some(eq) = rest.find('=') else { break };
        if rest[..eq].contains(';') {
            continue;
        }
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let (val, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => val.push(c),
                }
            }
            (val, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, val));
        rest = tail;
    }
    out
}

/// An RFC 5987 `ext-value`: `charset'language'percent-encoded`.
fn decode_ext_value(v: &str) -> Result<String, DeployError> {
    let mut parts = v.splitn(3, '\'');
    let (Some(charset), Some(_lang), Some(encoded)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(DeployError::BadDisposition(format!(
            "`{v}` is not charset'language'name"
        )));
    };
    if !charset.eq_ignore_ascii_case("utf-8") {
        return Err(DeployError::BadDisposition(format!(
            "the charset `{charset}` is not supported"
        )));
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    String::from_utf8(bytes)
        .map_err(|_| DeployError::BadDisposition(format!("`{encoded}` does not decode to UTF-8")))
}

/// Streams a request body into the staging folder's `upload` file, counting it
/// against `limit` as it comes (a `Content-Length` is a claim; the bytes are not).
/// Returns the number of bytes received.
pub async fn receive(staging: &Staging, body: Body, limit: u64) -> Result<u64, DeployError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let path = staging.upload();
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(io("writing", &path))?;
    // Each write of a tokio file is a trip to a blocking thread: batch the body's
    // small chunks into large writes.
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DeployError::BodyCut(e.to_string()))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(DeployError::UploadTooLarge { limit });
        }
        out.write_all(&chunk).await.map_err(io("writing", &path))?;
    }
    // Flushing also waits for the tokio file's last write in flight, so the file is
    // whole before anyone reads it.
    out.flush().await.map_err(io("writing", &path))?;
    Ok(total)
}

/// A small body (settings) in memory, refused past `limit` bytes.
pub async fn collect_capped(
    body: Body,
    limit: u64,
    what: &'static str,
) -> Result<Bytes, DeployError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DeployError::BodyCut(e.to_string()))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(DeployError::BodyTooLarge { what, limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn content_disposition_file_names_are_decoded_then_checked() {
        let ok: &[(&str, &str)] = &[
            ("attachment; filename=\"run.sh\"", "run.sh"),
            ("attachment; filename=run.sh", "run.sh"),
            ("attachment; filename=\"a;b.sh\"", "a;b.sh"),
            ("attachment; filename*=UTF-8''r%C3%BCn.sh", "rün.sh"),
            (
                "attachment; filename=\"fallback.sh\"; filename*=utf-8'en'real.sh",
                "real.sh",
            ),
        ];
        for (header, want) in ok {
            assert_eq!(
                disposition_file_name(header).unwrap().as_deref(),
                Some(*want),
                "{header}"
            );
        }
        assert_eq!(disposition_file_name("attachment").unwrap(), None);
        for bad in [
            "attachment; filename*=UTF-8''..%2Fx",
            "attachment; filename*=UTF-8''a%2Fb",
            "attachment; filename*=UTF-8''..",
            "attachment; filename*=UTF-8''a%00b",
            "attachment; filename*=UTF-8''%2Ehidden",
            "attachment; filename*=UTF-8''%FF",
            "attachment; filename*=ISO-8859-1''x",
            "attachment; filename*=noquotes",
            "attachment; filename=\"../x\"",
            "attachment; filename=..",
            "attachment; filename=\"a/b\"",
            "attachment; filename=.",
        ] {
            let err = disposition_file_name(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_is_refused_and_its_file_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("triggered/t");
        let staging = Staging::new(&job).unwrap();
        let got = receive(&staging, Body::from(vec![7u8; 1000]), 1000)
            .await
            .unwrap();
        assert_eq!(got, 1000);
        assert_eq!(fs::read(staging.upload()).unwrap().len(), 1000);
        let err = receive(&staging, Body::from(vec![7u8; 1001]), 1000)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        drop(staging);
        let left: Vec<_> = fs::read_dir(tmp.path().join("triggered"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let err = collect_capped(Body::from(vec![1u8; 11]), 10, "settings")
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
