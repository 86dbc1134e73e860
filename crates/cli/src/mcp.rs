//! `switchyard mcp --config FILE`: an MCP server on stdin/stdout (rmcp, the
//! official Rust SDK) exposing the admin API as tools for agents. Every tool
//! goes through the one admin client (`cli::admin_client::AdminClient`): the
//! running router's admin API, or Redis when none runs.
//!
//! Read-only tools (`readOnlyHint: true`): `status`, `lag`, `dlq_list`,
//! `dlq_show`, `tail`. State-changing (`readOnlyHint: false`): `dlq_replay`
//! (sends events to the vendor again; not destructive) and `dlq_drop`
//! (`destructiveHint: true`: entries are deleted for good). Both need an
//! `id` or an `account`: an agent cannot replay or drop a whole DLQ by
//! leaving the selection out.
//!
//! Event payloads (`data`, `before`, `after`, `key`, `attributes`) and the
//! vendor's last response body (`fields.response`: vendors quote requests
//! back) are redacted in `dlq_list`, `dlq_show` and `tail` unless the
//! operator started the server with `--show-payloads`.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin_client::AdminClient;
use switchyard_config::Config;
use switchyard_router::admin_api::Selection;

/// The fields of an event that may hold personal data.
const PAYLOAD_FIELDS: [&str; 5] = ["data", "before", "after", "key", "attributes"];

/// Replace an event's payload fields with `"[redacted]"`.
pub fn redact_event(ev: &mut Value) {
    if let Some(o) = ev.as_object_mut() {
        for f in PAYLOAD_FIELDS {
            if let Some(v) = o.get_mut(f) {
                if !v.is_null() {
                    *v = json!("[redacted]");
                }
            }
        }
    }
}

/// Redact a DLQ entry: its event's payload and the vendor's last response
/// body (vendors often quote the request back).
pub fn redact_entry(entry: &mut Value) {
    if let Some(ev) = entry.get_mut("event") {
        redact_event(ev);
    }
    if let Some(r) = entry.pointer_mut("/fields/response") {
        if r.as_str().is_some_and(|s| !s.is_empty()) {
            *r = json!("[redacted]");
        }
    }
}

#[derive(Clone)]
pub struct Server {
    config: Config,
    show_payloads: bool,
    tool_router: ToolRouter<Server>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ConsumerArg {
    /// A consumer name from the config; all consumers when left out.
    #[serde(default)]
    pub consumer: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DlqListArgs {
    /// The consumer.
    pub consumer: String,
    /// Only this account.
    #[serde(default)]
    pub account: Option<String>,
    /// Only entries dead-lettered at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DlqShowArgs {
    /// The consumer.
    pub consumer: String,
    /// The DLQ entry's id or its event's id.
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DlqChangeArgs {
    /// The consumer.
    pub consumer: String,
    /// One entry (DLQ id or event id): that entry's account, from that entry on.
    #[serde(default)]
    pub id: Option<String>,
    /// Or every entry of this account.
    #[serde(default)]
    pub account: Option<String>,
    /// With `account`: only entries dead-lettered at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TailArgs {
    /// The account.
    pub account: String,
    /// How many of its newest events (default 20, at most 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn fail(e: impl std::fmt::Display) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        e.to_string(),
    )]))
}

fn since_of(s: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| format!("`since` must be an RFC 3339 time: {e}"))
        })
        .transpose()
}

#[tool_router]
impl Server {
    pub fn new(config: Config, show_payloads: bool) -> Server {
        Server {
            config,
            show_payloads,
            tool_router: Self::tool_router(),
        }
    }

    async fn client(&self) -> anyhow::Result<AdminClient> {
        AdminClient::connect(&self.config).await
    }

    fn payloads(&self, ev: &mut Value) {
        if !self.show_payloads {
            redact_event(ev);
        }
    }

    /// Health, and per consumer: state, lag in events and seconds, delivery
    /// rate, p99 latency, DLQ depth, parked accounts, module versions, last
    /// error; per source: rate and lag.
    #[tool(annotations(
        title = "Router status",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn status(&self) -> Result<CallToolResult, ErrorData> {
        match async { self.client().await?.status().await }.await {
            Ok(v) => Ok(CallToolResult::structured(v)),
            Err(e) => fail(format!("{e:#}")),
        }
    }

