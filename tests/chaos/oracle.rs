//! The oracle of a chaos run. The truth is what the load generators know was
//! accepted (HTTP 202, committed rows), checked against the log; then, per
//! consumer, what the vendor applied, what the DLQ holds, and what the
//! consumer group's checkpoints say.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use switchyard_core::event::Event;

use crate::load::{Row, SentEvent};
use crate::support::redis::RedisServer;
use crate::{Consumer, PARTITIONS};

/// Where an event of the log came from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    Http { seq: u64 },
    Pg { n: i64 },
}

#[derive(Debug, Clone)]
struct Logged {
    id: String,
    account: String,
    topic: String,
    origin: Origin,
    poison: bool,
    consent_email: bool,
}

/// The log as the oracle sees it, checked against the acknowledged inputs.
pub struct Truth {
    /// Every log entry, in log order per partition (so per account).
    log: Vec<Logged>,
    /// Problems found in the log itself.
    lost: Vec<String>,
    duplicated: Vec<String>,
    reordered: Vec<String>,
}

fn read_log(redis: &RedisServer) -> Vec<Event> {
    let mut c = redis.conn();
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let mut from = "-".to_string();
        loop {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(format!("sy:log:{{p{p}}}"))
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(5000)
                .query(&mut c)
                .unwrap();
            let n = reply.ids.len();
            for e in &reply.ids {
                out.push(switchyard_store::log::decode_entry(e).expect("a decodable log entry"));
            }
            if n < 5000 {
                break;
            }
            from = format!("({}", reply.ids.last().unwrap().id);
        }
    }
    out
}

impl Truth {
    pub fn new(redis: &RedisServer, sent: &[SentEvent], committed: &[Row]) -> Truth {
        let events = read_log(redis);
        let sent_by_id: HashMap<&str, &SentEvent> =
            sent.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut log = Vec::with_capacity(events.len());
        let mut t = Truth {
            log: Vec::new(),
            lost: Vec::new(),
            duplicated: Vec::new(),
            reordered: Vec::new(),
        };
        for ev in events {
            let origin = if ev.source == "web" {
                let seq = ev
                    .data
                    .as_ref()
                    .and_then(|d| d["seq"].as_u64())
                    .expect("http event with data.seq");
                Origin::Http { seq }
            } else {
                let n = ev
                    .after
                    .as_ref()
                    .and_then(|a| a["n"].as_i64())
                    .expect("row event with after.n");
                Origin::Pg { n }
            };
            let (poison, consent_email) = match sent_by_id.get(ev.id.as_str()) {
                Some(s) => (s.poison, s.consent_email),
                None => (false, false),
            };
            log.push(Logged {
                id: ev.id.clone(),
                account: ev.account_id.clone(),
                topic: ev.topic.clone(),
                origin,
                poison,
                consent_email,
            });
        }

        // Each accepted input exactly once in the log.
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut ns: HashMap<i64, usize> = HashMap::new();
        for l in &log {
            *ids.entry(l.id.as_str()).or_default() += 1;
            if let Origin::Pg { n } = l.origin {
                *ns.entry(n).or_default() += 1;
            }
            if matches!(l.origin, Origin::Http { .. }) && !sent_by_id.contains_key(l.id.as_str()) {
                // An HTTP event nobody saw accepted: only possible if the 202 was lost
                // on the way back and the client gave up, which this client never does.
                t.duplicated.push(format!(
                    "log holds http event {} that no client had accepted",
                    l.id
                ));
            }
        }
        for e in sent {
            match ids.get(e.id.as_str()) {
                None => t
                    .lost
                    .push(format!("http event {} (202) missing from the log", e.id)),
                Some(1) => {}
                Some(k) => t
                    .duplicated
                    .push(format!("http event {} is {k} times in the log", e.id)),
            }
        }
        let committed_ns: HashSet<i64> = committed.iter().map(|r| r.n).collect();
        for r in committed {
            match ns.get(&r.n) {
                None => t
                    .lost
                    .push(format!("committed row n={} missing from the log", r.n)),
                Some(1) => {}
                Some(k) => t
                    .duplicated
                    .push(format!("row n={} is {k} times in the log", r.n)),
            }
        }
        for (n, _) in ns.iter().filter(|(n, _)| !committed_ns.contains(n)) {
            t.duplicated
                .push(format!("log holds row n={n} that never committed"));
        }

        // Per account: each source's events in the order they were accepted.
        let mut last: HashMap<(&str, bool), i64> = HashMap::new();
        for l in &log {
            let (key, v) = match l.origin {
                Origin::Http { seq } => ((l.account.as_str(), true), seq as i64),
                Origin::Pg { n } => ((l.account.as_str(), false), n),
            };
            if let Some(prev) = last.insert(key, v) {
                if v <= prev {
                    t.reordered
                        .push(format!("log order of {}: {v} after {prev}", l.account));
                }
            }
        }
        t.log = log;
        t
    }

    pub fn events(&self) -> usize {
        self.log.len()
    }

