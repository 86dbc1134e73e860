//! A private MariaDB server: `mariadb-install-db` once per test binary into a
//! template data dir (copied for each server), then `mariadbd` on a free
//! port (127.0.0.1) and a socket in its temp dir, with the binlog in ROW /
//! FULL mode. Never touches the machine's own server.
//!
//! Tests administer it as `root` over the socket (the `mariadb` client);
//! the router connects over TCP as a user with only the least-privilege
//! grants of the MySQL source (`REPLICATION SLAVE, REPLICATION CLIENT` on
//! `*.*`, `SELECT` on the test database): [`MariaDb::create_cdc_user`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const CDC_USER: &str = "switchyard";
pub const CDC_PASSWORD: &str = "cdc-secret-9f3a";
const ADMIN_PASSWORD: &str = "admin-pw";

pub struct MariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A data dir initialised once per process (install takes a few seconds).
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sy-mariadb-template-")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .expect("running mariadb-install-db (apt-get install mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        data
    })
}

impl MariaDb {
    pub fn start() -> MariaDb {
        Self::start_with(&[])
    }

    /// Start with extra `mariadbd` options (e.g. `--binlog-format=MIXED`).
    pub fn start_with(extra: &[&str]) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("sy-mariadb-")
            .tempdir()
            .unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(dir.path().join("data"))
            .status()
            .unwrap();
        assert!(st.success(), "copying the template data dir");
        std::fs::create_dir_all(dir.path().join("binlog")).unwrap();
        let mut s = MariaDb {
            port: super::free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s.sql_in(
            "mysql",
            &format!(
                "CREATE DATABASE shop; \
             CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
             GRANT ALL ON *.* TO 'admin'@'127.0.0.1'"
            ),
        );
        s
    }

    /// An all-privileges user over TCP, for test writers (not the router).
    pub fn admin_url(&self) -> String {
        format!(
            "mysql://admin:{ADMIN_PASSWORD}@127.0.0.1:{}/shop?prefer_socket=false",
            self.port
        )
    }

    /// A connection as the admin user.
    pub async fn admin(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(self.admin_url()).await.unwrap()
    }

    fn p(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    pub fn socket(&self) -> String {
        self.p("mariadb.sock")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.p("error.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.p("data")))
            .arg(format!("--socket={}", self.socket()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", self.p("mariadbd.pid")))
            .arg(format!("--log-error={}", self.p("error.log")))
            .arg(format!("--log-bin={}", self.p("binlog/mariadb-bin")))
            .args([
                "--user=root",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--server-id=1",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-size=64M",
                "--sync-binlog=0",
                "--max-connections=50",
            ]);
        for e in &self.extra {
            cmd.arg(e);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("starting mariadbd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "-uroot", "-N", "-B"])
                .arg(format!("--socket={}", self.socket()))
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
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
                panic!("mariadbd exited with {st}; log:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run SQL as root over the socket (blocking); tab-separated rows, no header.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("shop", sql)
    }

    fn sql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.socket()))
            .args(["-D", db, "-e", sql])
            .output()
            .expect("running the mariadb client");
        assert!(
            out.status.success(),
            "mariadb failed for {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The least-privilege user of the MySQL source.
    pub fn create_cdc_user(&self) {
        self.sql(&format!(
            "CREATE USER IF NOT EXISTS '{CDC_USER}'@'%' IDENTIFIED BY '{CDC_PASSWORD}'; \
             GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{CDC_USER}'@'%'; \
             GRANT SELECT ON shop.* TO '{CDC_USER}'@'%'"
        ));
    }

    /// `mysql://switchyard:…@127.0.0.1:<port>/shop` (the least-privilege user).
    pub fn url(&self) -> String {
        format!(
            "mysql://{CDC_USER}:{CDC_PASSWORD}@127.0.0.1:{}/shop",
            self.port
        )
    }

    /// SIGSTOP: the server stays connected but silent (a frozen host or a
    /// network partition, as its clients see it).
    pub fn pause(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
    }

    /// SIGCONT after [`MariaDb::pause`].
    pub fn resume(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
    }

    /// SIGKILL (a crash; the next start recovers).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Clean shutdown (SIGTERM), waiting for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// Start again after `stop()` or `kill()` (same port and data dir).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            eprintln!(
                "--- mariadb log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}
