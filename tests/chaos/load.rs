//! The load of a chaos run: HTTP clients that retry until the router answers
//! 202 (as a real client does, with the same event ids), and a Postgres
//! writer that reconnects through restarts and resolves commits whose outcome
//! it could not see.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// An HTTP event the router accepted (202).
#[derive(Debug, Clone)]
#[allow(dead_code)] // account and seq: for the failure report's Debug output
pub struct SentEvent {
    pub id: String,
    pub account: String,
    pub seq: u64,
    pub poison: bool,
    pub consent_email: bool,
}

/// A row whose INSERT committed.
#[derive(Debug, Clone)]
pub struct Row {
    pub n: i64,
    pub account: String,
}

pub fn email(account: &str) -> String {
    format!("{account}.person@example.com")
}

pub fn phone(account: &str) -> String {
    let digits: String = account.chars().filter(char::is_ascii_digit).collect();
    format!("+1555017{digits:0>4}")
}

/// PII values the load puts into events: they must never show up in logs.
pub fn pii_samples(accounts: &[String]) -> Vec<String> {
    accounts.iter().flat_map(|a| [email(a), phone(a)]).collect()
}

#[derive(Clone)]
pub struct Http {
    /// Every router instance's ingest address: ingest is stateless, so a
    /// batch goes to any; one that fails is retried on the next.
    bases: Vec<String>,
    token: String,
    client: reqwest::Client,
    sent: Arc<Mutex<Vec<SentEvent>>>,
}

impl Http {
    pub fn new(bases: Vec<String>, token: String) -> Http {
        Http {
            bases,
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            sent: Arc::default(),
        }
    }

    pub fn sent(&self) -> Vec<SentEvent> {
        self.sent.lock().unwrap().clone()
    }

    /// Post batches for `accounts` (owned by this client alone, so each
    /// account's events are sent strictly one after another) at about `rate`
    /// events/s until `stop`. A batch is retried, unchanged, until accepted.
    pub async fn run(self, accounts: Vec<String>, rate: u32, seed: u64, stop: Arc<AtomicBool>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut seq: HashMap<String, u64> = HashMap::new();
        let rate = rate.max(1) as u64;
        while !stop.load(Ordering::SeqCst) {
            let n = rng.usize(1..12);
            let mut batch = Vec::with_capacity(n);
            let mut events = Vec::with_capacity(n);
            for _ in 0..n {
                let account = accounts[rng.usize(0..accounts.len())].clone();
                let s = seq.entry(account.clone()).or_default();
                *s += 1;
                let poison = rng.u32(0..250) == 0;
                let consent_email = rng.bool();
                let id = if poison {
                    format!("h-{account}-poison-{s}")
                } else {
                    format!("h-{account}-{s}")
                };
                batch.push(json!({
                    "id": id,
                    "topic": "customer.web.updated",
                    "account_id": account,
                    "consent": {"email": if consent_email { "granted" } else { "denied" }},
                    "data": {"seq": *s, "email": email(&account), "phone": phone(&account)},
                }));
                events.push(SentEvent {
                    id,
                    account,
                    seq: *s,
                    poison,
                    consent_email,
                });
            }
            let first = rng.usize(0..self.bases.len());
            self.post_until_accepted(&Value::Array(batch), first).await;
            self.sent.lock().unwrap().extend(events);
            tokio::time::sleep(Duration::from_millis(1000 * n as u64 / rate)).await;
        }
    }

    async fn post_until_accepted(&self, body: &Value, first: usize) {
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            let base = &self.bases[(first + attempt) % self.bases.len()];
            let r = self
                .client
                .post(format!("{base}/v1/events"))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().as_u16() == 202 => return,
                Ok(resp) if resp.status().as_u16() == 503 || resp.status().as_u16() == 429 => {}
                Ok(resp) => {
                    let st = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    panic!("ingest answered {st} (not retryable): {text}");
                }
                Err(_) => {} // router down or restarting
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

#[derive(Clone)]
pub struct PgWriter {
    url: String,
    committed: Arc<Mutex<Vec<Row>>>,
    /// Rows of transactions whose COMMIT outcome was not seen.
    unknown: Arc<Mutex<Vec<Row>>>,
}

impl PgWriter {
    pub fn new(url: String) -> PgWriter {
        PgWriter {
            url,
            committed: Arc::default(),
            unknown: Arc::default(),
        }
    }

    async fn connect(&self, stop: &AtomicBool) -> Option<tokio_postgres::Client> {
        loop {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
            {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Some(client);
            }
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One transaction of 1–4 inserts every ~25 ms, sequentially, so each
    /// account's rows commit in `n` order.
    pub async fn run(self, accounts: Vec<String>, seed: u64, stop: Arc<AtomicBool>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut n: i64 = 0;
        let mut client = None;
        while !stop.load(Ordering::SeqCst) {
            if client.is_none() {
                client = self.connect(&stop).await;
                continue;
            }
            let c: &mut tokio_postgres::Client = client.as_mut().unwrap();
            let rows: Vec<Row> = (0..rng.usize(1..5))
                .map(|_| {
                    n += 1;
                    Row {
                        n,
                        account: accounts[rng.usize(0..accounts.len())].clone(),
                    }
                })
                .collect();
            let result = async {
                let tx = c.transaction().await?;
                for r in &rows {
                    tx.execute(
                        "INSERT INTO activity (account_id, n, email, phone) VALUES ($1, $2, $3, $4)",
                        &[&r.account, &r.n, &email(&r.account), &phone(&r.account)],
                    )
                    .await?;
                }
                tx.commit().await
            }
            .await;
            match result {
                Ok(()) => self.committed.lock().unwrap().extend(rows),
                Err(_) => {
                    // Failed before or during COMMIT: maybe committed. Resolved at the end.
                    self.unknown.lock().unwrap().extend(rows);
                    client = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(10..40))).await;
        }
    }

    /// Every committed row in commit order (per account, `n` order).
    pub async fn committed(&self) -> Vec<Row> {
        let stop = AtomicBool::new(false);
        let c = self.connect(&stop).await.unwrap();
        let mut all = self.committed.lock().unwrap().clone();
        let unknown = self.unknown.lock().unwrap().clone();
        if !unknown.is_empty() {
            let ns: Vec<i64> = unknown.iter().map(|r| r.n).collect();
            let present: std::collections::HashSet<i64> = c
                .query("SELECT n FROM activity WHERE n = ANY($1)", &[&ns])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect();
            all.extend(unknown.into_iter().filter(|r| present.contains(&r.n)));
        }
        all.sort_by_key(|r| r.n);
        // Cross-check: the table holds exactly these rows.
        let count: i64 = c
            .query_one("SELECT count(*) FROM activity", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            count as usize,
            all.len(),
            "rows in the table vs rows the writer knows of"
        );
        all
    }
}
