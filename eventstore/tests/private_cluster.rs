//! The embedded default's last resort: a private cluster started from the
//! installed PostgreSQL binaries, reachable by its owner only.

use eventstore::database::{
    postgres_bin_dir, resolve, resolve_private_cluster, start_private_cluster,
    stop_private_cluster, DatabaseSource, MissingDatabase,
};
use eventstore::testing::{private_cluster_dir, TestDatabase};
use eventstore::EventStore;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Barrier};

/// A fresh cluster directory; stops the cluster and removes the directory
/// however the test ends.
struct Cluster {
    bin_dir: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    fn new() -> Self {
        let bin_dir =
            postgres_bin_dir().expect("PostgreSQL server binaries (initdb, pg_ctl) are needed");
        let dir = std::env::temp_dir().join(format!(
            "ledger-pc-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        ));
        Self { bin_dir, dir }
    }

    fn start(&self) -> Result<String, eventstore::ResolveError> {
        start_private_cluster(&self.bin_dir, &self.dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = stop_private_cluster(&self.bin_dir, &self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `id` of an account: `id -u NAME` or `id -g NAME`.
fn account_id(flag: &str, name: &str) -> u32 {
    let output = Command::new("id").args([flag, name]).output().unwrap();
    assert!(output.status.success(), "no account {name}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The account the cluster must belong to: the `postgres` system user when
/// running as root, else this process's user.
fn owner() -> (u32, u32, &'static str) {
    if is_root() {
        (
            account_id("-u", "postgres"),
            account_id("-g", "postgres"),
            "postgres",
        )
    } else {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        unsafe { (libc::geteuid(), libc::getegid(), "") }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Runs `attempt` in a child process switched to the `nobody` account and
/// returns what it returns (an errno, 0 for success). The child gets 10 s
/// (SIGALRM) to finish.
fn as_nobody(attempt: impl FnOnce() -> i32) -> i32 {
    let (uid, gid) = (account_id("-u", "nobody"), account_id("-g", "nobody"));
    // SAFETY: after fork the child calls only async-signal-safe functions
    // (alarm, setgroups, setgid, setuid, what `attempt` calls, _exit); the
    // parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::alarm(10);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(255);
            }
            libc::_exit(attempt());
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(
            libc::WIFEXITED(status),
            "the child running as nobody did not exit by itself (wait status {status}): \
             it was killed after 10 s or crashed"
        );
        libc::WEXITSTATUS(status)
    }
}

/// The errno of connecting a unix stream socket to `path` (0 on success).
fn connect_errno(path: &Path) -> impl FnOnce() -> i32 {
    let bytes = path.as_os_str().as_encoded_bytes().to_vec();
    // SAFETY: a zeroed sockaddr_un is valid (family and path set below).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(bytes.len() < address.sun_path.len());
    for (slot, byte) in address.sun_path.iter_mut().zip(&bytes) {
        *slot = *byte as libc::c_char;
    }
    move || {
        // SAFETY: plain system calls on a socket of our own and a valid address.
        unsafe {
            let socket = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if socket < 0 {
                return 254;
            }
            let connected = libc::connect(
                socket,
                std::ptr::addr_of!(address).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            if connected == 0 {
                0
            } else {
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(253)
            }
        }
    }
}

/// The errno of opening `path` for reading (0 on success).
fn open_errno(path: &Path) -> impl FnOnce() -> i32 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    move || {
        // SAFETY: `path` is a NUL-terminated string alive for the call.
        if unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) } >= 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(253)
        }
    }
}

/// Connects to `database` of the cluster in `dir` as its superuser with
/// `password` (none: no password at all) and answers the server's error code.
async fn login_error(dir: &Path, password: Option<&str>) -> Option<String> {
    let mut url = format!("postgres:///postgres?host={}&user=ledger", dir.display());
    if let Some(password) = password {
        url.push_str(&format!("&password={password}"));
    }
    match PgConnectOptions::from_str(&url).unwrap().connect().await {
        Ok(connection) => {
            connection.close().await.unwrap();
            None
        }
        Err(sqlx::Error::Database(error)) => Some(format!(
            "{}: {}",
            error.code().unwrap_or_default(),
            error.message()
        )),
        Err(error) => panic!("connecting failed otherwise than by the server's refusal: {error}"),
    }
}

#[tokio::test]
async fn a_private_cluster_starts_migrates_and_stops_in_its_own_directory() {
    // Proves: with the server binaries installed, the ledger can initialise,
    // start and use a cluster of its own listening only on a socket in its
    // directory, and a second start reuses the running cluster.
    let cluster = Cluster::new();
    let url = cluster.start().unwrap();
    assert!(
        url.starts_with(&format!(
            "postgres:///ledger?host={}&user=ledger&password=",
            cluster.dir.display()
        )),
        "{}",
        eventstore::database::redact(&url)
    );
    assert_eq!(cluster.start().unwrap(), url);
    let database = resolve_private_cluster(&cluster.dir, MissingDatabase::Create)
        .await
        .unwrap();
    assert_eq!(database.url(), url);
    assert_eq!(
        database.source,
        DatabaseSource::PrivateCluster {
            data_dir: cluster.path("pgdata")
        }
    );
    let store = EventStore::new(database.connect_pool(2).await.unwrap());
    store.migrate().await.unwrap();
    let tenant = store.create_tenant("acme").await.unwrap();
    assert_eq!(
        store.authenticate(&tenant.api_key).await.unwrap(),
        Some(tenant.tenant_id)
    );
    store.pool().close().await;
    assert!(stop_private_cluster(&cluster.bin_dir, &cluster.dir).unwrap());
    let dir = cluster.dir.clone();
    drop(cluster);
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_private_cluster_is_reachable_by_its_owner_only_and_asks_for_its_password() {
    // Proves: the directory and socket are mode 0700 and the password file
    // 0600, all the cluster owner's; pg_hba.conf asks every connection for
    // the password (no trust); a connection without it, or with a wrong one,
    // is refused and one with it gets in; and (as root) the `nobody` account
    // can neither connect to the socket nor read the password.
    let cluster = Cluster::new();
    let url = cluster.start().unwrap();
    let (uid, _, _) = owner();
    let socket = cluster.path(".s.PGSQL.5432");
    let password_file = cluster.path("password");
    for (path, expected) in [
        (&cluster.dir, 0o700),
        (&socket, 0o700),
        (&password_file, 0o600),
    ] {
        let metadata = std::fs::symlink_metadata(path).unwrap();
        assert_eq!(
            (metadata.mode() & 0o7777, metadata.uid()),
            (expected, uid),
            "mode and owner of {}",
            path.display()
        );
    }
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());

    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim_end();
    assert_eq!(password.len(), 64);
    assert!(password.bytes().all(|byte| byte.is_ascii_hexdigit()));
    assert!(url.ends_with(&format!("&password={password}")));
    let hba = std::fs::read_to_string(cluster.path("pgdata/pg_hba.conf")).unwrap();
    let methods: Vec<&str> = hba
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|rule| !rule.is_empty())
        .map(|rule| rule.split_whitespace().last().unwrap())
        .collect();
    assert!(!methods.is_empty());
    assert!(
        methods.iter().all(|method| *method == "scram-sha-256"),
        "{hba}"
    );

    let refused = Some("28P01: password authentication failed for user \"ledger\"".to_string());
    assert_eq!(login_error(&cluster.dir, None).await, refused);
    assert_eq!(
        login_error(&cluster.dir, Some("not-the-password")).await,
        refused
    );
    assert_eq!(login_error(&cluster.dir, Some(password)).await, None);
    let database = resolve(Some(&url)).await.unwrap();
    let mut connection = database.options().connect().await.unwrap();
    let (user,): (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(user, "ledger");
    connection.close().await.unwrap();

    if is_root() {
        assert_eq!(as_nobody(connect_errno(&socket)), libc::EACCES);
        assert_eq!(as_nobody(open_errno(&password_file)), libc::EACCES);
        // The same account reaches a socket it is allowed to: the refusals
        // above are the cluster's modes, not a broken probe.
        let open_dir = std::env::temp_dir().join(format!("ledger-open-{}", std::process::id()));
        std::fs::create_dir_all(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open_socket = open_dir.join("socket");
        let listener = std::os::unix::net::UnixListener::bind(&open_socket).unwrap();
        std::fs::set_permissions(&open_socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        let reached = as_nobody(connect_errno(&open_socket));
        drop(listener);
        std::fs::remove_dir_all(&open_dir).unwrap();
        assert_eq!(reached, 0);
    } else {
        eprintln!(
            "not root: cannot switch to another account, so only the modes and the password \
             were checked, not a connection from another account"
        );
    }
}

#[test]
fn a_directory_other_accounts_can_reach_or_control_is_refused() {
    // Proves: a cluster directory with group or other access, or owned by
    // another account than the one the cluster runs as, is refused with
    // what to do, and nothing is created in it.
    let cluster = Cluster::new();
    let (uid, gid, _) = owner();
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&cluster.dir)
        .unwrap();
    std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid)).unwrap();
    let dir = cluster.dir.display();
    assert_eq!(
        cluster.start().unwrap_err().to_string(),
        format!(
            "refusing to use the private PostgreSQL cluster in {dir}: the directory has mode \
             0755, but it must be 0700 so that no other local account can reach the cluster's \
             socket and files. Run `chmod 700 {dir}`"
        )
    );
    assert_eq!(std::fs::read_dir(&cluster.dir).unwrap().count(), 0);
    assert_eq!(mode(&cluster.dir), 0o755);

    if is_root() {
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&cluster.dir, Some(0), Some(0)).unwrap();
        assert_eq!(
            cluster.start().unwrap_err().to_string(),
            format!(
                "refusing to use the private PostgreSQL cluster in {dir}: the directory is \
                 owned by uid 0, not by postgres (uid {uid}), the account the cluster runs as, \
                 so another account controls it. If it holds your cluster, give it to postgres \
                 (`chown -R postgres {dir}`); otherwise move it away"
            )
        );
        assert_eq!(std::fs::read_dir(&cluster.dir).unwrap().count(), 0);
    } else {
        eprintln!(
            "not root: cannot make a directory another account owns, so only the mode was \
             checked"
        );
    }
}

#[test]
fn a_cluster_created_with_trust_authentication_is_refused_and_kept() {
    // Proves: a cluster initialised with trust authentication (as earlier
    // versions did) is refused with how to recreate it, and so is one whose
    // password file others can read or whose pg_hba.conf still trusts; its
    // data is never touched and it is never started.
    let cluster = Cluster::new();
    let (uid, gid, _) = owner();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&cluster.dir)
        .unwrap();
    std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid)).unwrap();
    let initdb = cluster.bin_dir.join("initdb");
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(initdb);
        command
    } else {
        Command::new(initdb)
    };
    let output = command
        .arg("-D")
        .arg(cluster.path("pgdata"))
        .args(["-U", "ledger", "--auth=trust", "--no-instructions"])
        .current_dir(&cluster.dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = cluster.dir.display();
    let account = if is_root() {
        "postgres".to_string()
    } else {
        let output = Command::new("id").arg("-un").output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(
        cluster.start().unwrap_err().to_string(),
        format!(
            "refusing to use the private PostgreSQL cluster in {dir}: its cluster was created \
             with trust authentication (there is no password file {dir}/password), so any \
             local account that reaches it connects as its superuser. Recreate it: stop it \
             (`pg_ctl -D {dir}/pgdata stop`, as {account}), keep a dump of what you need \
             (`pg_dumpall`), move {dir} away, and start the ledger again, which creates a \
             password-protected cluster"
        )
    );

    let password_file = cluster.path("password");
    std::fs::write(&password_file, "chosen\n").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&password_file, Some(uid), Some(gid)).unwrap();
    let password = password_file.display();
    assert_eq!(
        cluster.start().unwrap_err().to_string(),
        format!(
            "refusing to use the private PostgreSQL cluster in {dir}: the password file \
             {password} has mode 0644, but it must be 0600 (readable by its owner only). Run \
             `chmod 600 {password}`"
        )
    );

    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        cluster.start().unwrap_err().to_string(),
        format!(
            "refusing to use the private PostgreSQL cluster in {dir}: {dir}/pgdata/pg_hba.conf \
             lets connections in without a password (a `trust` line), so any local account \
             that reaches the socket connects as the superuser. Replace `trust` with \
             `scram-sha-256` there and restart the cluster (`pg_ctl -D {dir}/pgdata restart`, \
             as {account}), or recreate it (stop it, keep a dump, move {dir} away, start the \
             ledger again)"
        )
    );
    assert!(cluster.path("pgdata/PG_VERSION").is_file());
    assert!(!cluster.path(".s.PGSQL.5432").exists());
    assert!(!cluster.path("pgdata/postmaster.pid").exists());
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), "chosen\n");
}

