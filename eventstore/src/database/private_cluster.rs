//! The private cluster: a PostgreSQL server the ledger runs itself from the
//! installed server binaries when no server answers.
//!
//! Its superuser can disable the event store's append-only triggers and run
//! programs as the server's account (`COPY ... TO PROGRAM`), so the cluster
//! must be reachable by its owner only. Its directory holds:
//! - `pgdata/`: the data directory;
//! - `password`: the superuser's generated password (mode 0600), the only
//!   way in besides being the owner; `pg_hba.conf` asks every connection
//!   for it (`scram-sha-256`, no `trust` line);
//! - `.s.PGSQL.5432`: the server's unix socket (mode 0700; no TCP at all);
//! - `lock`: locked (`flock`) by whoever initialises or starts the cluster,
//!   so processes starting at once wait for each other instead of racing;
//! - `postgres.log`: the server's log.
//!
//! The directory is mode 0700 and owned by the account the server runs as:
//! the current user, or the `postgres` system user when running as root
//! (PostgreSQL refuses to run as root). A directory, cluster or password
//! file that does not meet this is refused with what to do, never repaired
//! nor deleted: it may hold someone's data, or belong to someone else.

use super::ResolveError;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The cluster's superuser, the role the ledger connects as.
const SUPERUSER: &str = "ledger";

/// The system account that runs the cluster when the ledger runs as root.
const SYSTEM_USER: &str = "postgres";

/// Unix socket paths are limited to 107 bytes (`sun_path` less its NUL).
const SOCKET_PATH_MAX: usize = 107;

const SOCKET_FILE: &str = ".s.PGSQL.5432";
const DATA_DIR: &str = "pgdata";
const PASSWORD_FILE: &str = "password";
const LOCK_FILE: &str = "lock";
const LOG_FILE: &str = "postgres.log";

/// Random bytes in a generated password (hex-encoded, so URL-safe as is).
const PASSWORD_BYTES: usize = 32;

/// How long a starter waits for another one to finish initialising and
/// starting the cluster: initdb, then `pg_ctl start -w` (which gives up
/// after 60 s by itself).
const LOCK_WAIT_MAX: Duration = Duration::from_secs(180);

/// How often a waiting starter tries the lock again.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// The account the cluster's files belong to and its server runs as.
struct Owner {
    uid: u32,
    gid: u32,
    name: String,
    /// Whether commands switch to this account (the ledger runs as root).
    switch_user: bool,
}

