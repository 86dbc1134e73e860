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

impl OutRequest {
    /// The canonical event as JSON: what a consumer without modules receives,
    /// and what an event leaving the last module becomes (`module` names it).
    pub fn canonical_json(ev: &crate::event::Event, module: &str) -> OutRequest {
        OutRequest {
            module: module.to_string(),
            body: serde_json::to_vec(ev).expect("an event always serialises to JSON"),
            content_type: "application/json".into(),
            method: None,
            path: None,
            headers: Vec::new(),
        }
    }
}
