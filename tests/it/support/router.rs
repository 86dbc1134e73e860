//! The real `switchyard` binary, started with a config written to a temp dir.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

const DEFAULT_LOG_FILTER: &str = "info,switchyard=debug";

/// `switchyard run` with `config`, expected to exit on its own within
/// `timeout` (a config or certificate it must refuse). Returns the exit
/// status and everything it wrote to stderr; panics if it keeps running.
pub fn run_expecting_exit(config: &str, timeout: Duration) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", DEFAULT_LOG_FILTER)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting switchyard");
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, std::fs::read_to_string(&err_path).unwrap_or_default());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "switchyard run kept running for {timeout:?}; it should have refused to start. stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Router {
    pub addr: String,
    /// `https` when the router reported a TLS listener.
    pub scheme: &'static str,
    log_filter: String,
    pub config_path: PathBuf,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: Arc<tempfile::TempDir>,
}

/// A config for a router on port 0 against `redis_url`, with two HTTP
/// sources: `web` (TOKEN, any topic) and `partner` (TOKEN_B, `order.*` only).
pub fn base_config(redis_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "64KiB"
max_batch = 500
shutdown_grace = "5s"

[redis]
url = "{redis_url}"
timeout = "500ms"

[log]
partitions = 8

# Short leases: a killed router's partitions and CDC sources move to its
# restarted successor (a new instance id) within 3 s.
[coordination]
lease_timeout = "3s"
renew_interval = "300ms"

[sources.web]
type = "http"
token = "{}"

[sources.partner]
type = "http"
token = "{}"
topics = ["order.*"]
"#,
        super::TOKEN,
        super::TOKEN_B
    )
}

impl Router {
    pub fn start(config: &str) -> Router {
        Self::start_logging(config, DEFAULT_LOG_FILTER)
    }

    /// Start with this `SWITCHYARD_LOG` filter (e.g. `trace`).
    pub fn start_logging(config: &str, filter: &str) -> Router {
        Self::start_with_env_and_filter(config, &[], filter)
    }

    /// Like [`Router::start`], with extra environment variables for the process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Router {
        Self::start_with_env_and_filter(config, env, DEFAULT_LOG_FILTER)
    }

    fn start_with_env_and_filter(config: &str, env: &[(&str, &str)], filter: &str) -> Router {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        Self::start_at(path, dir, filter, env, true)
    }

    /// Start, and return as soon as the listener is up (`listening`), while
    /// start-up (compiling modules) may still run; [`Router::start`] waits
    /// until the router reports `ready`.
    pub fn start_listening(config: &str, filter: &str) -> Router {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        Self::start_at(path, dir, filter, &[], false)
    }

    fn start_at(
        config_path: PathBuf,
        dir: Arc<tempfile::TempDir>,
        filter: &str,
        env: &[(&str, &str)],
        wait_ready: bool,
    ) -> Router {
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("SWITCHYARD_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .env("SWITCHYARD_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchyard");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let l = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "listening" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((
                                v["addr"].as_str().unwrap_or_default().to_string(),
                                v["tls"] == true,
                            ));
                        }
                    }
                    if v["message"] == "ready" {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                } else if let Some((_, rest)) = line.split_once(" listening addr=") {
                    // The text format (`SWITCHYARD_LOG_FORMAT=text`).
                    if let Some(tx) = tx.take() {
                        let addr = rest.split(' ').next().unwrap_or_default().to_string();
                        let _ = tx.send((addr, rest.contains("tls=true")));
                    }
                } else if line.contains(": ready") {
                    // The text format's `ready` line.
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                l.lock().unwrap().push(line);
            }
        });
        // Start-up compiles modules that are not in the compile cache yet:
        // seconds each in the dev build, longer on a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let (addr, tls) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "router did not report `listening`; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        if wait_ready
            && ready_rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .is_err()
        {
            let _ = child.kill();
            panic!(
                "router did not report `ready`; logs:\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        Router {
            addr,
            scheme: if tls { "https" } else { "http" },
            log_filter: filter.to_string(),
            config_path,
            child: Some(child),
            logs,
            _dir: dir,
        }
    }

    /// Start a new process with the same config file. Stops the running one
    /// gracefully (SIGTERM) if it is still up; call `kill()` first for a crash.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let st = self.terminate();
            assert!(st.success(), "graceful stop before restart: {st:?}");
        }
        let next = Router::start_at(
            self.config_path.clone(),
            self._dir.clone(),
            &self.log_filter.clone(),
            &[],
            true,
        );
        *self = next;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// `http://<admin listener>/<path>` (from the `admin listening` log line; needs `[admin]`).
    pub fn admin_url(&self, path: &str) -> String {
        let logs = self.logs.lock().unwrap();
        let addr = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "admin listening")
            .and_then(|v| v["addr"].as_str().map(str::to_string))
            .expect("the router logged no `admin listening` (is [admin] configured?)");
        format!("http://{addr}{path}")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Send `sig` (`STOP`, `CONT`, `TERM`…) to the process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut c = self.child.take().unwrap();
        for _ in 0..400 {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = c.kill();
        panic!(
            "router did not exit within 10 s of SIGTERM; logs:\n{}",
            self.logs()
        );
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- router logs ---\n{}", self.logs());
        }
        self.kill();
    }
}
