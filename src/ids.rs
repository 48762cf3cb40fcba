//! Identifiers: host ids, run tokens and the 6-hex run ids of log lines.
//!
//! Ids only need to be unlikely to repeat, not unpredictable, so std's randomly
//! seeded hasher is their source. Secrets (the API token) must be unpredictable:
//! `secret_hex` takes them from the operating system's CSPRNG instead.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `n` lowercase hex characters (n <= 16).
pub fn random_hex(n: usize) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    let s = format!("{:016x}", h.finish());
    s[..n.min(16)].to_string()
}

/// `bytes` bytes from the operating system's CSPRNG (`getrandom(2)`), as
/// `2 * bytes` lowercase hex characters. For secrets; ids use `random_hex`.
pub fn secret_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_the_asked_length_and_differ() {
        let a = random_hex(6);
        let b = random_hex(6);
        assert_eq!(a.len(), 6);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_are_hex_of_twice_the_bytes_and_differ() {
        let a = secret_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, secret_hex(32).unwrap());
    }
}