impl Owner {
    fn of_this_process() -> Result<Self, String> {
        if is_root() {
            let (uid, gid) = user_ids(SYSTEM_USER).ok_or_else(|| {
                format!("running as root needs a `{SYSTEM_USER}` system user to own the cluster")
            })?;
            return Ok(Self {
                uid,
                gid,
                name: SYSTEM_USER.to_string(),
                switch_user: true,
            });
        }
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Self {
            uid,
            gid,
            name: user_name(uid).unwrap_or_else(|| uid.to_string()),
            switch_user: false,
        })
    }

    /// Gives `path` to this account (needed only when running as root).
    fn take(&self, path: &Path) -> Result<(), String> {
        if !self.switch_user {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|error| format!("cannot give {} to {}: {error}", path.display(), self.name))
    }

    /// A command running `program` from `bin_dir` as this account, in `dir`.
    fn command(&self, bin_dir: &Path, program: &str, dir: &Path) -> Command {
        let binary = bin_dir.join(program);
        let mut command = if self.switch_user {
            let mut command = Command::new("runuser");
            command.args(["-u", &self.name, "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        command.current_dir(dir);
        command
    }
}

/// Paths inside a cluster's directory.
struct Layout {
    dir: PathBuf,
    /// `dir` as text, for the server's options and the URL.
    dir_text: String,
}

impl Layout {
    fn new(dir: &Path) -> Result<Self, String> {
        let dir_text = dir.to_str().ok_or("path is not UTF-8")?.to_string();
        if !dir.is_absolute() {
            return Err("path must be absolute".into());
        }
        if dir_text.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            return Err("path must not contain spaces or quotes".into());
        }
        if dir_text.len() + 1 + SOCKET_FILE.len() > SOCKET_PATH_MAX {
            return Err("path is too long for a unix socket".into());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            dir_text,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join(PASSWORD_FILE)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }
}

/// Initialises (once) and starts (unless running) a private cluster in `dir`,
/// listening only on a unix socket there, after checking it is reachable by
/// its owner only. Safe to call from several processes or threads at once.
/// Returns its URL, which holds the password: print it only through
/// [`super::redact`].
pub fn start_private_cluster(bin_dir: &Path, dir: &Path) -> Result<String, ResolveError> {
    let fail = |reason: String| ResolveError::PrivateCluster {
        dir: dir.display().to_string(),
        reason,
    };
    let refuse = |problem: String| ResolveError::UnsafePrivateCluster {
        dir: dir.display().to_string(),
        problem,
    };
    let layout = Layout::new(dir).map_err(fail)?;
    let owner = Owner::of_this_process().map_err(fail)?;
    create_directory(&layout.dir, &owner).map_err(fail)?;
    check_directory(&layout.dir, &owner).map_err(refuse)?;
    let _lock = ClusterLock::acquire(&layout.dir, &owner).map_err(fail)?;
    if layout.data_dir().join("PG_VERSION").is_file() {
        check_authentication(&layout, &owner).map_err(refuse)?;
    } else {
        initialise(bin_dir, &layout, &owner).map_err(fail)?;
    }
    let password = read_password(&layout).map_err(refuse)?;
    ensure_running(bin_dir, &layout, &owner).map_err(fail)?;
    check_socket(&layout, &owner).map_err(refuse)?;
    Ok(format!(
        "postgres:///{}?host={}&user={SUPERUSER}&password={}",
        super::DEFAULT_DATABASE_NAME,
        layout.dir_text,
        percent_encode(&password)
    ))
}

/// Stops a private cluster started by [`start_private_cluster`].
pub fn stop_private_cluster(bin_dir: &Path, dir: &Path) -> std::io::Result<bool> {
    let owner = Owner::of_this_process().map_err(std::io::Error::other)?;
    let output = owner
        .command(bin_dir, "pg_ctl", dir)
        .args(["stop", "-m", "fast", "-D"])
        .arg(dir.join(DATA_DIR))
        .output()?;
    Ok(output.status.success())
}

/// The directory holding `initdb` and `pg_ctl`: from `PATH` first, then the
/// newest version under `/usr/lib/postgresql`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| has_tools(dir)) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Creates `dir` unless it exists. It is built under another name, with its
/// mode, owner and lock file, and renamed into place, so no other starter
/// ever sees it half made (and refuses it for a wrong owner meanwhile).
fn create_directory(dir: &Path, owner: &Owner) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err("path has no parent directory".into());
    };
    std::fs::create_dir_all(parent)
        .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        random_hex(8)?
    ));
    DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|error| format!("cannot create {}: {error}", staging.display()))?;
    let built = prepare_directory(&staging, owner).and_then(|()| {
        std::fs::rename(&staging, dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))
    });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        // Another starter renamed its own into place first: use that one.
        if std::fs::symlink_metadata(dir).is_ok() {
            return Ok(());
        }
    }
    built
}

fn prepare_directory(dir: &Path, owner: &Owner) -> Result<(), String> {
    // The process umask may have taken bits off the mode asked for.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| format!("cannot set the mode of {}: {error}", dir.display()))?;
    drop(open_lock_file(dir, owner)?);
    owner.take(dir)
}