    /// Whether `consumer` should receive `l` (else: filtered, by which rule).
    fn route(consumer: &str, l: &Logged) -> Result<(), &'static str> {
        match consumer {
            "b" if !l.topic.starts_with("customer.") => Err("topics"),
            "b" if !l.consent_email => Err("filter (require_consent=email)"),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    pub misrouted: usize,
    pub filtered: usize,
    pub dead_lettered: usize,
    /// Requests repeating an already-applied event that a router crash (or a
    /// response slower than the consumer's timeout) explains.
    pub resent: usize,
    pub checkpoint_errors: Vec<String>,
    pub details: Vec<String>,
}

/// (event id, reason) of every DLQ entry of `consumer`.
fn dlq(redis: &RedisServer, consumer: &str) -> Vec<(String, String)> {
    let mut c = redis.conn();
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("sy:c:{consumer}:dlq:{{p{p}}}"))
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        for e in reply.ids {
            let get = |k: &str| -> String { e.get::<String>(k).unwrap_or_default() };
            out.push((get("event_id"), get("reason")));
        }
    }
    out
}

/// Consumer-group state that must hold once everything is delivered.
fn checkpoint_errors(redis: &RedisServer, consumer: &str) -> Vec<String> {
    let mut c = redis.conn();
    let mut errs = Vec::new();
    for p in 0..PARTITIONS {
        let stream = format!("sy:log:{{p{p}}}");
        let info: redis::streams::StreamInfoStreamReply = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .query(&mut c)
            .unwrap();
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query(&mut c)
            .unwrap();
        match groups.groups.iter().find(|g| g.name == consumer) {
            None => errs.push(format!("{consumer} p{p}: no consumer group")),
            Some(g) => {
                if g.pending != 0 {
                    errs.push(format!(
                        "{consumer} p{p}: {} entries still pending",
                        g.pending
                    ));
                }
                if g.last_delivered_id != info.last_generated_id {
                    errs.push(format!(
                        "{consumer} p{p}: checkpoint {} but the log ends at {}",
                        g.last_delivered_id, info.last_generated_id
                    ));
                }
            }
        }
        for key in [
            format!("sy:c:{consumer}:deferred:{{p{p}}}"),
            format!("sy:c:{consumer}:parked:{{p{p}}}"),
        ] {
            let n: usize = redis::cmd("SCARD").arg(&key).query(&mut c).unwrap();
            if n != 0 {
                errs.push(format!("{key}: {n} accounts left"));
            }
        }
    }
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(format!("sy:c:{consumer}:defer:*"))
        .query(&mut c)
        .unwrap();
    for l in lists {
        let n: usize = redis::cmd("LLEN").arg(&l).query(&mut c).unwrap();
        if n != 0 {
            errs.push(format!("{l}: {n} events still deferred"));
        }
    }
    errs
}

