//! The entry-point rule of docs/jobs.md (entry point): which file in a job folder's root starts a
//! run, and with what program. `detect` is the pure rule over a listing; `resolve`
//! applies it to a real folder and checks what the rule needs (execute bit,
//! interpreter on PATH, readable script) so a bad job is reported before it runs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::spec::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `run` without extension, or `.exe`: the file itself.
    Binary,
    Bash,
    Python,
    Node,
    Php,
    Java,
    PowerShell,
    /// `.cmd`, `.bat`: recognised, so they take part in the rule, but unsupported.
    WindowsScript,
}

/// Extensions in the order of the table in docs/jobs.md, which is also the precedence among
/// `run.EXT` files. `run` without extension ranks before all of them.
const EXTENSIONS: [(&str, EntryKind); 9] = [
    ("exe", EntryKind::Binary),
    ("sh", EntryKind::Bash),
    ("py", EntryKind::Python),
    ("js", EntryKind::Node),
    ("php", EntryKind::Php),
    ("jar", EntryKind::Java),
    ("ps1", EntryKind::PowerShell),
    ("cmd", EntryKind::WindowsScript),
    ("bat", EntryKind::WindowsScript),
];

/// Table rank and kind of an entry candidate; `None` when the name is not one.
/// Matching ignores ASCII case (`RUN.SH`, `job.PY`) because job folders are often
/// copied from Windows, where Kudu reads them case-insensitively. Names starting with
/// `.` are editor and tool files, never entries.
fn classify(name: &str) -> Option<(usize, EntryKind, bool)> {
    if name.starts_with('.') {
        return None;
    }
    if name.eq_ignore_ascii_case("run") {
        return Some((0, EntryKind::Binary, true));
    }
    let (stem, ext) = name.rsplit_once('.')?;
    let rank = EXTENSIONS
        .iter()
        .position(|(known, _)| known.eq_ignore_ascii_case(ext))?;
    let (_, kind) = EXTENSIONS[rank];
    Some((rank + 1, kind, stem.eq_ignore_ascii_case("run")))
}

impl EntryKind {
    /// The kind of a file name with a known extension, or of the exact name `run`.
    pub fn from_file_name(name: &str) -> Option<EntryKind> {
        classify(name).map(|(_, kind, _)| kind)
    }

    /// The program looked up on PATH to start this kind; `None` for a binary and for
    /// Windows scripts.
    pub fn interpreter(self) -> Option<&'static str> {
        match self {
            EntryKind::Binary | EntryKind::WindowsScript => None,
            EntryKind::Bash => Some("bash"),
            EntryKind::Python => Some("python3"),
            EntryKind::Node => Some("node"),
            EntryKind::Php => Some("php"),
            EntryKind::Java => Some("java"),
            EntryKind::PowerShell => Some("pwsh"),
        }
    }

    /// Arguments between the interpreter and the entry file.
    fn interpreter_flags(self) -> &'static [&'static str] {
        match self {
            EntryKind::Java => &["-jar"],
            EntryKind::PowerShell => &["-NoProfile", "-File"],
            _ => &[],
        }
    }
}

/// Pure rule: given the names of the regular files in the job folder root, which one
/// is the entry point.
pub fn detect(names: &[String]) -> Option<String> {
    // A `run` file wins over any other, by table rank; otherwise byte order decides.
    // Byte order also breaks ties (`RUN.sh` vs `run.sh`) so the result never depends
    // on the order of the listing.
    names
        .iter()
        .filter_map(|name| {
            let (rank, _, is_run) = classify(name)?;
            Some((
                (!is_run, if is_run { rank } else { 0 }, name.as_bytes()),
                name,
            ))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name)| name.clone())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub kind: EntryKind,
    /// File name in the job root.
    pub entry: String,
    /// Absolute path of the interpreter, found on PATH.
    pub interpreter: Option<PathBuf>,
}

