//! A throwaway PostgreSQL cluster from the installed binaries, for `lakehouse-dev dev` and the
//! tests when `DATABASE_URL` is unset.
//!
//! `initdb` refuses to run as root, so as root the cluster is created and run as the `postgres`
//! OS user (through `runuser`). The cluster listens on 127.0.0.1 on a free port, accepts
//! password logins (SCRAM) over TCP, and is removed when it is dropped or, if this process dies
//! first, by a small watchdog that outlives it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the cluster's operations return: the error says what failed, for a test or a command to
/// print.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What production runs with (docker-compose mounts the same file).
const PRODUCTION_SETTINGS: &str = include_str!("../../../deploy/postgresql.conf");

pub struct TempCluster {
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    password: String,
    /// More `-c name=value` server options (TLS, say).
    extra_options: String,
}

impl TempCluster {
    /// Creates and starts a cluster; blocks until it accepts connections.
    pub fn start() -> CliResult<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = is_root();
        let root = fresh_root()?;
        let password_bytes: [u8; 18] = random()?;
        let password: String = password_bytes.iter().map(|b| format!("{b:02x}")).collect();
        fs::write(root.join("pwfile"), &password)?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()?;
            if !status.success() {
                return Err("could not hand the cluster directory to the postgres OS user".into());
            }
        }
        let cluster = Self {
            root,
            bin,
            as_postgres,
            port: 0,
            password,
            extra_options: String::new(),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                "postgres",
                &format!("--pwfile={}", cluster.root.join("pwfile").display()),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        cluster.include_production_settings()?;
        cluster.start_on_a_free_port("the cluster")
    }

    /// A hot standby of `primary`, streaming from it: a base backup (`pg_basebackup -R`, which
    /// writes `standby.signal` and `primary_conninfo`) started on a port of its own with
    /// `options` (`-c name=value`, say a `recovery_min_apply_delay`). Blocks until it accepts
    /// connections. Its logins are the primary's.
    pub fn standby_of(primary: &TempCluster, options: &str) -> CliResult<Self> {
        let root = fresh_root()?;
        let standby = Self {
            root,
            bin: primary.bin.clone(),
            as_postgres: primary.as_postgres,
            port: 0,
            password: primary.password.clone(),
            extra_options: format!(" {options}"),
        };
        standby.own(&standby.root)?;
        let source = format!(
            "host=127.0.0.1 port={} user=postgres password={} application_name=standby",
            primary.port, primary.password
        );
        standby.run(
            "pg_basebackup",
            &[
                "-d",
                &source,
                "-D",
                &standby.data_dir(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        standby.start_on_a_free_port("the standby")
    }

    /// Starts the server; a freshly probed port can be taken before the server binds it, so
    /// it tries a few.
    fn start_on_a_free_port(mut self, what: &str) -> CliResult<Self> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.run("pg_ctl", &self.start_args()) {
                Ok(()) => return Ok(self),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| format!("{what} did not start").into()))
    }

    /// The production settings (`deploy/postgresql.conf`), included from the cluster's own
    /// configuration; `start_args` overrides what a disposable server does differently.
    fn include_production_settings(&self) -> CliResult {
        let data = self.root.join("data");
        fs::write(data.join("lakehouse.conf"), PRODUCTION_SETTINGS)?;
        let main = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&main)?;
        text.push_str("\ninclude 'lakehouse.conf'\n");
        fs::write(&main, text)?;
        self.own(&data)
    }

    fn data_dir(&self) -> String {
        self.root.join("data").display().to_string()
    }

    /// The extensions preloaded where installed, `pg_stat_statements` (contrib) and `pgaudit`
    /// (Debian `postgresql-15-pgaudit`): the production list, less what this machine lacks
    /// (pgaudit's own settings come from the production file).
    fn preloaded(&self) -> Vec<&'static str> {
        let lib = self.bin.parent().map(|p| p.join("lib")).unwrap_or_default();
        ["pg_stat_statements", "pgaudit"]
            .into_iter()
            .filter(|name| lib.join(format!("{name}.so")).exists())
            .collect()
    }

    /// Whether `pgaudit` is installed, so that the cluster preloads it.
    pub fn has_pgaudit(&self) -> bool {
        self.preloaded().contains(&"pgaudit")
    }

    fn start_args(&self) -> Vec<String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c archive_mode=off \
             -c shared_buffers=128MB -c effective_cache_size=1GB -c maintenance_work_mem=64MB \
             -c huge_pages=off -c log_line_prefix='%m [%p] ' -c shared_preload_libraries='{}'{}",
            self.port,
            self.root.display(),
            self.preloaded().join(","),
            self.extra_options
        );
        [
            "-D",
            &self.data_dir(),
            "-l",
            &self.root.join("server.log").display().to_string(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Stops the server, keeping its files (for fault tests).
    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    pub fn stop(&self) -> CliResult {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        )
    }

    /// Starts a stopped server again, on the same port.
    pub fn restart(&self) -> CliResult {
        self.run("pg_ctl", &self.start_args())
    }

    /// Adds `-c name=value` server options (after the defaults, so they win) from the next start.
    pub fn add_options(&mut self, options: &str) {
        self.extra_options.push(' ');
        self.extra_options.push_str(options);
    }

    /// Restarts the server with TLS on, serving `cert_pem` (its chain) and `key_pem`. Plain
    /// connections are still accepted; a client asks for TLS with its URL's `sslmode`.
    pub fn enable_tls(&mut self, cert_pem: &[u8], key_pem: &[u8]) -> CliResult {
        let (cert, key) = (self.root.join("server.crt"), self.root.join("server.key"));
        fs::write(&cert, cert_pem)?;
        fs::write(&key, key_pem)?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        }
        if self.as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cert)
                .arg(&key)
                .status()?;
            if !status.success() {
                return Err("could not hand the TLS files to the postgres OS user".into());
            }
        }
        self.extra_options = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        self.stop()?;
        self.restart()
    }

    /// The cluster's own directory (its data directory, socket and log live in it); files a
    /// tool needs go here, handed to the cluster's OS user with [`TempCluster::own`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_path(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Hands `path` (recursively) to the OS user the server runs as.
    pub fn own(&self, path: &Path) -> CliResult {
        if self.as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()?;
            if !status.success() {
                return Err(
                    format!("could not hand {} to the postgres OS user", path.display()).into(),
                );
            }
        }
        Ok(())
    }

    /// Runs `program` (on PATH, or a PostgreSQL tool by name) as the server's OS user; its
    /// stdout, or an error with its output.
    pub fn run_as_owner(&self, program: &str, args: &[&str]) -> CliResult<String> {
        let tool = self.bin.join(program);
        let program = if tool.exists() {
            tool
        } else {
            PathBuf::from(program)
        };
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            )
            .into())
        }
    }

    /// A URL for the superuser `postgres`, on `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Removes the cluster when the process `pid` exits, even if it is killed: a detached shell
    /// polls for the process and then stops the server and deletes its files.
    pub fn remove_when_process_exits(&self, pid: u32) -> CliResult {
        let pg_ctl = self.command_line("pg_ctl");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {pg_ctl} -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
            self.data_dir(),
            self.root.display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(())
    }

    fn command_line(&self, tool: &str) -> String {
        let path = self.bin.join(tool).display().to_string();
        if self.as_postgres {
            format!("runuser -u postgres -- '{path}'")
        } else {
            format!("'{path}'")
        }
    }

    fn run<S: AsRef<str>>(&self, tool: &str, args: &[S]) -> CliResult {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args.iter().map(AsRef::as_ref));
        let output = command.stdin(Stdio::null()).output()?;
        if output.status.success() {
            Ok(())
        } else {
            let log = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            Err(format!(
                "{tool} failed: {}{}\n{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout),
                log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
            )
            .into())
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data_dir(), "-m", "fast", "stop"]);
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn random<const N: usize>() -> CliResult<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes)
}

/// A new directory of its own under the temporary folder, named after this process.
fn fresh_root() -> CliResult<PathBuf> {
    let suffix = u32::from_le_bytes(random()?);
    let root =
        std::env::temp_dir().join(format!("lakehouse-pg-{}-{suffix:08x}", std::process::id()));
    fs::create_dir_all(&root)?;
    Ok(root)
}

fn free_port() -> CliResult<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// `PG_BIN_DIR`, else Debian's `/usr/lib/postgresql/<version>/bin` (15 first, then the newest),
/// else the directory of `initdb` on `PATH`.
fn find_bin_dir() -> CliResult<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from) {
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!("PG_BIN_DIR={} has no initdb and pg_ctl", dir.display()).into())
        };
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_tools(&preferred) {
        return Ok(preferred);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_tools(dir))
        .ok_or_else(|| {
            "no PostgreSQL binaries found: install PostgreSQL 15 (initdb, pg_ctl), set PG_BIN_DIR, \
             or set DATABASE_URL to a running server"
                .into()
        })
}
