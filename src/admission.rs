//! Whether a publish may start: URL signing (`[[auth]]`, see `auth`) and the
//! `on_publish` HTTP hook, in that order. The connection task asks once per publish
//! and answers the client with the refusal's status code.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::auth;
use crate::names::PublishRequest;
use crate::node::Node;

/// How long the `on_publish` hook may take to answer.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a publish was refused: the status code sent and the metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadName,
    Unauthorized,
    Duplicate,
}

impl Refusal {
    /// The `onStatus` code the client receives.
    pub fn status_code(self) -> &'static str {
        match self {
            Refusal::BadName | Refusal::Duplicate => "NetStream.Publish.BadName",
            Refusal::Unauthorized => "NetStream.Publish.Unauthorized",
        }
    }

    /// The `reason` label of `livesnap_connections_rejected_total`.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Refusal::BadName => "bad_name",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Duplicate => "duplicate",
        }
    }
}

/// A refused publish: the kind and the message logged and sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
}

impl Refused {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> Refused {
        Refused {
            refusal,
            message: message.into(),
        }
    }
}

/// The JSON body POSTed to the `on_publish` hook.
#[derive(Debug, Serialize)]
struct HookRequest<'a> {
    action: &'static str,
    domain: &'a str,
    app: &'a str,
    stream: &'a str,
    query: &'a str,
    peer: String,
}

/// Checks the publish's signature (when `[[auth]]` covers its domain), then asks the
/// `on_publish` hook (when configured).
pub async fn check(
    node: &Node,
    req: &PublishRequest,
    tc_url: Option<&str>,
    peer: SocketAddr,
) -> Result<(), Refused> {
    let id = &req.id;
    if let Some(entry) = auth::entry_for(&node.settings.auth, &id.domain) {
        auth::check(
            entry,
            &id.app,
            &id.stream,
            &req.query,
            tc_url,
            node.clock.now_unix(),
        )
        .map_err(|e| Refused::new(Refusal::Unauthorized, format!("unauthorized: {e}")))?;
    }
    if let Some(url) = &node.settings.on_publish {
        ask_hook(url, req, peer).await.map_err(|why| {
            Refused::new(
                Refusal::Unauthorized,
                format!("unauthorized: on_publish hook {why}"),
            )
        })?;
    }
    Ok(())
}

/// Checks a play's signature, when `[[auth]]` covers its domain and `[play] public` is
/// off: a player signs its URL like a publisher (same key and validity). The
/// `on_publish` hook is not asked.
pub fn check_play(node: &Node, req: &PublishRequest, tc_url: Option<&str>) -> Result<(), Refused> {
    if node.settings.play.public {
        return Ok(());
    }
    let id = &req.id;
    if let Some(entry) = auth::entry_for(&node.settings.auth, &id.domain) {
        auth::check(
            entry,
            &id.app,
            &id.stream,
            &req.query,
            tc_url,
            node.clock.now_unix(),
        )
        .map_err(|e| Refused::new(Refusal::Unauthorized, format!("unauthorized: {e}")))?;
    }
    Ok(())
}

/// Asks the `on_publish` hook: 2xx allows; anything else, or no answer in time, denies.
async fn ask_hook(url: &str, req: &PublishRequest, peer: SocketAddr) -> Result<(), String> {
    let body = HookRequest {
        action: "publish",
        domain: &req.id.domain,
        app: &req.id.app,
        stream: &req.id.stream,
        query: &req.query,
        peer: peer.to_string(),
    };
    let client = reqwest::Client::builder()
        .timeout(HOOK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else {
                format!("failed: {e}")
            }
        })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status().as_u16()))
    }
}
