//! The admin routes of the admin listener (`admin_listener.rs` checks the
//! token before calling [`route`]). One function, one `match`: add a route
//! here. `/admin/status` and `/admin/reload` are the runtime's (the same
//! handlers the main listener serves under `/admin/`).

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::admin_listener::{json_response, AdminCtx, Resp};

/// One authenticated admin request.
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Bytes,
}

pub async fn route(ctx: &AdminCtx, req: AdminRequest) -> Resp {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, p) if p.starts_with("/console/") => {
            crate::console::view(ctx, p, req.query.as_deref()).await
        }
        (_, p) if p.starts_with("/admin/") => match &ctx.runtime {
            Some(rt) => {
                let path = match &req.query {
                    Some(q) => format!("{}?{q}", req.path),
                    None => req.path.clone(),
                };
                let (status, v) = rt.handle(req.method.clone(), path, req.body).await;
                json_response(status, &v)
            }
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "no admin interface"}),
            ),
        },
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no admin route {}", req.path)}),
        ),
    }
}
