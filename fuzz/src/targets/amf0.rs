//! `amf0`: our AMF0 guard (`rtmp::amf`: `validate_values`, `parse_command`,
//! `data_message_name`) and, for whatever it lets through, rml_rtmp behind it.
//!
//! Layout: one mode byte, then a command (type 20) or data (type 18) message payload.
//! Mode bit 0: data instead of command; bits 1–2: the rml_rtmp session's state before the
//! message (fresh, connected, stream 1 created, publishing on stream 1); bits 3–4: the
//! message stream id (0, 1, 2, 0xFFFFFFFF).
//!
//! Invariants:
//! - no panic, whatever the payload;
//! - the three functions agree (same acceptance; a command has at least 3 values);
//! - the guard is never looser than rml_amf0: anything it accepts, rml_amf0 decodes to
//!   the same number of values, with the same name, transaction id, `app`, `tcUrl`,
//!   `flashVer` and publish arguments (a depth-bounded decode: nesting is capped at
//!   `MAX_AMF_DEPTH`, so rml_amf0's recursion is bounded);
//! - anything the guard accepts and the session glue would forward (every command;
//!   `@setDataFrame` with at least 3 values), rml_rtmp's `ServerSession` accepts without
//!   panicking and without error when fed via `write_single_chunk` after a big
//!   `SetChunkSize`, and the requests it raises can be accepted.

use std::collections::HashMap;
use std::io::Cursor;

use bytes::Bytes;
use livesnap::rtmp::amf::{self, Command};
use livesnap::rtmp::framing::{self, Message, TYPE_AMF0_COMMAND, TYPE_AMF0_DATA};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};

pub fn run(data: &[u8]) {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let count = amf::validate_values(payload);
    let command = amf::parse_command(payload);
    let name = amf::data_message_name(payload);
    assert_eq!(count.is_ok(), name.is_ok(), "{count:?} vs {name:?}");
    if let Ok(c) = &command {
        assert!(matches!(count, Ok(n) if n >= 3), "{c:?} but {count:?}");
    }
    let Ok(count) = count else {
        return;
    };

    let values = match rml_amf0::deserialize(&mut Cursor::new(payload)) {
        Ok(values) => values,
        Err(e) => panic!("guard accepted what rml_amf0 refuses: {e:?}"),
    };
    assert_eq!(values.len(), count, "top-level value count");
    if let Ok(Some(n)) = &name {
        assert_eq!(values[0], Amf0Value::Utf8String(n.clone()));
    }
    if let Ok(c) = &command {
        compare_command(c, &values);
    }

    let is_data = mode & 1 == 1;
    let forwarded = if is_data {
        matches!(name, Ok(Some(ref n)) if n == "@setDataFrame") && count >= 3
    } else {
        command.is_ok()
    };
    if forwarded {
        let stream_id = [0, 1, 2, u32::MAX][usize::from(mode >> 3) & 3];
        let type_id = if is_data {
            TYPE_AMF0_DATA
        } else {
            TYPE_AMF0_COMMAND
        };
        let mut rml = Rml::new(usize::from(mode >> 1) & 3);
        rml.feed(type_id, stream_id, payload);
    }
}

/// What the guard read must be what rml_amf0 decodes.
fn compare_command(c: &Command, values: &[Amf0Value]) {
    assert_eq!(values[0], Amf0Value::Utf8String(c.name.clone()), "name");
    match values[1] {
        Amf0Value::Number(n) => assert_eq!(n.to_bits(), c.transaction_id.to_bits()),
        ref other => panic!("transaction id decoded as {other:?}"),
    }
    let props = match &values[2] {
        Amf0Value::Object(props) => Some(props),
        Amf0Value::Null => None,
        other => panic!("command object decoded as {other:?}"),
    };
    if let Some(connect) = &c.connect {
        let props = props.expect("connect without an object");
        let string = |key: &str| match props.get(key) {
            Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
            _ => None,
        };
        assert_eq!(string("app").as_ref(), Some(&connect.app), "app");
        assert_eq!(string("tcUrl"), connect.tc_url, "tcUrl");
        assert_eq!(string("flashVer"), connect.flash_ver, "flashVer");
    }
    if let Some(publish) = &c.publish {
        assert_eq!(values[3], Amf0Value::Utf8String(publish.name.clone()));
        assert_eq!(
            values[4],
            Amf0Value::Utf8String(publish.publish_type.clone())
        );
    }
}

/// An rml_rtmp server session fed one whole message per chunk, as `rtmp::session` does.
struct Rml {
    session: ServerSession,
    bytes: Vec<u8>,
}

fn amf(values: &[Amf0Value]) -> Vec<u8> {
    rml_amf0::serialize(&values.to_vec()).expect("serialise a prelude command")
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::Utf8String(v.to_owned())
}

impl Rml {
    /// A session in `state`: 0 fresh, 1 connected, 2 stream 1 created, 3 publishing on it.
    fn new(state: usize) -> Rml {
        let (session, _) = ServerSession::new(ServerSessionConfig::new()).expect("session");
        let mut rml = Rml {
            session,
            bytes: Vec::new(),
        };
        let set = framing::set_chunk_size_chunk(framing::MAX_CHUNK_SIZE);
        rml.session.handle_input(&set).expect("SetChunkSize");
        let connect = HashMap::from([
            ("app".to_owned(), s("live")),
            ("tcUrl".to_owned(), s("rtmp://127.0.0.1/live")),
        ]);
        let prelude = [
            amf(&[
                s("connect"),
                Amf0Value::Number(1.0),
                Amf0Value::Object(connect),
            ]),
            amf(&[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null]),
            amf(&[
                s("publish"),
                Amf0Value::Number(3.0),
                Amf0Value::Null,
                s("cam1"),
                s("live"),
            ]),
        ];
        for (i, payload) in prelude.iter().take(state).enumerate() {
            let stream_id = if i == 2 { 1 } else { 0 };
            rml.feed(TYPE_AMF0_COMMAND, stream_id, payload);
        }
        rml
    }

    /// Feeds one message; it must be accepted, and so must every request it raises
    /// (a publish on a stream that was never created excepted: rml_rtmp refuses that
    /// with an error, which closes the connection).
    fn feed(&mut self, type_id: u8, stream_id: u32, payload: &[u8]) {
        let m = Message {
            csid: 3,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        };
        self.bytes.clear();
        framing::write_single_chunk(&m, 3, &mut self.bytes);
        let results = match self.session.handle_input(&self.bytes) {
            Ok(results) => results,
            Err(e) => panic!("rml_rtmp refused a message the guard accepted: {e:?}"),
        };
        for r in results {
            let ServerSessionResult::RaisedEvent(event) = r else {
                continue;
            };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    self.session
                        .accept_request(request_id)
                        .expect("accept connect");
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    match self.session.accept_request(request_id) {
                        Ok(_) | Err(ServerSessionError::ActionAttemptedOnInactiveStream { .. }) => {
                        }
                        Err(e) => panic!("accept publish: {e:?}"),
                    }
                }
                _ => {}
            }
        }
    }
}