impl Launch {
    /// Program and argv prefix to start this entry from `run_dir` (the job folder or
    /// its private copy), which is also the run's working directory. Run arguments go
    /// after these.
    pub fn command(&self, run_dir: &Path) -> (PathBuf, Vec<OsString>) {
        let Some(name) = self.kind.interpreter() else {
            return (run_dir.join(&self.entry), Vec::new());
        };
        let program = self
            .interpreter
            .clone()
            .unwrap_or_else(|| PathBuf::from(name));
        let mut args: Vec<OsString> = self
            .kind
            .interpreter_flags()
            .iter()
            .map(OsString::from)
            .collect();
        // An interpreter would read `-x.py` as an option.
        if self.entry.starts_with('-') {
            args.push(OsString::from(format!("./{}", self.entry)));
        } else {
            args.push(OsString::from(&self.entry));
        }
        (program, args)
    }

    /// What a human reads, e.g. `python3 run.py` (Kudu's `run_command`).
    pub fn display(&self) -> String {
        match self.kind.interpreter() {
            None => self.entry.clone(),
            Some(name) => {
                let mut parts = vec![name];
                parts.extend(self.kind.interpreter_flags());
                parts.push(&self.entry);
                parts.join(" ")
            }
        }
    }
}

const KNOWN: &str = "run, run.exe, run.sh, run.py, run.js, run.php, run.jar, run.ps1";

/// Displayed as `PATH WHAT: FIX`; [`EntryError::problem`] keeps the three apart.
#[derive(Debug, thiserror::Error)]
#[error("{} {}: {}", self.file().display(), self.what(), self.fix())]
pub enum EntryError {
    NoEntry {
        dir: PathBuf,
    },
    Unsupported {
        path: PathBuf,
    },
    InterpreterMissing {
        interpreter: &'static str,
        path: PathBuf,
    },
    NotExecutable {
        path: PathBuf,
    },
    Unreadable {
        path: PathBuf,
        source: io::Error,
    },
    ListFailed {
        dir: PathBuf,
        source: io::Error,
    },
}

impl EntryError {
    /// The file or folder at fault.
    pub fn file(&self) -> &Path {
        match self {
            EntryError::NoEntry { dir } | EntryError::ListFailed { dir, .. } => dir,
            EntryError::Unsupported { path }
            | EntryError::InterpreterMissing { path, .. }
            | EntryError::NotExecutable { path }
            | EntryError::Unreadable { path, .. } => path,
        }
    }

    fn what(&self) -> String {
        match self {
            EntryError::NoEntry { .. } => "has no entry point".into(),
            EntryError::Unsupported { .. } => {
                "is a Windows script (.cmd/.bat), which cannot run on Linux".into()
            }
            EntryError::InterpreterMissing { interpreter, .. } => {
                format!("needs `{interpreter}`, which is not on PATH")
            }
            EntryError::NotExecutable { .. } => "is not executable".into(),
            EntryError::Unreadable { source, .. } => format!("could not be read: {source}"),
            EntryError::ListFailed { source, .. } => format!("could not be listed: {source}"),
        }
    }

    fn fix(&self) -> String {
        match self {
            EntryError::NoEntry { .. } => format!(
                "add an executable `run` or a script such as run.sh or run.py \
                 (known: {KNOWN}, or any file with one of those extensions)"
            ),
            EntryError::Unsupported { .. } => {
                "replace it with run.sh or another supported entry point".into()
            }
            EntryError::InterpreterMissing { .. } => "install it or change the entry point".into(),
            EntryError::NotExecutable { path } => format!(
                "run `chmod +x {}` or use a script entry such as run.sh",
                path.display()
            ),
            EntryError::Unreadable { .. } => "make the file readable (chmod a+r)".into(),
            EntryError::ListFailed { .. } => "check that it exists and is readable".into(),
        }
    }

    /// The structured form, for the API and `jobhost check`.
    pub fn problem(&self) -> Problem {
        Problem::whole_file(self.file(), self.what(), &self.fix())
    }
}

