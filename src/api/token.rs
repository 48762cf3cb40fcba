//! The API token: `JOBHOST_TOKEN`, else `LOGS/.jobhost-token`, generated on first
//! start from the operating system's CSPRNG so the CLI on this machine can read it.
//!
//! The token file is a secret that the host reads at start from a folder other users
//! may be able to write into, so it is trusted only when it is what the host itself
//! would have made: a regular file (never a link: one could point at another secret,
//! and a dangling one used to make the host retry creating it until its stack
//! overflowed), owned by the host's user, readable and writable by nobody else.
//! Anything else stops the host at start with the file and the fix named.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::layout::TOKEN_FILE;

/// Shortest token accepted from `JOBHOST_TOKEN`: guessing 16 bytes over the network
/// is out of reach even for a poor choice of characters; fewer invites it.
pub const MIN_TOKEN_LEN: usize = 16;

/// Random bytes in a generated token (256 bits; 64 hex characters).
const TOKEN_BYTES: usize = 32;

/// A token file larger than this is not one the host wrote.
const MAX_FILE_LEN: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "reading API token {path}: {source}; remove the file (a new token is generated at start) or set JOBHOST_TOKEN"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "writing API token {path}: {source}; make the logs folder writable or set JOBHOST_TOKEN"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "API token file {path} is empty: delete it (a new one is generated) or set JOBHOST_TOKEN"
    )]
    Empty { path: PathBuf },
    #[error(
        "API token file {path} is a symbolic link{target}: the host does not follow links for its token; remove the link (a new token is generated at start) or set JOBHOST_TOKEN"
    )]
    Symlink { path: PathBuf, target: String },
    #[error(
        "API token file {path} is not a regular file (it is {kind}): remove it (a new token is generated at start) or set JOBHOST_TOKEN"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "API token file {path} belongs to uid {owner}, not to this host's user (uid {uid}): remove it (a new token is generated at start), chown it to uid {uid}, or set JOBHOST_TOKEN"
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "API token file {path} has mode {mode:03o}: group or others may read or write it; remove it so a new token is generated (others may have read this one) or `chmod 600 {path}`, or set JOBHOST_TOKEN"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "API token file {path} is {len} bytes long, more than a token: remove it (a new token is generated at start) or set JOBHOST_TOKEN"
    )]
    TooLarge { path: PathBuf, len: u64 },
    #[error(
        "JOBHOST_TOKEN is {len} bytes long: use at least {MIN_TOKEN_LEN} (for example `openssl rand -hex 32`), or unset it to use a generated token"
    )]
    TooShort { len: usize },
    #[error(
        "getting random bytes for the API token from the operating system: {0}; set JOBHOST_TOKEN"
    )]
    Random(std::io::Error),
}

/// `JOBHOST_TOKEN` when set and not blank: it wins over the file.
fn env_token() -> Option<String> {
    std::env::var("JOBHOST_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
}

/// Where [`load_or_create_token`] takes the token from, for the host's start-up line
/// (never the token itself).
pub fn token_origin(logs: &Path) -> String {
    if env_token().is_some() {
        return "from JOBHOST_TOKEN".to_string();
    }
    let path = logs.join(TOKEN_FILE);
    let path = std::path::absolute(&path).unwrap_or(path);
    format!("in {}", path.display())
}

/// The token: `JOBHOST_TOKEN`, else `LOGS/.jobhost-token`, generated (mode 0600) on
/// first start.
pub fn load_or_create_token(logs: &Path) -> Result<String, TokenError> {
    if let Some(t) = env_token() {
        return from_env(&t);
    }
    let path = logs.join(TOKEN_FILE);
    if let Some(token) = read_token_file(&path)? {
        return Ok(token);
    }
    let token = crate::ids::secret_hex(TOKEN_BYTES).map_err(TokenError::Random)?;
    // Written whole under a temporary name, then linked into place: hosts starting
    // together on one LOGS never read a half-written token, and `link` fails rather
    // than replace a token another host published.
    let tmp = logs.join(format!("{TOKEN_FILE}.{}.tmp", crate::ids::random_hex(8)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        linked
    };
    match write() {
        Ok(()) => Ok(token),
        // Something appeared at the path since we looked: another host sharing LOGS
        // published its token (use it), or anything else (refused as above). Read
        // once, not again and again: a path that keeps failing is an error.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_token_file(&path)? {
            Some(token) => Ok(token),
            None => Err(TokenError::Write { path, source: e }),
        },
        Err(source) => Err(TokenError::Write { path, source }),
    }
}

/// A token from `JOBHOST_TOKEN`, trimmed, long enough.
fn from_env(value: &str) -> Result<String, TokenError> {
    let t = value.trim();
    if t.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort { len: t.len() });
    }
    Ok(t.to_string())
}

