//! A private Postgres 15 cluster: `initdb` into a temp dir, `postgres` on a
//! free port (127.0.0.1 + a socket in the temp dir), logical replication on,
//! trust auth. Never touches the machine's own cluster.
//!
//! Postgres refuses to run as root: when the tests run as root the server
//! runs as the `postgres` user (uid/gid set on the child process; the temp
//! dir is chowned to it). The server gets its own process group so `kill()`
//! takes the postmaster and every backend down together, like a crash.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    ids: Option<(u32, u32)>,
    extra: Vec<String>,
    /// Certificates and pg_hba.conf of a TLS server (owned by the server's user).
    tls_dir: Option<tempfile::TempDir>,
}

pub fn bin(name: &str) -> PathBuf {
    let p = Path::new(PG_BIN).join(name);
    if p.exists() {
        p
    } else {
        PathBuf::from(name)
    }
}

/// (uid, gid) of the `postgres` user when running as root.
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).expect("running as root needs a `postgres` user"),
        id(&["-g", "postgres"])?,
    ))
}

impl PgServer {
    /// Start with logical replication enabled.
    pub fn start() -> PgServer {
        Self::start_with(&[])
    }

    /// `ssl = on` with `pki`'s server certificate, and a pg_hba.conf that
    /// accepts TCP connections only over TLS (`hostssl`; plain TCP is
    /// refused), for SQL and replication alike.
    pub fn start_tls(pki: &super::tls::Pki) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("sy-pg-tls-")
            .tempdir()
            .unwrap();
        for (from, to) in [
            (pki.server_cert(), "server.crt"),
            (pki.server_key(), "server.key"),
        ] {
            std::fs::copy(from, dir.path().join(to)).unwrap();
        }
        std::fs::write(
            dir.path().join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if let Some((uid, gid)) = run_as() {
            for f in ["", "server.crt", "server.key", "pg_hba.conf"] {
                std::os::unix::fs::chown(dir.path().join(f), Some(uid), Some(gid)).unwrap();
            }
        }
        let p = |f: &str| dir.path().join(f).display().to_string();
        let settings = [
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", p("server.crt")),
            format!("ssl_key_file={}", p("server.key")),
            format!("hba_file={}", p("pg_hba.conf")),
        ];
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        let mut s = Self::start_with(&settings);
        s.tls_dir = Some(dir);
        s
    }

    /// Start with extra `-c name=value` settings (later ones win).
    pub fn start_with(settings: &[&str]) -> PgServer {
        let dir = tempfile::Builder::new().prefix("sy-pg-").tempdir().unwrap();
        let ids = run_as();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut s = PgServer {
            port: super::free_port(),
            dir,
            child: None,
            ids,
            extra: settings.iter().map(|s| s.to_string()).collect(),
            tls_dir: None,
        };
        let mut initdb = s.command("initdb");
        initdb
            .arg("-D")
            .arg(s.data_dir())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = initdb.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.spawn();
        s
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA");
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid)).unwrap();
        }
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "wal_level=logical"])
            .args(["-c", "max_replication_slots=10"])
            .args(["-c", "max_wal_senders=10"])
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "log_min_messages=warning"]);
        for s in &self.extra {
            cmd.arg("-c").arg(s);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0);
        self.child = Some(cmd.spawn().expect("starting postgres"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited with {st}; log:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Fast shutdown (SIGINT: clean, checkpointed), waiting for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", c.id())])
                        .status();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL the postmaster and every backend (a crash; the next start recovers).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
            // Backends in the group exit with it; give the kernel a moment to reap them.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clean stop, then start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start again after `stop()` or `kill()`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn();
    }

    /// Run SQL with psql (blocking); returns unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg("-d")
            .arg("postgres")
            .arg("-c")
            .arg(sql)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed for {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An async client (its connection task runs on the current runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!(
                "--- postgres log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}
