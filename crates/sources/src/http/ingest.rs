//! The HTTP ingest pipeline, whole: `POST /v1/events` (native JSON and
//! CloudEvents) and the Segment-compatible endpoints, from the request to
//! the answer (authentication, body formats and encodings, validation,
//! append, metrics). The router's listener only routes the request here.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    cloudevents, segment, split_body, to_event, Auth, AuthSource, BodyFormat, Encoding, Reject,
};
use switchyard_store::log::{Log, LogError};

type Resp = Response<Full<Bytes>>;

/// The limits of `[server]` that ingest applies.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// `server.max_body`: largest body, also once decompressed.
    pub max_body: u64,
    /// `server.max_batch`: most events in one request.
    pub max_batch: usize,
    /// `server.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `server.retry_after_secs`: the `Retry-After` of a 503.
    pub retry_after_secs: u64,
}

/// The HTTP sources' ingest endpoint.
pub struct Ingest {
    pub log: Log,
    pub auth: Auth,
    pub limits: IngestLimits,
    /// `[schemas]`: the registry events are validated by; none: no schemas.
    pub schemas: Option<std::sync::Arc<crate::schema::Registry>>,
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .expect("static response parts are valid")
}

/// The response of a [`Reject`]: its status, `{"error", "field"}`, and
/// the headers its status calls for.
pub fn reject(r: &Reject, retry_after: u64) -> Resp {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(status, &r.to_json());
    if r.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    if r.status == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    }
    if r.status == 408 {
        // The rest of the body may still come: don't read it as a request.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Read a request body of at most `max` bytes within
/// `server.body_read_timeout`. 413 above `max` (`too_large`), 408 when it
/// does not arrive in time, 503 when shutdown begins while it is arriving
/// (nothing was written), 400 when the client breaks off.
pub async fn read_body(
    body: Incoming,
    max: u64,
    body_read_timeout: Duration,
    shutdown: &CancellationToken,
    too_large: impl FnOnce() -> Reject,
) -> Result<Bytes, Reject> {
    let read = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).collect();
    let r = tokio::select! {
        r = tokio::time::timeout(body_read_timeout, read) => r,
        _ = shutdown.cancelled() => {
            return Err(Reject::new(
                503,
                None,
                "the router is shutting down and the body had not arrived yet; nothing was written, retry",
            ))
        }
    };
    match r {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Reject::new(
            400,
            None,
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(Reject::new(
            408,
            None,
            format!(
                "the body did not arrive within {} (server.body_read_timeout)",
                humantime::format_duration(body_read_timeout)
            ),
        )),
    }
}

impl Ingest {
    /// Handle `POST /v1/events`: authenticate, read and decode the body,
    /// validate every element, append, and answer (202, or the [`Reject`]).
    pub async fn handle(&self, req: Request<Incoming>, shutdown: &CancellationToken) -> Resp {
        let retry_after = self.limits.retry_after_secs;
        let mut source = None;
        let span = ingest_span();
        let result =
            tracing::Instrument::instrument(ingest_inner(self, req, shutdown, &mut source), span)
                .await;
        match answered(source, 202, result) {
            Ok(v) => json_response(StatusCode::ACCEPTED, &v),
            Err(r) => reject(&r, retry_after),
        }
    }

    /// Handle a Segment endpoint (`/v1/track`, …, `/v1/batch`): like
    /// [`Ingest::handle`], authenticated by a write key, answered as
    /// Segment does: 200 `{"success": true}`.
    pub async fn handle_segment(
        &self,
        route: segment::Route,
        req: Request<Incoming>,
        shutdown: &CancellationToken,
    ) -> Resp {
        let retry_after = self.limits.retry_after_secs;
        let mut source = None;
        let span = ingest_span();
        let result = tracing::Instrument::instrument(
            segment_inner(self, route, req, shutdown, &mut source),
            span,
        )
        .await;
        match answered(source, 200, result) {
            Ok(_) => json_response(StatusCode::OK, &json!({"success": true})),
            Err(r) => {
                let mut resp = reject(&r, retry_after);
                *resp.body_mut() = Full::new(Bytes::from(
                    serde_json::to_vec(&segment::error_body(&r)).unwrap_or_default(),
                ));
                if r.status == 401 {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic"),
                    );
                }
                resp
            }
        }
    }
}

fn ingest_span() -> tracing::Span {
    tracing::debug_span!(
        "ingest",
        source = tracing::field::Empty,
        trace_id = tracing::field::Empty
    )
}

