//! The client's AMF0 commands (built with rml_amf0) and the server's answers (checked by
//! `amf::validate_values`, then decoded by rml_amf0). No I/O.

use std::collections::HashMap;
use std::io::Cursor;

use rml_rtmp::rml_amf0::{self, Amf0Value};

use super::Status;
use crate::rtmp::amf::{self, AmfError};

/// Longest AMF0 string.
const MAX_STRING: usize = u16::MAX as usize;

/// Who is connecting: decides the `connect` object's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Publisher,
    Player,
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::Utf8String(v.to_owned())
}

fn n(v: f64) -> Amf0Value {
    Amf0Value::Number(v)
}

/// A command message payload. Every string must be ≤ 65535 bytes (checked by callers
/// through [`fits`]); rml_amf0 fails only on longer ones.
pub(super) fn encode(name: &str, tid: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut values = Vec::with_capacity(3 + args.len());
    values.push(s(name));
    values.push(n(tid));
    values.push(object);
    values.extend(args);
    rml_amf0::serialize(&values).expect("AMF0 strings were checked against 65535 bytes")
}

/// Whether `v` fits an AMF0 string.
pub(super) fn fits(v: &str) -> bool {
    v.len() <= MAX_STRING
}

/// `connect` with the fields ffmpeg sends as a publisher, or as a player.
pub(super) fn connect(tid: f64, app: &str, tc_url: &str, role: Role) -> Vec<u8> {
    let mut o = HashMap::new();
    o.insert("app".to_owned(), s(app));
    o.insert("tcUrl".to_owned(), s(tc_url));
    match role {
        Role::Publisher => {
            o.insert("type".to_owned(), s("nonprivate"));
            o.insert("flashVer".to_owned(), s("FMLE/3.0 (compatible; livesnap)"));
        }
        Role::Player => {
            o.insert("flashVer".to_owned(), s("LNX 9,0,124,2"));
            o.insert("fpad".to_owned(), Amf0Value::Boolean(false));
            o.insert("capabilities".to_owned(), n(15.0));
            o.insert("audioCodecs".to_owned(), n(4071.0));
            o.insert("videoCodecs".to_owned(), n(252.0));
            o.insert("videoFunction".to_owned(), n(1.0));
        }
    }
    encode("connect", tid, Amf0Value::Object(o), Vec::new())
}

/// A command whose arguments follow a null command object.
pub(super) fn call(name: &str, tid: f64, args: Vec<Amf0Value>) -> Vec<u8> {
    encode(name, tid, Amf0Value::Null, args)
}

pub(super) fn string(v: &str) -> Amf0Value {
    s(v)
}

pub(super) fn number(v: f64) -> Amf0Value {
    n(v)
}

/// A decoded command from the server.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reply {
    pub name: String,
    pub tid: f64,
    /// The values after the transaction id: command object, then arguments.
    pub rest: Vec<Amf0Value>,
}

impl Reply {
    /// The first object among the values that carries a string `code`: the info object of
    /// `onStatus`, `_result` and `_error`.
    pub fn status(&self) -> Option<Status> {
        self.rest.iter().find_map(|v| {
            let Amf0Value::Object(props) = v else {
                return None;
            };
            let text = |key: &str| match props.get(key) {
                Some(Amf0Value::Utf8String(t)) => Some(t.clone()),
                _ => None,
            };
            Some(Status {
                code: text("code")?,
                level: text("level").unwrap_or_default(),
                description: text("description").unwrap_or_default(),
            })
        })
    }

    /// The first number after the command object (`createStream`'s stream id).
    pub fn number(&self) -> Option<f64> {
        self.rest.iter().skip(1).find_map(|v| match v {
            Amf0Value::Number(x) => Some(*x),
            _ => None,
        })
    }
}

/// Decodes a command message (type 20) from the server, bounded by our AMF0 guard.
pub(super) fn decode(payload: &[u8]) -> Result<Reply, AmfError> {
    amf::validate_values(payload)?;
    let bad = |reason: String| AmfError::BadCommand { reason };
    let mut values = rml_amf0::deserialize(&mut Cursor::new(payload))
        .map_err(|e| bad(format!("rml_amf0: {e:?}")))?
        .into_iter();
    let name = match values.next() {
        Some(Amf0Value::Utf8String(name)) => name,
        _ => return Err(bad("command name must be a string".into())),
    };
    let tid = match values.next() {
        Some(Amf0Value::Number(tid)) => tid,
        None => 0.0,
        Some(_) => return Err(bad(format!("{name}: transaction id must be a number"))),
    };
    Ok(Reply {
        name,
        tid,
        rest: values.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_status() {
        let mut info = HashMap::new();
        info.insert("level".to_owned(), s("error"));
        info.insert("code".to_owned(), s("NetStream.Publish.BadName"));
        info.insert("description".to_owned(), s("Already publishing"));
        let bytes = call("onStatus", 0.0, vec![Amf0Value::Object(info)]);
        let r = decode(&bytes).unwrap();
        assert_eq!((r.name.as_str(), r.tid), ("onStatus", 0.0));
        let st = r.status().unwrap();
        assert!(st.is_error());
        assert_eq!(st.code, "NetStream.Publish.BadName");
        assert_eq!(
            st.to_string(),
            "NetStream.Publish.BadName (Already publishing)"
        );

        let r = decode(&call("_result", 4.0, vec![number(1.0)])).unwrap();
        assert_eq!(r.number(), Some(1.0));
        assert_eq!(r.status(), None);

        let c = decode(&connect(1.0, "live", "rtmp://h/live", Role::Player)).unwrap();
        assert_eq!(c.name, "connect");
        assert!(matches!(&c.rest[0], Amf0Value::Object(o) if o.len() == 8));
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        // 10,000 nested objects: our guard refuses before rml_amf0 recurses.
        let mut deep = call("_result", 1.0, Vec::new());
        deep.pop(); // the null
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert!(matches!(decode(&deep), Err(AmfError::TooDeep { .. })));
        // Truncated string, unknown marker, wrong name type.
        assert!(decode(&[0x02, 0, 10, b'a']).is_err());
        assert!(decode(&[0x0D]).is_err());
        assert!(decode(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // A strict array claiming 4 billion values.
        let mut arr = call("_result", 1.0, Vec::new());
        arr.extend_from_slice(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(decode(&arr).is_err());
        // Empty payload.
        assert!(decode(&[]).is_err());
    }
}