#[tokio::test]
async fn starting_one_fresh_cluster_from_several_threads_at_once_gives_each_the_same_working_url() {
    // Proves: starters racing on a directory that does not exist yet wait
    // for each other (one initialises and starts, the others find it
    // running), and every one gets the same URL, which connects.
    const STARTERS: usize = 6;
    let cluster = Cluster::new();
    let barrier = Arc::new(Barrier::new(STARTERS));
    let starters: Vec<_> = (0..STARTERS)
        .map(|_| {
            let (bin_dir, dir, barrier) = (
                cluster.bin_dir.clone(),
                cluster.dir.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                start_private_cluster(&bin_dir, &dir).map_err(|error| error.to_string())
            })
        })
        .collect();
    let urls: Vec<Result<String, String>> = starters
        .into_iter()
        .map(|starter| starter.join().unwrap())
        .collect();
    let first = urls[0].clone().unwrap();
    assert_eq!(urls, vec![Ok(first.clone()); STARTERS]);
    let database = resolve(Some(&first)).await.unwrap();
    let mut connection = database.options().connect().await.unwrap();
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(one, 1);
    connection.close().await.unwrap();
    // No staging directory of a losing starter is left beside it.
    let parent = cluster.dir.parent().unwrap();
    let name = cluster
        .dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|entry| entry.starts_with(&format!(".{name}.")))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[tokio::test]
async fn the_test_harness_keeps_one_private_cluster_per_user_and_clones_databases_in_it() {
    // Proves: without a server, tests of every package share one cluster per
    // user in the temporary directory (whose socket path fits), and the
    // harness's template and fresh databases work on a password-protected
    // cluster.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = private_cluster_dir();
    assert_eq!(
        dir.file_name().unwrap().to_str().unwrap(),
        format!("ledger-test-{uid}")
    );
    assert!(dir.is_absolute());
    assert!(dir.join(".s.PGSQL.5432").as_os_str().len() <= 107);

    let cluster = Cluster::new();
    let server = resolve_private_cluster(&cluster.dir, MissingDatabase::Create)
        .await
        .unwrap();
    let first = TestDatabase::on(&server).await;
    let second = TestDatabase::on(&server).await;
    assert_ne!(first.name(), second.name());
    let tenant = first.store().create_tenant("acme").await.unwrap();
    assert_eq!(
        first.store().authenticate(&tenant.api_key).await.unwrap(),
        Some(tenant.tenant_id)
    );
    assert_eq!(
        second.store().authenticate(&tenant.api_key).await.unwrap(),
        None
    );
    first.store().pool().close().await;
    second.store().pool().close().await;
    drop((first, second));
}