/// Refuses a directory other accounts could reach or control.
fn check_directory(dir: &Path, owner: &Owner) -> Result<(), String> {
    let metadata = std::fs::symlink_metadata(dir)
        .map_err(|error| format!("cannot inspect the directory: {error}"))?;
    if !metadata.is_dir() {
        return Err(
            "it is not a directory (a symbolic link or a file); the cluster needs a directory \
             of its own"
                .into(),
        );
    }
    if metadata.uid() != owner.uid {
        return Err(format!(
            "the directory is owned by uid {}, not by {} (uid {}), the account the cluster \
             runs as, so another account controls it. If it holds your cluster, give it to {} \
             (`chown -R {} {}`); otherwise move it away",
            metadata.uid(),
            owner.name,
            owner.uid,
            owner.name,
            owner.name,
            dir.display()
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode != 0o700 {
        return Err(format!(
            "the directory has mode {mode:04o}, but it must be 0700 so that no other local \
             account can reach the cluster's socket and files. Run `chmod 700 {}`",
            dir.display()
        ));
    }
    Ok(())
}

/// Refuses an existing cluster that lets a connection in without the
/// password: one created with trust authentication (as earlier versions of
/// the ledger did), or whose password file others could read.
fn check_authentication(layout: &Layout, owner: &Owner) -> Result<(), String> {
    let password_file = layout.password_file();
    let data_dir = layout.data_dir();
    let metadata = match std::fs::symlink_metadata(&password_file) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "its cluster was created with trust authentication (there is no password file \
                 {}), so any local account that reaches it connects as its superuser. Recreate \
                 it: stop it (`pg_ctl -D {} stop`, as {}), keep a dump of what you need \
                 (`pg_dumpall`), move {} away, and start the ledger again, which creates a \
                 password-protected cluster",
                password_file.display(),
                data_dir.display(),
                owner.name,
                layout.dir.display()
            ));
        }
        Err(error) => {
            return Err(format!(
                "cannot inspect {}: {error}",
                password_file.display()
            ))
        }
    };
    check_password_file(&password_file, &metadata, owner)?;
    let hba = data_dir.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba)
        .map_err(|error| format!("cannot read {}: {error}", hba.display()))?;
    if has_trust_rule(&rules) {
        return Err(format!(
            "{} lets connections in without a password (a `trust` line), so any local account \
             that reaches the socket connects as the superuser. Replace `trust` with \
             `scram-sha-256` there and restart the cluster (`pg_ctl -D {} restart`, as {}), or \
             recreate it (stop it, keep a dump, move {} away, start the ledger again)",
            hba.display(),
            data_dir.display(),
            owner.name,
            layout.dir.display()
        ));
    }
    Ok(())
}

