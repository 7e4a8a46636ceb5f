//! `session`: the whole RTMP session after the handshake (`rtmp::session::Session`:
//! framing, AMF0 guard, rml_rtmp, our control handling) over arbitrary bytes, driven the
//! way the connection task drives it.
//!
//! Layout: one control byte (bit 0: reject publishes instead of accepting them; bit 1:
//! the small framing limits of [`super::framing::limits`] chosen by bits 2–7, and at most
//! 2 `createStream`), a narrow [`Split`] header, then the client's bytes after C2.
//!
//! Invariants: no panic and no stack overflow (rml_rtmp's recursive AMF0 decoder used to
//! overflow on deep nesting); after each push, as `conn` does, events are acted on even
//! if the push failed, and the session is dropped after an error or a rejected publish;
//! media events only while a publish is accepted and not ended, each within the media
//! cap; `Unpublished` only after an accepted publish; at most one publish request raised,
//! and so accepted, per connection; `is_publishing()` agrees; the bytes queued for the
//! peer stay within a fixed multiple of the bytes received (no amplification).

use livesnap::rtmp::session::{Event, Session, SessionError, SessionLimits};

use super::input::Split;

pub fn run(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let reject = control & 1 == 1;
    let limits = if control & 2 == 2 {
        SessionLimits {
            framing: super::framing::limits(control >> 2 | 1),
            max_streams: 2,
        }
    } else {
        SessionLimits::default()
    };
    let split = Split::parse(rest, false);
    let mut session = Session::new(limits.clone()).expect("session");
    session.output().clear();
    let mut events = Vec::new();
    let mut publishing = false;
    let mut requested = 0;
    let mut received = 0usize;
    let mut sent = 0usize;
    for piece in split.pieces() {
        received += piece.len();
        let failed = session.handle(piece, &mut events).is_err();
        let mut closed = false;
        for event in events.drain(..) {
            match event {
                Event::Video { data, .. } => {
                    assert!(publishing, "video outside a publish");
                    assert!(data.len() <= limits.framing.max_message_len as usize);
                }
                Event::Audio { data, .. } => {
                    assert!(publishing, "audio outside a publish");
                    assert!(data.len() <= limits.framing.max_message_len as usize);
                }
                Event::Metadata { data, .. } => {
                    assert!(publishing, "metadata outside a publish");
                    assert!(data.len() <= limits.framing.max_command_len as usize);
                }
                Event::PlayRequested { .. } => {
                    // One publish or play request per connection, answered like a publish.
                    requested += 1;
                    assert!(requested <= 1, "a second publish or play request raised");
                    if reject {
                        let r = session.reject_play("NetStream.Play.StreamNotFound", "fuzz");
                        assert!(r.is_ok(), "{r:?}");
                        closed = true;
                    } else if session.accept_play().is_err() {
                        closed = true;
                    }
                }
                Event::PlayStopped => assert!(!session.is_playing()),
                Event::Unpublished => {
                    assert!(publishing, "unpublish without a publish");
                    publishing = false;
                }
                Event::PublishRequested { .. } => {
                    // The connection task answers with accept_publish or reject_publish,
                    // which act on the one pending request: a second request would get
                    // the answer meant for another (found by this target: two `publish`
                    // in one read; see fuzz/artifacts-regressions/session/).
                    requested += 1;
                    assert!(requested <= 1, "a second publish request raised");
                    if reject {
                        let r = session.reject_publish("NetStream.Publish.BadName", "fuzz");
                        assert!(r.is_ok(), "{r:?}");
                        closed = true;
                    } else {
                        match session.accept_publish() {
                            Ok(()) => publishing = true,
                            // rml_rtmp refuses a publish on a stream never created.
                            Err(SessionError::Rml(_)) => closed = true,
                            Err(e) => panic!("accept_publish: {e}"),
                        }
                    }
                }
                Event::Connected { .. } => {}
            }
            if closed {
                break;
            }
        }
        assert_eq!(session.is_publishing(), publishing);
        sent += session.output().len();
        session.output().clear();
        assert!(
            sent <= 4096 + 16 * received,
            "{sent} bytes queued for {received} received"
        );
        if failed || closed {
            return;
        }
    }
}