/// Count the request in the metrics and log a failure.
fn answered(
    source: Option<&str>,
    ok_status: u16,
    result: Result<Value, Reject>,
) -> Result<Value, Reject> {
    match &result {
        Ok(v) => {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            switchyard_core::metrics::ingest_request(
                source,
                ok_status,
                n("accepted"),
                n("duplicates"),
            );
        }
        Err(r) => {
            switchyard_core::metrics::ingest_request(source, r.status, 0, 0);
            if r.status >= 500 {
                tracing::warn!(status = r.status, error = %r.message, "ingest failed");
            } else {
                // Neither the message nor the field: both can quote what the
                // client sent (a value, or a key like `attributes.<key>`), and
                // that may be PII. The client gets them in the response.
                tracing::debug!(status = r.status, "ingest rejected");
            }
        }
    }
    result
}

/// The outcome of an append that failed after the request may have reached
/// Redis: say so, and how to retry safely.
const UNKNOWN_OUTCOME: &str = "the outcome is unknown: some or all events may have been written. \
     Retry with the same ids, or with the same Idempotency-Key header: events already \
     written are then reported as duplicates, not written again";

/// `Content-Encoding` (415), then `Content-Length` against `server.max_body`
/// (413), then the body within `server.body_read_timeout`, decompressed.
/// The trace of the request (its valid `traceparent`, else a new one) is
/// recorded on the span.
async fn read_request(
    state: &Ingest,
    req: Request<Incoming>,
    source: &AuthSource,
    shutdown: &CancellationToken,
    before_body: impl FnOnce(&http::HeaderMap) -> Result<(), Reject>,
) -> Result<(Bytes, Option<String>), Reject> {
    let headers = req.headers();
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let encoding = Encoding::from_header(&codings.join(","))?;
    before_body(headers)?;
    let max = state.limits.max_body;
    let too_large = || {
        Reject::new(
            413,
            None,
            format!("body exceeds {max} bytes (server.max_body)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    // A valid `traceparent` is kept; without one the trace starts here.
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| switchyard_core::event::valid_traceparent(t))
        .map(str::to_string)
        .or_else(|| Some(switchyard_core::tracectx::new_traceparent()));
    let span = tracing::Span::current();
    span.record("source", source.name());
    span.record(
        "trace_id",
        switchyard_core::tracectx::trace_id(trace.as_deref()),
    );
    let body = read_body(
        req.into_body(),
        max,
        state.limits.body_read_timeout,
        shutdown,
        too_large,
    )
    .await?;
    Ok((super::decode_body(encoding, body, max)?, trace))
}

async fn ingest_inner<'a>(
    state: &'a Ingest,
    req: Request<Incoming>,
    shutdown: &CancellationToken,
    source_name: &mut Option<&'a str>,
) -> Result<Value, Reject> {
    let headers = req.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = state.auth.authenticate(auth)?;
    *source_name = Some(source.name());
    // CloudEvents (structured, batch, binary), else the native format.
    let ce_mode = cloudevents::mode(headers)?;
    let format = match ce_mode {
        Some(_) => None,
        None => Some(BodyFormat::from_content_type(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )?),
    };
    let mut idempotency_key = None;
    let (body, trace) = read_request(state, req, source, shutdown, |headers| {
        idempotency_key =
            super::idempotency_key(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
        Ok(())
    })
    .await?;
    let now = Utc::now();
    let (events, checked, topic_fields, labels) = match (format, ce_mode) {
        (Some(format), _) => {
            let items = split_body(format, &body, state.limits.max_batch)?;
            let mut events = Vec::with_capacity(items.len());
            // Ids the client gave may repeat (retries), and so may ids derived from
            // an Idempotency-Key: those are checked. Ids generated here cannot.
            let mut checked = Vec::with_capacity(items.len());
            let mut topic_fields = Vec::with_capacity(items.len());
            let mut labels = Vec::with_capacity(items.len());
            for (i, (label, v)) in items.into_iter().enumerate() {
                let client_id = v.get("id").is_some_and(|id| !id.is_null());
                let mut ev = to_event(&label, v, source.name(), trace.as_deref(), now)?;
                if let (false, Some(key)) = (client_id, &idempotency_key) {
                    ev.id = super::idempotent_id(source.name(), key, i);
                }
                checked.push(client_id || idempotency_key.is_some());
                topic_fields.push(format!("{label}.topic"));
                labels.push(label);
                events.push(ev);
            }
            (events, checked, topic_fields, labels)
        }
        (None, Some(mode)) => {
            let converted = cloudevents::events(
                &mode,
                &body,
                source.cloudevents(),
                source.name(),
                trace.as_deref(),
                now,
                state.limits.max_batch,
            )?;
            // Every CloudEvent has an id: all are checked.
            let checked = converted.iter().map(|c| c.checked).collect();
            let (fields, labels, events) = unzip(converted);
            (events, checked, fields, labels)
        }
        (None, None) => unreachable!("either a native format or a CloudEvents mode"),
    };
    append(state, source, events, &checked, &topic_fields, &labels).await
}

async fn segment_inner<'a>(
    state: &'a Ingest,
    route: segment::Route,
    req: Request<Incoming>,
    shutdown: &CancellationToken,
    source_name: &mut Option<&'a str>,
) -> Result<Value, Reject> {
    let headers = req.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = state.auth.authenticate_write_key(auth)?;
    *source_name = Some(source.name());
    let cfg = source
        .segment()
        .expect("a source found by its write key has a segment config");
    segment::check_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let (body, trace) = read_request(state, req, source, shutdown, |_| Ok(())).await?;
    let converted = segment::events(
        route,
        &body,
        cfg,
        source.name(),
        trace.as_deref(),
        Utc::now(),
        state.limits.max_batch,
    )?;
    // Messages without a messageId get ids generated here: not checked.
    let checked: Vec<bool> = converted.iter().map(|c| c.checked).collect();
    let (fields, labels, events) = unzip(converted);
    append(state, source, events, &checked, &fields, &labels).await
}

/// Topic fields, labels and events of converted messages.
fn unzip(
    converted: Vec<super::Converted>,
) -> (Vec<String>, Vec<String>, Vec<switchyard_core::event::Event>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for c in converted {
        out.0.push(c.topic_field);
        out.1.push(c.label);
        out.2.push(c.event);
    }
    out
}

/// The source's topic template and the schema registry on every event
/// (400 naming the field), the topic permission of every event (403 naming
/// its topic field), then the append and the 202 body: each event's id,
/// partition and stream id, or `duplicate: true`.
async fn append(
    state: &Ingest,
    source: &AuthSource,
    mut events: Vec<switchyard_core::event::Event>,
    checked: &[bool],
    topic_fields: &[String],
    labels: &[String],
) -> Result<Value, Reject> {
    for (ev, label) in events.iter_mut().zip(labels) {
        source.apply_topic_template(ev, label)?;
        if let Some(reg) = &state.schemas {
            reg.check(ev)
                .map_err(|v| Reject::new(400, Some(v.field(label)), v.to_string()))?;
        }
    }
    for (ev, field) in events.iter().zip(topic_fields) {
        if !source.allows(&ev.topic) {
            return Err(Reject::new(
                403,
                Some(field.clone()),
                format!(
                    "source `{}` may not publish to topic `{}` (sources.{}.topics)",
                    source.name(),
                    ev.topic,
                    source.name()
                ),
            ));
        }
    }
    if events.is_empty() {
        // An empty CloudEvents batch: nothing to write.
        return Ok(json!({"accepted": 0, "duplicates": 0, "events": []}));
    }
    let appended = state
        .log
        .append_checked(&events, |i| checked[i])
        .await
        .map_err(|e| match e {
            // Encoding happens before anything is sent.
            LogError::Codec(_) => Reject::new(500, None, format!("nothing was written: {e}")),
            // The pipeline may have reached Redis, and Redis may run it
            // later (a paused Redis resumes): the outcome is unknown.
            LogError::Unavailable(_) | LogError::Tls(_) => Reject::new(
                503,
                None,
                format!("the log did not answer ({e}); {UNKNOWN_OUTCOME}"),
            ),
            other => Reject::new(500, None, format!("{other}; {UNKNOWN_OUTCOME}")),
        })?;
    let mut duplicates = 0usize;
    let out: Vec<Value> = events
        .iter()
        .zip(&appended)
        .map(|(ev, a)| match &a.stream_id {
            Some(sid) => {
                tracing::debug_span!("event", id = %ev.id, trace_id = switchyard_core::tracectx::trace_id(ev.trace.as_deref()))
                    .in_scope(|| tracing::debug!(partition = a.partition, stream_id = %sid, "appended"));
                json!({"id": ev.id, "partition": a.partition, "stream_id": sid})
            }
            None => {
                duplicates += 1;
                json!({"id": ev.id, "partition": a.partition, "duplicate": true, "stream_id": a.original})
            }
        })
        .collect();
    Ok(json!({"accepted": events.len() - duplicates, "duplicates": duplicates, "events": out}))
}
