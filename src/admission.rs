//! Whether a publish may start: the peer's address (`[access] publish_from`), URL
//! signing (`[[auth]]`, see `auth`) and the `on_publish` HTTP hook, in that order; and
//! whether a play may (`[access] play_from`, signing unless `[play] public`, then the
//! `on_play` hook). The connection task asks once per publish or play and answers the
//! client with the refusal's status code.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::auth::{self, Requirement};
use crate::names::PublishRequest;
use crate::netlist::NetList;
use crate::node::{Access, Node};

/// How long the `on_publish` or `on_play` hook may take to answer.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a publish was refused: the status code sent and the metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadName,
    Unauthorized,
    /// `[[auth]]` entries exist, none covers the publish's domain, and unsigned
    /// publishes are not allowed.
    UnlistedDomain,
    Duplicate,
    /// Another domain's live publish of the same app and stream would share its keys.
    DuplicateKeys,
    /// The peer's address is not in `[access] publish_from` (or `play_from`).
    AddressNotAllowed,
}

impl Refusal {
    /// The `onStatus` code the client receives.
    pub fn status_code(self) -> &'static str {
        match self {
            Refusal::BadName | Refusal::Duplicate | Refusal::DuplicateKeys => {
                "NetStream.Publish.BadName"
            }
            Refusal::Unauthorized | Refusal::UnlistedDomain | Refusal::AddressNotAllowed => {
                "NetStream.Publish.Unauthorized"
            }
        }
    }

    /// The `reason` label of `livesnap_connections_rejected_total`.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Refusal::BadName => "bad_name",
            Refusal::Unauthorized => "unauthorized",
            Refusal::UnlistedDomain => "unlisted_domain",
            Refusal::Duplicate => "duplicate",
            Refusal::DuplicateKeys => "duplicate_keys",
            Refusal::AddressNotAllowed => "address_not_allowed",
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

/// The JSON body POSTed to the `on_publish` and `on_play` hooks.
#[derive(Debug, Serialize)]
struct HookRequest<'a> {
    action: &'static str,
    domain: &'a str,
    app: &'a str,
    stream: &'a str,
    query: &'a str,
    peer: String,
}

/// Checks the peer's address against `[access] publish_from`, the publish's signature
/// as the `[[auth]]` policy requires for its domain (refusing a domain no entry covers),
/// then asks the `on_publish` hook (when configured).
pub async fn check(
    node: &Node,
    req: &PublishRequest,
    tc_url: Option<&str>,
    peer: SocketAddr,
) -> Result<(), Refused> {
    let id = &req.id;
    let access = node.access();
    check_address(&access.publish_from, peer, "publish_from")?;
    check_signature(
        node,
        access.auth.requirement(&id.domain),
        req,
        tc_url,
        "unsigned publishes are not allowed",
    )?;
    if let Some(url) = &access.on_publish {
        ask_hook(url, "publish", req, peer).await?;
    }
    Ok(())
}

/// Whether a play may start under `access` (read once by the caller, who also applies
/// its `[play]` settings): the peer's address must be in `[access] play_from` (when
/// set); then, once `[[auth]]` exists, a player signs its URL like a publisher (with the
/// entry's `play_key`, else its publish keys) and a domain without an entry is refused,
/// unless `[play] public = true`; then the `on_play` hook (when configured) is asked,
/// public or not.
pub async fn check_play(
    node: &Node,
    access: &Access,
    req: &PublishRequest,
    tc_url: Option<&str>,
    peer: SocketAddr,
) -> Result<(), Refused> {
    check_address(&access.play_from, peer, "play_from")?;
    if !access.play.public {
        check_signature(
            node,
            access.auth.play_requirement(&req.id.domain),
            req,
            tc_url,
            "[play] public is off",
        )?;
    }
    if let Some(url) = &access.on_play {
        ask_hook(url, "play", req, peer).await?;
    }
    Ok(())
}

/// Checks the signature `requirement` asks of `req`; `unlisted` says why a domain without
/// an `[[auth]]` entry is refused.
fn check_signature(
    node: &Node,
    requirement: Requirement<'_>,
    req: &PublishRequest,
    tc_url: Option<&str>,
    unlisted: &str,
) -> Result<(), Refused> {
    let id = &req.id;
    match requirement {
        Requirement::None => Ok(()),
        Requirement::Signature(entry) => auth::check(
            entry,
            &id.app,
            &id.stream,
            &req.query,
            tc_url,
            node.clock.now_unix(),
        )
        .map_err(|e| Refused::new(Refusal::Unauthorized, format!("unauthorized: {e}"))),
        Requirement::Refused => Err(Refused::new(
            Refusal::UnlistedDomain,
            format!(
                "unauthorized: domain {:?} has no [[auth]] entry and {unlisted}",
                id.domain
            ),
        )),
    }
}

/// Refuses a peer outside an `[access]` list (`key` names it).
fn check_address(list: &NetList, peer: SocketAddr, key: &str) -> Result<(), Refused> {
    if list.allows(peer.ip()) {
        return Ok(());
    }
    Err(Refused::new(
        Refusal::AddressNotAllowed,
        format!(
            "unauthorized: address {} is not in [access] {key}",
            peer.ip()
        ),
    ))
}

/// Asks the `on_{action}` hook: 2xx allows; anything else, or no answer in time, denies.
async fn ask_hook(
    url: &str,
    action: &'static str,
    req: &PublishRequest,
    peer: SocketAddr,
) -> Result<(), Refused> {
    let refused = |why: String| {
        Refused::new(
            Refusal::Unauthorized,
            format!("unauthorized: on_{action} hook {why}"),
        )
    };
    let body = HookRequest {
        action,
        domain: &req.id.domain,
        app: &req.id.app,
        stream: &req.id.stream,
        query: &req.query,
        peer: peer.to_string(),
    };
    let client = reqwest::Client::builder()
        .timeout(HOOK_TIMEOUT)
        .build()
        .map_err(|e| refused(e.to_string()))?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .send()
        .await
        .map_err(|e| {
            refused(if e.is_timeout() {
                "timed out".to_string()
            } else {
                // Without the URL: this message reaches the client and the log, and
                // the hook's URL may carry a secret.
                format!("failed: {}", e.without_url())
            })
        })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(refused(format!("answered {}", resp.status().as_u16())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlisted_domain_is_an_unauthorized_publish_with_its_own_reason() {
        assert_eq!(
            Refusal::UnlistedDomain.status_code(),
            "NetStream.Publish.Unauthorized"
        );
        assert_eq!(Refusal::UnlistedDomain.metric_reason(), "unlisted_domain");
        assert_ne!(
            Refusal::UnlistedDomain.metric_reason(),
            Refusal::Unauthorized.metric_reason()
        );
    }
}
