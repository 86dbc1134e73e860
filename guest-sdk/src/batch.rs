//! Batching modules (contract 0.2): one request built from several events.
//!
//! Give `#[transform]` a `batch` function (and optionally `batch_response`):
//!
//! ```no_run
//! use switchyard_guest::{transform, Batch, BatchRequest, Config, Error, Event, ItemOutcome, Output, Request};
//!
//! #[transform(batch = batch, batch_response = response)]
//! fn transform(ev: Event) -> Result<Vec<Output>, Error> {
//!     Ok(vec![Output::json(&switchyard_guest::json!({"items": [ev.account_id]}))?])
//! }
//!
//! /// Events of several accounts (at most one pending event per account).
//! fn batch(events: Vec<Event>, _cfg: &Config) -> Result<Batch, Error> {
//!     let ids: Vec<&str> = events.iter().map(|e| e.account_id.as_str()).collect();
//!     let out = Output::json(&switchyard_guest::json!({ "items": ids }))?;
//!     Ok(Batch::default().request(out, 0..events.len()))
//! }
//!
//! /// The vendor's answer: one outcome per item, or none (the status decides).
//! fn response(_req: &Request, items: usize, status: u16, _body: &[u8]) -> Vec<ItemOutcome> {
//!     if status == 207 { vec![ItemOutcome::Ok; items] } else { vec![] }
//! }
//! ```

use crate::{Error, Output};

/// The batch requests built from a list of events. An event in no request
/// and not in `failed` is dropped (filtered by this module).
#[derive(Debug, Default)]
pub struct Batch {
    /// The requests, each with the indices of the events it carries, in the
    /// order of its items (the order the vendor reports per-item errors in).
    pub requests: Vec<BatchRequest>,
    /// Events the module cannot put in a request: (index, why).
    pub failed: Vec<(usize, Error)>,
}

/// One request of a batch.
#[derive(Debug)]
pub struct BatchRequest {
    /// Must be [`Output::Request`].
    pub request: Output,
    /// Indices into the batch's events.
    pub items: Vec<usize>,
}

impl Batch {
    /// Add a request carrying `items`.
    pub fn request(mut self, request: Output, items: impl IntoIterator<Item = usize>) -> Batch {
        self.requests.push(BatchRequest {
            request,
            items: items.into_iter().collect(),
        });
        self
    }
    /// Event `index` cannot be sent.
    pub fn fail(mut self, index: usize, e: Error) -> Batch {
        self.failed.push((index, e));
        self
    }
}

/// The vendor's verdict on one item of a batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Accepted.
    Ok,
    /// Rejected for now: retry the event.
    Retry(String),
    /// Rejected for good: the event goes to the dead-letter queue.
    Fail(String),
}