/// Regular files (and symlinks to them) in `dir`, not subfolders. Names that are not
/// UTF-8 are left out: the entry is passed on as a `String` (and to Kudu's JSON).
fn list_files(dir: &Path) -> Result<Vec<String>, EntryError> {
    let list_failed = |source| EntryError::ListFailed {
        dir: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(list_failed)? {
        let item = item.map_err(list_failed)?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        // `fs::metadata` follows symlinks; a dangling one is simply not a file.
        let is_file = match item.file_type() {
            Ok(t) if t.is_symlink() => fs::metadata(item.path()).is_ok_and(|m| m.is_file()),
            Ok(t) => t.is_file(),
            Err(_) => false,
        };
        if is_file {
            names.push(name);
        }
    }
    Ok(names)
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Searches `path_env` like `execvp` does, except that empty and relative entries are
/// skipped: runs start in the job folder, and a job must not be able to shadow its
/// own interpreter.
pub fn find_on_path(program: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    let path_env = path_env?;
    std::env::split_paths(path_env)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

/// Lists the job folder root, applies `detect`, then checks that the entry can start.
pub fn resolve(job_dir: &Path, path_env: Option<&OsStr>) -> Result<Launch, EntryError> {
    let names = list_files(job_dir)?;
    let entry = detect(&names).ok_or_else(|| EntryError::NoEntry {
        dir: job_dir.to_path_buf(),
    })?;
    let path = job_dir.join(&entry);
    // `detect` only returns classified names.
    let kind = EntryKind::from_file_name(&entry).ok_or_else(|| EntryError::NoEntry {
        dir: job_dir.to_path_buf(),
    })?;
    let interpreter = match (kind, kind.interpreter()) {
        (EntryKind::WindowsScript, _) => return Err(EntryError::Unsupported { path }),
        (_, None) => {
            if !is_executable_file(&path) {
                return Err(EntryError::NotExecutable { path });
            }
            None
        }
        (_, Some(name)) => {
            let found =
                find_on_path(name, path_env).ok_or_else(|| EntryError::InterpreterMissing {
                    interpreter: name,
                    path: path.clone(),
                })?;
            // The interpreter opens the script as the same user; opening it here
            // reports a permission problem as the job's error instead of as a
            // cryptic failed run.
            fs::File::open(&path).map_err(|source| EntryError::Unreadable {
                path: path.clone(),
                source,
            })?;
            Some(found)
        }
    };
    Ok(Launch {
        kind,
        entry,
        interpreter,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detect_table() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["settings.job", "disable.job"], None),
            (&["README.md", "data.csv", "runner"], None),
            (&["run"], Some("run")),
            (&["run", "run.sh", "run.exe"], Some("run")),
            (&["run.sh", "run.exe"], Some("run.exe")),
            (&["run.py", "run.sh"], Some("run.sh")),
            (&["run.js", "run.py"], Some("run.py")),
            (&["run.php", "run.js"], Some("run.js")),
            (&["run.jar", "run.php"], Some("run.php")),
            (&["run.ps1", "run.jar"], Some("run.jar")),
            (&["run.cmd", "run.ps1"], Some("run.ps1")),
            (&["run.bat", "run.cmd"], Some("run.cmd")),
            (&["run.bat"], Some("run.bat")),
            // A `run` file beats an earlier name with a known extension.
            (&["a.sh", "run.py"], Some("run.py")),
            (&["a.sh", "run.cmd"], Some("run.cmd")),
            // No `run`: the first name in byte order with a known extension.
            (&["b.py", "a.sh"], Some("a.sh")),
            (&["z.sh", "B.py", "a.js"], Some("B.py")),
            (&["notes.txt", "job.php", "settings.job"], Some("job.php")),
            (&["x.bat", "y.sh"], Some("x.bat")),
            // Not entries: unknown extension, `run` with an unknown one, hidden files.
            (&["run.txt", "run.sh.bak", "main.rb"], None),
            (&["run.txt", "main.sh"], Some("main.sh")),
            (&[".run.py", "tool.py"], Some("tool.py")),
            (&[".sh"], None),
            (&["runner.sh", "a.py"], Some("a.py")),
            // Case-insensitive, with byte order deciding between equals.
            (&["RUN.SH", "a.py"], Some("RUN.SH")),
            (&["run.sh", "RUN.sh"], Some("RUN.sh")),
            (&["Main.PY"], Some("Main.PY")),
            (&["RUN"], Some("RUN")),
        ];
        for (list, want) in cases {
            let got = detect(&names(list));
            assert_eq!(got.as_deref(), *want, "{list:?}");
            // The rule does not depend on the listing order.
            let mut reversed = names(list);
            reversed.reverse();
            assert_eq!(detect(&reversed).as_deref(), *want, "{list:?} reversed");
        }
    }

    #[test]
    fn kinds_and_interpreters() {
        let cases = [
            ("run", Some(EntryKind::Binary), None),
            ("x.exe", Some(EntryKind::Binary), None),
            ("x.sh", Some(EntryKind::Bash), Some("bash")),
            ("x.py", Some(EntryKind::Python), Some("python3")),
            ("x.js", Some(EntryKind::Node), Some("node")),
            ("x.php", Some(EntryKind::Php), Some("php")),
            ("x.jar", Some(EntryKind::Java), Some("java")),
            ("x.ps1", Some(EntryKind::PowerShell), Some("pwsh")),
            ("x.cmd", Some(EntryKind::WindowsScript), None),
            ("x.bat", Some(EntryKind::WindowsScript), None),
            ("x", None, None),
            ("settings.job", None, None),
        ];
        for (name, kind, interp) in cases {
            assert_eq!(EntryKind::from_file_name(name), kind, "{name}");
            assert_eq!(kind.and_then(|k| k.interpreter()), interp, "{name}");
        }
    }

    fn launch(kind: EntryKind, entry: &str, interp: Option<&str>) -> Launch {
        Launch {
            kind,
            entry: entry.to_string(),
            interpreter: interp.map(PathBuf::from),
        }
    }

    #[test]
    fn commands_and_display() {
        let dir = Path::new("/srv/jobs/triggered/etl");
        let cases: &[(Launch, &str, &[&str], &str)] = &[
            (
                launch(EntryKind::Binary, "run", None),
                "/srv/jobs/triggered/etl/run",
                &[],
                "run",
            ),
            (
                launch(EntryKind::Binary, "tool.exe", None),
                "/srv/jobs/triggered/etl/tool.exe",
                &[],
                "tool.exe",
            ),
            (
                launch(EntryKind::Python, "run.py", Some("/usr/bin/python3")),
                "/usr/bin/python3",
                &["run.py"],
                "python3 run.py",
            ),
            (
                launch(EntryKind::Bash, "-x.sh", Some("/bin/bash")),
                "/bin/bash",
                &["./-x.sh"],
                "bash -x.sh",
            ),
            (
                launch(EntryKind::Java, "app.jar", Some("/usr/bin/java")),
                "/usr/bin/java",
                &["-jar", "app.jar"],
                "java -jar app.jar",
            ),
            (
                launch(EntryKind::PowerShell, "run.ps1", Some("/opt/pwsh")),
                "/opt/pwsh",
                &["-NoProfile", "-File", "run.ps1"],
                "pwsh -NoProfile -File run.ps1",
            ),
            (
                launch(EntryKind::Node, "index.js", None),
                "node",
                &["index.js"],
                "node index.js",
            ),
        ];
        for (l, program, args, shown) in cases {
            let (p, a) = l.command(dir);
            assert_eq!(p, PathBuf::from(program), "{l:?}");
            let want: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert_eq!(a, want, "{l:?}");
            assert_eq!(l.display(), *shown);
        }
    }

    /// A PATH holding only the given fake interpreters (executable empty files).
    fn fake_path(programs: &[&str]) -> tempfile::TempDir {
        let bin = tempfile::tempdir().unwrap();
        for program in programs {
            let p = bin.path().join(program);
            fs::write(&p, "").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        bin
    }

    fn write(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn resolve_script_finds_interpreter_on_path() {
        let job = tempfile::tempdir().unwrap();
        let bin = fake_path(&["python3"]);
        write(job.path(), "run.py", 0o644);
        write(job.path(), "settings.job", 0o644);
        // Relative and empty PATH entries are never searched.
        let path_env =
            std::env::join_paths(["", "relative", bin.path().to_str().unwrap()]).unwrap();
        let l = resolve(job.path(), Some(&path_env)).unwrap();
        assert_eq!(l.kind, EntryKind::Python);
        assert_eq!(l.entry, "run.py");
        assert_eq!(l.interpreter, Some(bin.path().join("python3")));
    }

    #[test]
    fn resolve_interpreter_missing() {
        let job = tempfile::tempdir().unwrap();
        let bin = fake_path(&["bash"]);
        write(job.path(), "run.py", 0o644);
        let err = resolve(job.path(), Some(bin.path().as_os_str())).unwrap_err();
        assert!(matches!(
            err,
            EntryError::InterpreterMissing {
                interpreter: "python3",
                ..
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("run.py needs `python3`, which is not on PATH"),
            "{msg}"
        );
        assert!(matches!(
            resolve(job.path(), None),
            Err(EntryError::InterpreterMissing { .. })
        ));
    }

    #[test]
    fn resolve_interpreter_without_exec_bit_is_not_found() {
        let job = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        write(bin.path(), "node", 0o644);
        write(job.path(), "run.js", 0o644);
        let err = resolve(job.path(), Some(bin.path().as_os_str())).unwrap_err();
        assert!(
            matches!(err, EntryError::InterpreterMissing { .. }),
            "{err}"
        );
    }

    #[test]
    fn resolve_binary_needs_exec_bit() {
        let job = tempfile::tempdir().unwrap();
        let run = write(job.path(), "run", 0o644);
        let err = resolve(job.path(), None).unwrap_err();
        assert!(matches!(err, EntryError::NotExecutable { .. }));
        assert!(err.to_string().contains("chmod +x"), "{err}");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        let l = resolve(job.path(), None).unwrap();
        assert_eq!(
            (l.kind, l.entry.as_str(), l.interpreter),
            (EntryKind::Binary, "run", None)
        );
    }

    #[test]
    fn resolve_no_entry() {
        let job = tempfile::tempdir().unwrap();
        write(job.path(), "settings.job", 0o644);
        write(job.path(), "notes.txt", 0o644);
        // Entries in subfolders do not count, nor do folders named like entries.
        fs::create_dir(job.path().join("lib")).unwrap();
        write(&job.path().join("lib"), "run.sh", 0o755);
        fs::create_dir(job.path().join("run.py")).unwrap();
        let err = resolve(job.path(), None).unwrap_err();
        assert!(matches!(err, EntryError::NoEntry { .. }), "{err}");
        assert!(err.to_string().contains("has no entry point"), "{err}");
    }

    #[test]
    fn resolve_windows_script_is_unsupported() {
        let job = tempfile::tempdir().unwrap();
        write(job.path(), "run.cmd", 0o755);
        write(job.path(), "other.sh", 0o755);
        let err = resolve(job.path(), None).unwrap_err();
        assert!(matches!(err, EntryError::Unsupported { .. }), "{err}");
        assert!(
            err.to_string().contains("run.cmd is a Windows script"),
            "{err}"
        );
    }

    #[test]
    fn resolve_follows_symlinks_to_files_only() {
        let job = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let bin = fake_path(&["bash"]);
        let target = write(elsewhere.path(), "real.sh", 0o644);
        symlink(&target, job.path().join("run.sh")).unwrap();
        symlink(job.path().join("missing"), job.path().join("a.py")).unwrap();
        let l = resolve(job.path(), Some(bin.path().as_os_str())).unwrap();
        assert_eq!(l.entry, "run.sh");
        fs::remove_file(job.path().join("run.sh")).unwrap();
        let err = resolve(job.path(), Some(bin.path().as_os_str())).unwrap_err();
        assert!(matches!(err, EntryError::NoEntry { .. }), "{err}");
    }

    #[test]
    fn resolve_unreadable_script() {
        let job = tempfile::tempdir().unwrap();
        let bin = fake_path(&["bash"]);
        let script = write(job.path(), "run.sh", 0o000);
        let result = resolve(job.path(), Some(bin.path().as_os_str()));
        // Root reads any file whatever its mode, so the check only means something
        // when the file really is unreadable to us.
        if fs::read(&script).is_ok() {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let err = result.unwrap_err();
            assert!(matches!(err, EntryError::Unreadable { .. }), "{err}");
            assert!(err.to_string().contains("chmod a+r"), "{err}");
        }
    }

    #[test]
    fn resolve_missing_folder() {
        let job = tempfile::tempdir().unwrap();
        let err = resolve(&job.path().join("gone"), None).unwrap_err();
        assert!(matches!(err, EntryError::ListFailed { .. }), "{err}");
    }
}
