//! What to send: the requests a consumer's transform chain made of one
//! event. How to send them is the destination's business
//! (`switchyard-destinations`).

/// A request for the consumer's endpoint produced by a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRequest {
    /// Module that produced it.
    pub module: String,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Overrides the consumer's method.
    pub method: Option<String>,
    /// Appended to the consumer's base URL.
    pub path: Option<String>,
    /// Override configured headers of the same name.
    pub headers: Vec<(String, String)>,
}
