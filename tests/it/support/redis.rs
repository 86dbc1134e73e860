//! A private `redis-server` on a free port with its own data dir; with
//! [`RedisServer::start_tls`] it listens only on a TLS port and requires
//! client certificates.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    tls: Option<TlsFiles>,
}

/// Certificate files of a TLS Redis (server side and the client's).
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisServer {
    /// Start without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Start with extra `redis-server` arguments (e.g. AOF settings).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: args.iter().map(|s| s.to_string()).collect(),
            tls: None,
        };
        s.spawn();
        s
    }

    /// TLS only (`--port 0 --tls-port P`), server certificate from `pki`,
    /// client certificates required (`tls-auth-clients yes`).
    pub fn start_tls(pki: &super::tls::Pki) -> RedisServer {
        let mut s = RedisServer {
            port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: ["--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tls: Some(TlsFiles {
                ca: pki.ca(),
                cert: pki.server_cert(),
                key: pki.server_key(),
                client_cert: pki.client_cert(),
                client_key: pki.client_key(),
            }),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A client for assertions (over TLS, with the client certificate, when
    /// the server is TLS-only).
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).unwrap(),
            Some(t) => {
                switchyard_core::tls::install_crypto_provider();
                redis::Client::build_with_tls(
                    self.url(),
                    redis::TlsCertificates {
                        client_tls: Some(redis::ClientTlsConfig {
                            client_cert: std::fs::read(&t.client_cert).unwrap(),
                            client_key: std::fs::read(&t.client_key).unwrap(),
                        }),
                        root_cert: Some(std::fs::read(&t.ca).unwrap()),
                    },
                )
                .unwrap()
            }
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.arg("--port").arg(self.port.to_string()),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args(["--tls-auth-clients", "yes"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (install it: apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start{}; its log:\n{}",
                self.port,
                if self.tls.is_some() {
                    " with TLS (it must be built with TLS support, as Debian's redis-server is)"
                } else {
                    ""
                },
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the server (data since the last fsync is lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} redis-server");
    }

    /// SIGTERM: Redis writes (and fsyncs) what it holds, then exits.
    pub fn terminate(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.wait();
    }

    /// Start again (after `kill()` or `terminate()`) on the same port and data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        self.spawn();
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after `pause()`.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// A synchronous connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
