//! Captures the warnings and errors the node logs about connections, keyed by the peer
//! address they name (the `peer` field of the event or of its `rtmp` span), so that tests
//! can check that an offender was closed with a logged reason; and those about a
//! certificate file (the `cert` field).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One captured line: the event's message and its `reason` field (empty when absent).
#[derive(Debug, Clone)]
pub struct Logged {
    pub level: Level,
    pub message: String,
    pub reason: String,
}

static LOGGED: Mutex<Vec<(String, Logged)>> = Mutex::new(Vec::new());

/// What was logged at WARN or above about `peer`.
pub fn about(peer: SocketAddr) -> Vec<Logged> {
    about_key(&peer.to_string())
}

/// What was logged at WARN or above about the certificate file `path`.
pub fn about_cert(path: &std::path::Path) -> Vec<Logged> {
    about_key(&format!("cert:{}", path.display()))
}

fn about_key(key: &str) -> Vec<Logged> {
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == key)
        .map(|(_, l)| l.clone())
        .collect()
}

#[derive(Default)]
struct Fields {
    peer: Option<String>,
    cert: Option<String>,
    message: String,
    reason: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "peer" => self.peer.get_or_insert_with(String::new),
            "cert" => self.cert.get_or_insert_with(String::new),
            "message" => &mut self.message,
            "reason" => &mut self.reason,
            _ => return,
        };
        slot.clear();
        let _ = write!(slot, "{value:?}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "peer" => self.peer = Some(value.to_string()),
            "cert" => self.cert = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            "reason" => self.reason = value.to_string(),
            _ => {}
        }
    }
}

/// The peer recorded on a span.
struct SpanPeer(String);

pub struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(peer), Some(span)) = (f.peer, ctx.span(id)) {
            span.extensions_mut().insert(SpanPeer(peer));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let cert = f.cert.map(|c| format!("cert:{c}"));
        let peer = f.peer.or(cert).or_else(|| {
            ctx.event_scope(event)?
                .find_map(|s| s.extensions().get::<SpanPeer>().map(|p| p.0.clone()))
        });
        if let Some(peer) = peer {
            LOGGED.lock().unwrap().push((
                peer,
                Logged {
                    level,
                    message: f.message,
                    reason: f.reason,
                },
            ));
        }
    }
}
