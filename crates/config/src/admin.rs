//! `[admin]`: the admin listener's address and token.

use std::net::SocketAddr;

use serde::Deserialize;
use switchyard_core::secret::Secret;

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (port 0 picks a free port; the address
    /// is logged as `admin listening`).
    pub listen: SocketAddr,
    /// Bearer token for the admin routes (not `/metrics`, `/healthz`,
    /// `/readyz`). Default: `server.admin_token`.
    #[serde(default)]
    pub token: Option<Secret>,
}