/// The token in `path`, `None` when there is no file, an error for a file the host
/// must not trust.
fn read_token_file(path: &Path) -> Result<Option<String>, TokenError> {
    let read_err = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Looked at without following links: the file, not what it may point to.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    check_kind(path, &meta)?;
    // O_NOFOLLOW: a link swapped in since the look above is refused by the kernel
    // (ELOOP) rather than followed; O_NONBLOCK: a FIFO swapped in does not hang the
    // start. The checks are repeated on what was actually opened.
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(TokenError::Symlink {
                path: path.to_path_buf(),
                target: String::new(),
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    let meta = f.metadata().map_err(read_err)?;
    check_kind(path, &meta)?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(TokenError::WrongOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(TokenError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(read_err)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(t.to_string()))
}

/// Refuses anything but a regular file (links included, dangling or not).
fn check_kind(path: &Path, meta: &std::fs::Metadata) -> Result<(), TokenError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        return Err(TokenError::Symlink {
            path: path.to_path_buf(),
            target,
        });
    }
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "a folder"
        } else if ft.is_fifo() {
            "a named pipe"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(TokenError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_mode(p: &Path, text: &str, mode: u32) {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_generated_token_is_64_hex_chars_in_a_private_file_and_is_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let t = load_or_create_token(tmp.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        let meta = std::fs::metadata(tmp.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), t);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_token(other.path()).unwrap(), t);
    }

    #[test]
    fn a_dangling_symlink_token_file_is_refused_not_recursed_on() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(TOKEN_FILE);
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &p).unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err();
        assert!(matches!(e, TokenError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        // The link is left alone: the user decides.
        assert!(std::fs::symlink_metadata(&p).unwrap().is_symlink());
    }

    #[test]
    fn a_symlink_to_a_good_private_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        write_mode(&real, "0123456789abcdef0123", 0o600);
        std::os::unix::fs::symlink(&real, tmp.path().join(TOKEN_FILE)).unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err();
        assert!(matches!(e, TokenError::Symlink { .. }), "{e}");
    }

    #[test]
    fn a_folder_or_a_fifo_as_token_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(TOKEN_FILE)).unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err();
        assert!(matches!(e, TokenError::NotRegular { .. }), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &tmp.path().join(TOKEN_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err();
        assert!(matches!(e, TokenError::NotRegular { .. }), "{e}");
    }

    #[test]
    fn a_token_file_others_can_read_or_write_is_refused() {
        for mode in [0o644, 0o640, 0o602, 0o620] {
            let tmp = tempfile::tempdir().unwrap();
            write_mode(&tmp.path().join(TOKEN_FILE), "0123456789abcdef0123", mode);
            let e = load_or_create_token(tmp.path()).unwrap_err();
            assert!(matches!(e, TokenError::TooOpen { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let tmp = tempfile::tempdir().unwrap();
        write_mode(
            &tmp.path().join(TOKEN_FILE),
            "0123456789abcdef0123\n",
            0o400,
        );
        assert_eq!(
            load_or_create_token(tmp.path()).unwrap(),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn a_token_file_of_another_user_is_refused() {
        // Only root can give a file away; elsewhere this case cannot be set up.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(TOKEN_FILE);
        write_mode(&p, "0123456789abcdef0123", 0o600);
        std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err();
        assert!(
            matches!(e, TokenError::WrongOwner { owner: 4242, .. }),
            "{e}"
        );
    }

    #[test]
    fn short_env_tokens_are_refused() {
        let e = from_env(" 0123456789abcde ").unwrap_err();
        assert!(e.to_string().contains("JOBHOST_TOKEN"), "{e}");
        assert!(e.to_string().contains("16"), "{e}");
        assert_eq!(from_env("0123456789abcdef\n").unwrap(), "0123456789abcdef");
    }
}