    /// How far behind each consumer is: events not yet delivered, the age of
    /// the oldest one in seconds, and its state.
    #[tool(annotations(title = "Consumer lag", read_only_hint = true, open_world_hint = false))]
    async fn lag(
        &self,
        Parameters(a): Parameters<ConsumerArg>,
    ) -> Result<CallToolResult, ErrorData> {
        let st = match async { self.client().await?.status().await }.await {
            Ok(v) => v,
            Err(e) => return fail(format!("{e:#}")),
        };
        let mut out = serde_json::Map::new();
        for (name, c) in st["consumers"].as_object().cloned().unwrap_or_default() {
            if a.consumer.as_ref().is_some_and(|w| *w != name) {
                continue;
            }
            out.insert(
                name,
                json!({
                    "state": c["state"],
                    "lag_events": c["lag_events"],
                    "lag_seconds": c["lag_seconds"],
                    "dlq": c["dlq"],
                    "parked_accounts": c["parked_accounts"],
                    "last_error": c["last_error"],
                }),
            );
        }
        if out.is_empty() {
            if let Some(c) = &a.consumer {
                return fail(format!("no consumer `{c}`"));
            }
        }
        Ok(CallToolResult::structured(json!({"consumers": out})))
    }

    /// A consumer's dead-lettered events (reason, attempts, last status, age;
    /// no payloads: see dlq_show).
    #[tool(annotations(
        title = "List dead letters",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn dlq_list(
        &self,
        Parameters(a): Parameters<DlqListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let since = match since_of(&a.since) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        match async {
            self.client()
                .await?
                .dlq_list(&a.consumer, a.account.as_deref(), since)
                .await
        }
        .await
        {
            Ok(mut entries) => {
                if !self.show_payloads {
                    entries.iter_mut().for_each(redact_entry);
                }
                Ok(CallToolResult::structured(
                    json!({"consumer": a.consumer, "entries": entries}),
                ))
            }
            Err(e) => fail(format!("{e:#}")),
        }
    }

    /// One dead-lettered event with its DLQ fields (payload redacted unless
    /// the server runs with --show-payloads).
    #[tool(annotations(
        title = "Show a dead letter",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn dlq_show(
        &self,
        Parameters(a): Parameters<DlqShowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match async { self.client().await?.dlq_show(&a.consumer, &a.id).await }.await {
            Ok(Some(mut v)) => {
                if !self.show_payloads {
                    redact_entry(&mut v);
                }
                Ok(CallToolResult::structured(v))
            }
            Ok(None) => fail(format!(
                "no DLQ entry `{}` for consumer {}",
                a.id, a.consumer
            )),
            Err(e) => fail(format!("{e:#}")),
        }
    }

    /// Deliver dead-lettered events again (changes state: events go to the
    /// vendor again). `id`: that entry's account from that entry on;
    /// `account`: all of it. The account's parked events follow, in order.
    #[tool(annotations(
        title = "Replay dead letters",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn dlq_replay(
        &self,
        Parameters(a): Parameters<DlqChangeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.change(a, true).await
    }

    /// Delete dead-lettered events for good (destructive; the account's
    /// later events flow again once nothing of it is left in the DLQ).
    #[tool(annotations(
        title = "Drop dead letters",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn dlq_drop(
        &self,
        Parameters(a): Parameters<DlqChangeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.change(a, false).await
    }

    /// The newest events of one account in the log, newest first (payloads
    /// redacted unless the server runs with --show-payloads).
    #[tool(annotations(
        title = "Tail an account",
        read_only_hint = true,
        open_world_hint = false
    ))]
    async fn tail(&self, Parameters(a): Parameters<TailArgs>) -> Result<CallToolResult, ErrorData> {
        let limit = a.limit.unwrap_or(20).clamp(1, 200);
        match async { self.client().await?.recent_events(&a.account, limit).await }.await {
            Ok(mut events) => {
                for e in &mut events {
                    if let Some(ev) = e.get_mut("event") {
                        self.payloads(ev);
                    }
                }
                Ok(CallToolResult::structured(
                    json!({"account": a.account, "events": events, "payloads_shown": self.show_payloads}),
                ))
            }
            Err(e) => fail(format!("{e:#}")),
        }
    }
}

impl Server {
    async fn change(&self, a: DlqChangeArgs, replay: bool) -> Result<CallToolResult, ErrorData> {
        if a.id.is_none() && a.account.is_none() {
            return fail("give `id` (one entry) or `account`: a whole DLQ is not replayed or dropped from here");
        }
        let sel = Selection {
            account: a.account,
            since: a.since,
            id: a.id,
        };
        match async {
            self.client()
                .await?
                .dlq_change(&a.consumer, &sel, replay)
                .await
        }
        .await
        {
            Ok(n) => Ok(CallToolResult::structured(json!({
                "consumer": a.consumer,
                if replay { "replayed" } else { "dropped" }: n,
            }))),
            Err(e) => fail(format!("{e:#}")),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Switchyard router operations: status and lag of consumers, their dead-letter \
                 queues (list, show, replay, drop) and an account's recent events.",
            )
    }
}

/// Serve MCP on stdin/stdout until the client disconnects.
pub async fn serve_stdio(config: Config, show_payloads: bool) -> anyhow::Result<()> {
    let service = Server::new(config, show_payloads)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialisation failed: {e}"))?;
    service.waiting().await?;
    Ok(())
}