fn check_password_file(
    path: &Path,
    metadata: &std::fs::Metadata,
    owner: &Owner,
) -> Result<(), String> {
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if metadata.uid() != owner.uid {
        return Err(format!(
            "the password file {} is owned by uid {}, not by {} (uid {}). Run `chown {} {}`",
            path.display(),
            metadata.uid(),
            owner.name,
            owner.uid,
            owner.name,
            path.display()
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode != 0o600 {
        return Err(format!(
            "the password file {} has mode {mode:04o}, but it must be 0600 (readable by its \
             owner only). Run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Whether an active `pg_hba.conf` rule authenticates by `trust`.
fn has_trust_rule(rules: &str) -> bool {
    rules.lines().any(|line| {
        let rule = line.split('#').next().unwrap_or_default();
        rule.split_whitespace()
            .any(|field| field.eq_ignore_ascii_case("trust"))
    })
}

/// Creates the cluster with a freshly generated superuser password, asked of
/// every connection.
fn initialise(bin_dir: &Path, layout: &Layout, owner: &Owner) -> Result<(), String> {
    let password_file = layout.password_file();
    let password = random_hex(PASSWORD_BYTES)?;
    write_private_file(&password_file, &format!("{password}\n"), owner)?;
    let output = owner
        .command(bin_dir, "initdb", &layout.dir)
        .arg("-D")
        .arg(layout.data_dir())
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .arg(format!("--pwfile={}", password_file.display()))
        .output()
        .map_err(|error| format!("initdb: {error}"))?;
    if !output.status.success() {
        return Err(format!("initdb failed: {}", stderr_of(&output)));
    }
    Ok(())
}

/// Writes `contents` to a file only `owner` can read, mode 0600 from its
/// creation on.
fn write_private_file(path: &Path, contents: &str, owner: &Owner) -> Result<(), String> {
    let fail = |error: std::io::Error| format!("cannot write {}: {error}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // A leftover of an interrupted initialisation keeps its old mode.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    owner.take(path)
}

fn read_password(layout: &Layout) -> Result<String, String> {
    let path = layout.password_file();
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read the password file {}: {error}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().trim();
    if password.is_empty() {
        return Err(format!(
            "the password file {} is empty; write the superuser's password in it, or recreate \
             the cluster",
            path.display()
        ));
    }
    Ok(password.to_string())
}

/// Starts the server unless it runs: unix socket only, reachable by its
/// owner only.
fn ensure_running(bin_dir: &Path, layout: &Layout, owner: &Owner) -> Result<(), String> {
    let data_dir = layout.data_dir();
    let status = owner
        .command(bin_dir, "pg_ctl", &layout.dir)
        .arg("status")
        .arg("-D")
        .arg(&data_dir)
        .output()
        .map_err(|error| format!("pg_ctl: {error}"))?;
    if status.status.success() {
        return Ok(());
    }
    let log = layout.dir.join(LOG_FILE);
    let server_options = format!(
        "-c listen_addresses='' -c unix_socket_directories={} -c unix_socket_permissions=0700",
        layout.dir_text
    );
    let output = owner
        .command(bin_dir, "pg_ctl", &layout.dir)
        .args(["start", "-w", "-D"])
        .arg(&data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-o", &server_options])
        .output()
        .map_err(|error| format!("pg_ctl: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "pg_ctl start failed (see {}): {}",
            log.display(),
            stderr_of(&output)
        ));
    }
    Ok(())
}

/// Refuses a server whose socket others may connect to (started by hand
/// with other options).
fn check_socket(layout: &Layout, owner: &Owner) -> Result<(), String> {
    let socket = layout.socket();
    let metadata = std::fs::symlink_metadata(&socket).map_err(|error| {
        format!(
            "the server runs but its socket {}: {error}",
            socket.display()
        )
    })?;
    let mode = metadata.mode() & 0o777;
    if mode != 0o700 {
        return Err(format!(
            "the running server's socket {} has mode {mode:04o}, so other local accounts may \
             connect. Stop the cluster (`pg_ctl -D {} stop`, as {}) and start the ledger again, \
             which starts it with mode 0700",
            socket.display(),
            layout.data_dir().display(),
            owner.name
        ));
    }
    Ok(())
}

/// The exclusive lock on a cluster's directory; released when dropped (the
/// file is closed).
struct ClusterLock {
    _file: File,
}

impl ClusterLock {
    fn acquire(dir: &Path, owner: &Owner) -> Result<Self, String> {
        let file = open_lock_file(dir, owner)?;
        let path = dir.join(LOCK_FILE);
        let deadline = Instant::now() + LOCK_WAIT_MAX;
        loop {
            // SAFETY: the descriptor stays open for the duration of the call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if !matches!(error.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR)) {
                return Err(format!("cannot lock {}: {error}", path.display()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "another process has held {} for {} s while initialising or starting the \
                     cluster; see {} or stop that process",
                    path.display(),
                    LOCK_WAIT_MAX.as_secs(),
                    dir.join(LOG_FILE).display()
                ));
            }
            std::thread::sleep(LOCK_RETRY_INTERVAL);
        }
    }
}

fn open_lock_file(dir: &Path, owner: &Owner) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    owner.take(&path)?;
    Ok(file)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random)
        .map_err(|error| format!("no random numbers for a password: {error}"))?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// `text` as a URL query value: every byte but the unreserved ones escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the account `name`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter (plain integers and
    // null pointers); getpwnam_r fills it from `buffer`, which outlives it.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buffer.len()` is its size.
    let status = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    (status == 0 && !found.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

/// The login name of `uid`, for messages.
fn user_name(uid: u32) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in `user_ids`.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buffer.len()` is its size.
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated
    // string inside `buffer`, still alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_trust_rules_count() {
        assert!(has_trust_rule("local all all trust\n"));
        assert!(has_trust_rule(
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 TRUST # old\n"
        ));
        assert!(!has_trust_rule(
            "# local all all trust\nlocal all all scram-sha-256 # was trust\n"
        ));
    }

    #[test]
    fn passwords_are_escaped_for_the_url() {
        assert_eq!(percent_encode("a1-._~"), "a1-._~");
        assert_eq!(percent_encode("p@ss&w/rd=é"), "p%40ss%26w%2Frd%3D%C3%A9");
    }

    #[test]
    fn cluster_paths_must_suit_a_unix_socket() {
        let error = |path: &str| Layout::new(Path::new(path)).err();
        assert_eq!(error("relative/dir"), Some("path must be absolute".into()));
        assert_eq!(
            error("/tmp/with space"),
            Some("path must not contain spaces or quotes".into())
        );
        let longest = format!("/{}", "d".repeat(SOCKET_PATH_MAX - SOCKET_FILE.len() - 2));
        assert_eq!(error(&longest), None);
        assert_eq!(
            error(&format!("{longest}d")),
            Some("path is too long for a unix socket".into())
        );
    }
}
