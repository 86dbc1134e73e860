//! What a transform returns.

use serde::Serialize;

use crate::bindings::switchyard::transform::types as wit;
use crate::{Error, Event};

/// A request for the consumer's endpoint. Unset fields fall back to the
/// consumer's configured method, path and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request body.
    pub body: Vec<u8>,
    /// `content-type` of the body.
    pub content_type: String,
    /// HTTP method; `None` = the consumer's configured method.
    pub method: Option<String>,
    /// Path (and query) appended to the consumer's base URL.
    pub path: Option<String>,
    /// Extra headers; they override configured headers of the same name.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    pub(crate) fn into_wit(self) -> wit::Request {
        wit::Request {
            body: self.body,
            content_type: self.content_type,
            method: self.method,
            path: self.path,
            headers: self.headers,
        }
    }

    pub(crate) fn from_wit(r: wit::Request) -> Request {
        Request {
            body: r.body,
            content_type: r.content_type,
            method: r.method,
            path: r.path,
            headers: r.headers,
        }
    }
}

/// One output of a transform. Returning no outputs drops the event.
///
/// Build requests with [`Output::request`] or [`Output::json`], then chain
/// [`Output::method`], [`Output::path`], [`Output::header`]:
///
/// ```
/// # use switchyard_guest::Output;
/// let out = Output::json(&serde_json::json!({"a": 1})).unwrap()
///     .method("POST")
///     .path("/v1/things")
///     .header("x-tenant", "acme");
/// assert_eq!(out.as_request().unwrap().method.as_deref(), Some("POST"));
/// ```
// Events are bigger than requests; boxing would make matching clumsier for
// no gain (a few outputs per call).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this request (ends the chain for this output).
    Request(Request),
    /// Hand this (rewritten) event to the next module of the chain.
    Event(Event),
}

impl Output {
    /// Pass an event on to the next module of the chain.
    pub fn event(ev: Event) -> Output {
        Output::Event(ev)
    }

    /// A request with this body and content type.
    pub fn request(body: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Output {
        Output::Request(Request {
            body: body.into(),
            content_type: content_type.into(),
            method: None,
            path: None,
            headers: Vec::new(),
        })
    }

    /// A request whose body is `value` as JSON (`application/json`).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Output, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::fatal(format!("cannot encode request body: {e}")))?;
        Ok(Output::request(body, "application/json"))
    }

    fn req_mut(&mut self, what: &str) -> &mut Request {
        match self {
            Output::Request(r) => r,
            // A programming error in the module: make it loud (a trap).
            Output::Event(_) => {
                panic!("Output::{what} called on an event output; it applies to requests only")
            }
        }
    }

    /// Set the HTTP method. Panics on an event output.
    pub fn method(mut self, method: impl Into<String>) -> Output {
        self.req_mut("method").method = Some(method.into());
        self
    }

    /// Set the path (and query) appended to the consumer's base URL. Panics on an event output.
    pub fn path(mut self, path: impl Into<String>) -> Output {
        self.req_mut("path").path = Some(path.into());
        self
    }

    /// Add a header, replacing one of the same name (case-insensitive). Panics on an event output.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Output {
        let (name, value) = (name.into(), value.into());
        let r = self.req_mut("header");
        r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        r.headers.push((name, value));
        self
    }

    /// Replace the content type. Panics on an event output.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Output {
        self.req_mut("content_type").content_type = content_type.into();
        self
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Output::Request(r) => Some(r),
            Output::Event(_) => None,
        }
    }

    /// The event, if this is one.
    pub fn as_event(&self) -> Option<&Event> {
        match self {
            Output::Event(e) => Some(e),
            Output::Request(_) => None,
        }
    }

    /// Convert to the WIT variant.
    pub fn into_wit(self) -> wit::Output {
        match self {
            Output::Event(ev) => wit::Output::Event(ev.into_wit()),
            Output::Request(r) => wit::Output::Request(r.into_wit()),
        }
    }
}

impl From<Event> for Output {
    fn from(ev: Event) -> Output {
        Output::Event(ev)
    }
}

impl From<Request> for Output {
    fn from(r: Request) -> Output {
        Output::Request(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let o = Output::request("hi", "text/plain")
            .method("PUT")
            .path("/x")
            .header("A", "1")
            .header("a", "2");
        let r = o.as_request().unwrap();
        assert_eq!(r.body, b"hi");
        assert_eq!(r.headers, vec![("a".to_string(), "2".to_string())]);
        assert_eq!(r.header("A"), Some("2"));
        match o.into_wit() {
            wit::Output::Request(w) => assert_eq!(w.method.as_deref(), Some("PUT")),
            _ => panic!(),
        }
        let j = Output::json(&[1, 2]).unwrap();
        assert_eq!(j.as_request().unwrap().content_type, "application/json");
        assert_eq!(
            j.as_request().unwrap().json().unwrap(),
            serde_json::json!([1, 2])
        );
    }

    #[test]
    #[should_panic(expected = "event output")]
    fn request_builder_on_event_panics() {
        let _ = Output::event(Event::new("t", crate::Op::Event)).method("POST");
    }
}