/// Wait until every consumer has dealt with every event (or `timeout`), then
/// judge.
pub fn drain_and_check(
    redis: &RedisServer,
    consumers: &[Consumer],
    truth: &Truth,
    kills: &[Instant],
    timeout: Duration,
) -> Report {
    let mut r = Report {
        lost: truth.lost.len(),
        duplicated: truth.duplicated.len(),
        reordered: truth.reordered.len(),
        ..Report::default()
    };
    r.details.extend(truth.lost.iter().cloned());
    r.details.extend(truth.duplicated.iter().cloned());
    r.details.extend(truth.reordered.iter().cloned());

    let deadline = Instant::now() + timeout;
    let expected = |c: &Consumer| -> usize {
        truth
            .log
            .iter()
            .filter(|l| Truth::route(c.name, l).is_ok())
            .count()
    };
    loop {
        let done = consumers.iter().all(|c| {
            let applied: HashSet<String> = c.vendor.applied().into_iter().map(|x| x.key).collect();
            let dead = dlq(redis, c.name).len();
            applied.len() + dead >= expected(c)
        }) && consumers
            .iter()
            .all(|c| checkpoint_errors(redis, c.name).is_empty());
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let by_id: HashMap<&str, &Logged> = truth.log.iter().map(|l| (l.id.as_str(), l)).collect();
    for c in consumers {
        let applied = c.vendor.applied();
        let requests = c.vendor.requests();
        let dead = dlq(redis, c.name);
        let dead_ids: HashMap<&str, &str> = dead
            .iter()
            .map(|(i, why)| (i.as_str(), why.as_str()))
            .collect();
        let first: HashMap<&str, &crate::support::vendor::Received> =
            applied.iter().map(|a| (a.key.as_str(), a)).collect();

        for l in &truth.log {
            match Truth::route(c.name, l) {
                Err(_) => {
                    r.filtered += 1;
                    if first.contains_key(l.id.as_str()) || dead_ids.contains_key(l.id.as_str()) {
                        r.misrouted += 1;
                        r.details
                            .push(format!("{}: {} should have been filtered", c.name, l.id));
                    }
                }
                Ok(()) if l.poison => match dead_ids.get(l.id.as_str()) {
                    Some(why) if why.contains("422") => r.dead_lettered += 1,
                    Some(why) => {
                        r.misrouted += 1;
                        r.details.push(format!(
                            "{}: {} dead-lettered for the wrong reason: {why}",
                            c.name, l.id
                        ));
                    }
                    None => {
                        r.lost += 1;
                        r.details.push(format!(
                            "{}: rejected event {} is not in the DLQ",
                            c.name, l.id
                        ));
                    }
                },
                Ok(()) => {
                    if !first.contains_key(l.id.as_str()) {
                        r.lost += 1;
                        r.details.push(match dead_ids.get(l.id.as_str()) {
                            Some(why) => format!("{}: {} dead-lettered: {why}", c.name, l.id),
                            None => format!("{}: {} ({}) never delivered", c.name, l.id, l.account),
                        });
                    }
                }
            }
        }
        for a in &applied {
            if !by_id.contains_key(a.key.as_str()) {
                r.misrouted += 1;
                r.details.push(format!(
                    "{}: applied {} which is not in the log",
                    c.name, a.key
                ));
            }
        }
        if dead.len() != dead_ids.len() {
            r.duplicated += dead.len() - dead_ids.len();
            r.details
                .push(format!("{}: an event is in the DLQ twice", c.name));
        }

        // Repeats of an applied event. Explained: the first answer was slower than
        // the consumer's timeout (the router never saw it), or the router was
        // stopped (SIGKILL, or SIGTERM) between the previous 2xx and the repeat (the documented crash
        // window: at most one event per account per crash).
        let mut per_kill: HashMap<(usize, &str), usize> = HashMap::new();
        // Latest 2xx answer per key so far (the first application, then each repeat).
        let mut last_ok: HashMap<&str, Instant> = HashMap::new();
        let mut ordered: Vec<&crate::support::vendor::Received> = requests.iter().collect();
        ordered.sort_by_key(|q| q.at);
        let delayed_keys: HashSet<&str> = requests
            .iter()
            .filter(|o| o.delayed)
            .map(|o| o.key.as_str())
            .collect();
        for q in ordered {
            if !q.repeat {
                if (200..300).contains(&q.status) {
                    last_ok.entry(q.key.as_str()).or_insert(q.at);
                }
                continue;
            }
            let prev = last_ok.get(q.key.as_str()).copied();
            last_ok.insert(q.key.as_str(), q.at);
            let Some(prev) = prev else { continue };
            if delayed_keys.contains(q.key.as_str()) {
                r.resent += 1;
                continue;
            }
            let account = by_id
                .get(q.key.as_str())
                .map(|l| l.account.as_str())
                .unwrap_or("");
            match kills.iter().rposition(|k| *k > prev && *k < q.at) {
                Some(k) => {
                    r.resent += 1;
                    let n = per_kill.entry((k, account)).or_default();
                    *n += 1;
                    if *n > 1 {
                        r.duplicated += 1;
                        r.details.push(format!(
                            "{}: account {account} had {n} events resent after router stop #{k} ({})",
                            c.name, q.key
                        ));
                    }
                }
                None => {
                    r.duplicated += 1;
                    r.details.push(format!(
                        "{}: {} sent again after a 2xx with no router stop in between",
                        c.name, q.key
                    ));
                }
            }
        }

        // Per account, the order the vendor applied events in is log order.
        let mut pos: HashMap<&str, usize> = HashMap::new();
        for (i, l) in truth.log.iter().enumerate() {
            pos.insert(l.id.as_str(), i);
        }
        let mut last: HashMap<&str, (usize, &str)> = HashMap::new();
        for a in &applied {
            let (Some(&p), Some(l)) = (pos.get(a.key.as_str()), by_id.get(a.key.as_str())) else {
                continue;
            };
            if let Some((prev, prev_id)) = last.insert(l.account.as_str(), (p, a.key.as_str())) {
                if p < prev {
                    r.reordered += 1;
                    r.details.push(format!(
                        "{}: {} applied after {prev_id} (account {})",
                        c.name, a.key, l.account
                    ));
                    if std::env::var_os("CHAOS_DEBUG").is_some() {
                        // Wall clock (ms since the epoch, last 6 digits) to match the router logs.
                        let wall = |i: Instant| {
                            let ago = Instant::now() - i;
                            let t = std::time::SystemTime::now() - ago;
                            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000
                        };
                        // The account's requests from a little before the earlier event on.
                        let at = |k: &str| applied.iter().find(|x| x.key == k).map(|x| x.at);
                        let from = at(&a.key).unwrap_or(a.at);
                        let earliest = at(prev_id).unwrap_or(from).min(from);
                        for q in requests.iter().filter(|q| {
                            by_id
                                .get(q.key.as_str())
                                .is_some_and(|x| x.account == l.account)
                                && q.at + Duration::from_secs(3) > earliest
                                && q.at < from + Duration::from_secs(3)
                        }) {
                            r.details.push(format!(
                                "    wall {:>6}ms {} log#{} status {} repeat {}",
                                wall(q.at),
                                q.key,
                                pos.get(q.key.as_str()).unwrap(),
                                q.status,
                                q.repeat
                            ));
                        }
                    }
                }
            }
        }

        r.checkpoint_errors.extend(
            checkpoint_errors(redis, c.name)
                .into_iter()
                .map(|e| format!("{}: {e}", c.name)),
        );
    }
    r
}
