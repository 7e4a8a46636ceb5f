//! AMF0 guard: checks the AMF0 values of command (type 20) and data (type 18) messages
//! before they are re-serialised into rml_rtmp, so that its decoder (rml_amf0 0.3) and its
//! `ServerSession` cannot recurse without bound or panic on them.
//!
//! Owns: an iterative AMF0 walker (no recursion, every length checked against the bytes
//! left) and small readers for the few fields the session glue needs. It builds no
//! `Amf0Value` trees and touches no socket.
//!
//! What rml_amf0 0.3 decodes, and so all this module accepts: number 0x00, boolean 0x01,
//! string 0x02, object 0x03, null 0x05, undefined 0x06, ECMA array 0x08 (decoded like an
//! object, ending in 00 00 09), strict array 0x0A, and object end 0x09 only where it closes
//! an object. Movieclip 0x04, reference 0x07, date 0x0B, long string 0x0C, unsupported
//! 0x0D, recordset 0x0E, XML 0x0F, typed object 0x10 and the AMF3 switch 0x11 are rejected.
//! Stricter than rml_amf0 on purpose: an object end at top level (rml_amf0 silently stops
//! there), a strict array with fewer values than its count, and invalid UTF-8 are errors.

/// Deepest nesting of objects, ECMA arrays and strict arrays accepted; a top-level object
/// is depth 1.
pub const MAX_AMF_DEPTH: usize = 32;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;

/// Why an AMF0 payload was refused. Offsets are byte offsets into the message payload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AmfError {
    #[error("AMF0 nesting depth {depth} exceeds {MAX_AMF_DEPTH}")]
    TooDeep { depth: usize },
    #[error("AMF0 value truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("unsupported AMF0 marker 0x{marker:02x} at byte {offset}")]
    UnsupportedMarker { marker: u8, offset: usize },
    #[error("AMF0 object-end marker outside an object at byte {offset}")]
    UnexpectedObjectEnd { offset: usize },
    #[error("AMF0 empty property name not followed by object end at byte {offset}")]
    MissingObjectEnd { offset: usize },
    #[error("AMF0 string at byte {offset} is not UTF-8")]
    InvalidUtf8 { offset: usize },
    #[error("bad AMF0 command: {reason}")]
    BadCommand { reason: String },
}

/// A top-level value as seen by the walker: scalars with their value, containers by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Number(f64),
    Boolean(bool),
    Str(&'a str),
    Null,
    Undefined,
    Object,
    EcmaArray,
    StrictArray,
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Inside an object or ECMA array: expecting a property name or the end.
    Object,
    /// Inside a strict array with this many values still to read.
    Array { remaining: u32 },
}

/// Iterative AMF0 reader: nesting lives in `stack`, bounded by `MAX_AMF_DEPTH`.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    stack: Vec<Frame>,
}

impl<'a> Walker<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Walker {
            buf,
            pos: 0,
            stack: Vec::new(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let buf: &'a [u8] = self.buf;
        match buf.get(self.pos..self.pos + n) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(AmfError::Truncated { offset: self.pos }),
        }
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A UTF-8 string of `len` bytes; `offset` names where its length field started.
    fn utf8(&mut self, len: u16, offset: usize) -> Result<&'a str, AmfError> {
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|_| AmfError::InvalidUtf8 { offset })
    }

    fn open(&mut self, frame: Frame) -> Result<(), AmfError> {
        let depth = self.stack.len() + 1;
        if depth > MAX_AMF_DEPTH {
            return Err(AmfError::TooDeep { depth });
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Reads one marker and its fixed part; a container is opened on the stack, not read.
    fn read_one(&mut self) -> Result<Value<'a>, AmfError> {
        let offset = self.pos;
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => {
                let b = self.take(8)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                Value::Number(f64::from_be_bytes(raw))
            }
            // rml_amf0 reads any byte other than 1 as false.
            BOOLEAN => Value::Boolean(self.u8()? == 1),
            STRING => {
                let len_offset = self.pos;
                let len = self.u16()?;
                Value::Str(self.utf8(len, len_offset)?)
            }
            OBJECT => {
                self.open(Frame::Object)?;
                Value::Object
            }
            NULL => Value::Null,
            UNDEFINED => Value::Undefined,
            ECMA_ARRAY => {
                // The count is advisory; the array ends with 00 00 09 like an object.
                self.u32()?;
                self.open(Frame::Object)?;
                Value::EcmaArray
            }
            STRICT_ARRAY => {
                let remaining = self.u32()?;
                self.open(Frame::Array { remaining })?;
                Value::StrictArray
            }
            OBJECT_END => return Err(AmfError::UnexpectedObjectEnd { offset }),
            _ => return Err(AmfError::UnsupportedMarker { marker, offset }),
        })
    }

    /// Reads one complete value, everything nested in it included. When `props` is given
    /// and the value is an object or ECMA array, its direct properties are pushed onto it.
    fn read_value(
        &mut self,
        mut props: Option<&mut Vec<(&'a str, Value<'a>)>>,
    ) -> Result<Value<'a>, AmfError> {
        let top = self.read_one()?;
        while let Some(frame) = self.stack.last_mut() {
            match frame {
                Frame::Array { remaining: 0 } => {
                    self.stack.pop();
                }
                Frame::Array { remaining } => {
                    *remaining -= 1;
                    self.read_one()?;
                }
                Frame::Object => {
                    let depth = self.stack.len();
                    let name_offset = self.pos;
                    let name_len = self.u16()?;
                    if name_len == 0 {
                        if self.u8()? != OBJECT_END {
                            return Err(AmfError::MissingObjectEnd {
                                offset: name_offset,
                            });
                        }
                        self.stack.pop();
                        continue;
                    }
                    let name = self.utf8(name_len, name_offset)?;
                    let value = self.read_one()?;
                    if depth == 1 {
                        if let Some(props) = props.as_deref_mut() {
                            props.push((name, value));
                        }
                    }
                }
            }
        }
        Ok(top)
    }

    /// Reads every remaining top-level value, collecting the direct properties of the
    /// value at index `props_of` into `props`.
    fn read_all(
        &mut self,
        props_of: usize,
        props: &mut Vec<(&'a str, Value<'a>)>,
    ) -> Result<Vec<Value<'a>>, AmfError> {
        let mut values = Vec::new();
        while !self.at_end() {
            let wanted = (values.len() == props_of).then_some(&mut *props);
            values.push(self.read_value(wanted)?);
        }
        Ok(values)
    }
}

/// Walks the AMF0 values of a command or data message, rejecting nesting deeper than
/// [`MAX_AMF_DEPTH`], truncated values, invalid UTF-8 and markers rml_amf0 cannot decode.
/// Returns the number of top-level values.
pub fn validate_values(payload: &[u8]) -> Result<usize, AmfError> {
    let mut walker = Walker::new(payload);
    let mut count = 0;
    while !walker.at_end() {
        walker.read_value(None)?;
        count += 1;
    }
    Ok(count)
}

/// `connect` fields the session glue needs. `app` is as sent (rml_rtmp strips one
/// trailing `/` from the app name it reports).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectInfo {
    pub app: String,
    pub tc_url: Option<String>,
    pub flash_ver: Option<String>,
}

/// `publish` arguments: the full name including any `?query`, and the publish type
/// (`live`, `record` or `append` for rml_rtmp to accept it; not checked here).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishInfo {
    pub name: String,
    pub publish_type: String,
}

/// Summary of a validated AMF0 command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    pub connect: Option<ConnectInfo>,
    pub publish: Option<PublishInfo>,
}

fn bad_command(reason: &str) -> AmfError {
    AmfError::BadCommand {
        reason: reason.to_owned(),
    }
}

/// The last property called `name` (rml_amf0 keeps the last of duplicates).
fn property<'a>(props: &[(&'a str, Value<'a>)], name: &str) -> Option<Value<'a>> {
    props
        .iter()
        .rev()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
}

fn string_property(props: &[(&str, Value<'_>)], name: &str) -> Option<String> {
    match property(props, name) {
        Some(Value::Str(s)) => Some(s.to_owned()),
        _ => None,
    }
}

/// Validates a command message so that rml_rtmp can neither panic nor recurse on it:
/// at least 3 values (rml_rtmp drains 3 unconditionally), a string name, a number
/// transaction id, an object/ECMA array or null third value; `connect` needs an object
/// with a string `app`, `publish` a string name and a string publish type. Other commands
/// rml_rtmp handles (createStream, deleteStream, closeStream, play) check their own
/// argument counts and need nothing more.
pub fn parse_command(payload: &[u8]) -> Result<Command, AmfError> {
    let mut walker = Walker::new(payload);
    let mut props = Vec::new();
    let values = walker.read_all(2, &mut props)?;
    if values.len() < 3 {
        return Err(AmfError::BadCommand {
            reason: format!(
                "a command needs a name, a transaction id and an object, got {} value(s)",
                values.len()
            ),
        });
    }
    let Value::Str(name) = values[0] else {
        return Err(bad_command("command name must be a string"));
    };
    let Value::Number(transaction_id) = values[1] else {
        return Err(bad_command("transaction id must be a number"));
    };
    let has_object = matches!(values[2], Value::Object | Value::EcmaArray);
    if !has_object && values[2] != Value::Null {
        return Err(bad_command("command object must be an object or null"));
    }

    let mut command = Command {
        name: name.to_owned(),
        transaction_id,
        connect: None,
        publish: None,
    };
    match name {
        "connect" => {
            if !has_object {
                return Err(bad_command("connect needs a command object"));
            }
            let Some(Value::Str(app)) = property(&props, "app") else {
                return Err(bad_command("connect needs an app string"));
            };
            command.connect = Some(ConnectInfo {
                app: app.to_owned(),
                tc_url: string_property(&props, "tcUrl"),
                flash_ver: string_property(&props, "flashVer"),
            });
        }
        "publish" => {
            let Some(&Value::Str(stream)) = values.get(3) else {
                return Err(bad_command("publish needs a stream name string"));
            };
            let Some(&Value::Str(publish_type)) = values.get(4) else {
                return Err(bad_command("publish needs a publish type string"));
            };
            command.publish = Some(PublishInfo {
                name: stream.to_owned(),
                publish_type: publish_type.to_owned(),
            });
        }
        _ => {}
    }
    Ok(command)
}

/// For a data message (type 18), after the same validation as [`validate_values`]: the
/// first value if it is a string (`@setDataFrame`, `onMetaData`, ...). Shape is not
/// checked here: rml_rtmp indexes past `@setDataFrame` without checking, so the caller
/// must not feed it an `@setDataFrame` with fewer than 3 values.
pub fn data_message_name(payload: &[u8]) -> Result<Option<String>, AmfError> {
    let values = Walker::new(payload).read_all(usize::MAX, &mut Vec::new())?;
    Ok(match values.first() {
        Some(Value::Str(name)) => Some((*name).to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use std::collections::HashMap;
    use std::io::Cursor;

    // A tiny ordered AMF0 writer, so that test payloads keep the property order real
    // encoders use (rml_amf0 serialises objects from a HashMap).
    fn s(v: &str) -> Vec<u8> {
        let mut b = vec![STRING];
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
        b
    }
    fn n(v: f64) -> Vec<u8> {
        let mut b = vec![NUMBER];
        b.extend_from_slice(&v.to_be_bytes());
        b
    }
    fn props(b: &mut Vec<u8>, props: &[(&str, Vec<u8>)]) {
        for (name, value) in props {
            b.extend_from_slice(&(name.len() as u16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(value);
        }
        b.extend_from_slice(&[0, 0, OBJECT_END]);
    }
    fn obj(p: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![OBJECT];
        props(&mut b, p);
        b
    }
    fn ecma(p: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![ECMA_ARRAY];
        b.extend_from_slice(&(p.len() as u32).to_be_bytes());
        props(&mut b, p);
        b
    }
    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// ffmpeg 5.1's connect when publishing to rtmp://example.com:1935/live.
    fn ffmpeg_connect() -> Vec<u8> {
        cat(&[
            s("connect"),
            n(1.0),
            obj(&[
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("flashVer", s("FMLE/3.0 (compatible; Lavf59.27.100)")),
                ("tcUrl", s("rtmp://example.com:1935/live")),
            ]),
        ])
    }

    fn ffmpeg_publish() -> Vec<u8> {
        cat(&[
            s("publish"),
            n(5.0),
            vec![NULL],
            s("cam1?token=x"),
            s("live"),
        ])
    }

    fn rml_count(payload: &[u8]) -> Option<usize> {
        rml_amf0::deserialize(&mut Cursor::new(payload))
            .ok()
            .map(|v| v.len())
    }

    /// `depth` objects `{k: {k: ... {k: null}}}` or strict arrays `[[... [null]]]`.
    fn nested(depth: usize, array: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..depth {
            if array {
                b.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
            } else {
                b.push(OBJECT);
                b.extend_from_slice(&[0, 1, b'k']);
            }
        }
        b.push(NULL);
        for _ in 0..depth {
            if !array {
                b.extend_from_slice(&[0, 0, OBJECT_END]);
            }
        }
        b
    }

    #[test]
    fn values_written_by_rml_amf0_validate() {
        let inner = HashMap::from([
            ("x".to_owned(), Amf0Value::Number(1.5)),
            ("s".to_owned(), Amf0Value::Utf8String("é∂".into())),
        ]);
        let values = vec![
            Amf0Value::Utf8String("onStatus".into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::Boolean(true),
            Amf0Value::Object(HashMap::from([
                ("inner".to_owned(), Amf0Value::Object(inner)),
                ("empty".to_owned(), Amf0Value::Utf8String(String::new())),
            ])),
            Amf0Value::StrictArray(vec![Amf0Value::Number(2.0), Amf0Value::Null]),
        ];
        let bytes = rml_amf0::serialize(&values).unwrap();
        assert_eq!(validate_values(&bytes), Ok(7));
        assert_eq!(validate_values(&[]), Ok(0));
        for payload in [ffmpeg_connect(), ffmpeg_publish(), metadata()] {
            assert_eq!(validate_values(&payload).ok(), rml_count(&payload));
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_rejected() {
        for array in [false, true] {
            let ok = nested(MAX_AMF_DEPTH, array);
            assert_eq!(validate_values(&ok), Ok(1), "array={array}");
            assert_eq!(rml_count(&ok), Some(1), "rml_amf0 agrees, array={array}");
            assert_eq!(
                validate_values(&nested(MAX_AMF_DEPTH + 1, array)),
                Err(AmfError::TooDeep { depth: 33 })
            );
            // Far too deep for a recursive decoder: rejected at depth 33, no recursion.
            assert_eq!(
                validate_values(&nested(10_000, array)),
                Err(AmfError::TooDeep { depth: 33 })
            );
        }
        // Inside a command, in an argument after the object.
        let mut cmd = cat(&[s("play"), n(0.0), vec![NULL]]);
        cmd.extend_from_slice(&nested(40, false));
        assert_eq!(parse_command(&cmd), Err(AmfError::TooDeep { depth: 33 }));
    }

    #[test]
    fn every_truncation_of_a_real_connect_is_rejected() {
        let full = ffmpeg_connect();
        let boundaries = [0, s("connect").len(), s("connect").len() + 9];
        for cut in 0..full.len() {
            let prefix = &full[..cut];
            assert!(parse_command(prefix).is_err(), "cut {cut}");
            match boundaries.iter().position(|&b| b == cut) {
                Some(values) => assert_eq!(validate_values(prefix), Ok(values)),
                None => assert!(
                    matches!(validate_values(prefix), Err(AmfError::Truncated { .. })),
                    "cut {cut}: {:?}",
                    validate_values(prefix)
                ),
            }
        }
        assert!(parse_command(&full).is_ok());
    }

    #[test]
    fn markers_rml_amf0_cannot_decode_are_rejected() {
        let supported = [
            NUMBER,
            BOOLEAN,
            STRING,
            OBJECT,
            NULL,
            UNDEFINED,
            ECMA_ARRAY,
            STRICT_ARRAY,
        ];
        for marker in 0..=255u8 {
            if supported.contains(&marker) || marker == OBJECT_END {
                continue;
            }
            assert_eq!(
                validate_values(&[marker, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(AmfError::UnsupportedMarker { marker, offset: 0 })
            );
            // Same set as rml_amf0's decoder.
            assert!(matches!(
                rml_amf0::deserialize(&mut Cursor::new(vec![marker])),
                Err(rml_amf0::Amf0DeserializationError::UnknownMarker { .. })
            ));
        }
        for marker in supported {
            assert!(!matches!(
                rml_amf0::deserialize(&mut Cursor::new(vec![marker])),
                Err(rml_amf0::Amf0DeserializationError::UnknownMarker { .. })
            ));
        }
        // Nested: a date inside an object, with its offset.
        let payload = cat(&[s("x"), obj(&[("d", vec![0x0B; 11])])]);
        assert_eq!(
            validate_values(&payload),
            Err(AmfError::UnsupportedMarker {
                marker: 0x0B,
                offset: 4 + 1 + 3
            })
        );
    }

    #[test]
    fn malformed_structure_is_rejected() {
        assert_eq!(
            validate_values(&[OBJECT_END]),
            Err(AmfError::UnexpectedObjectEnd { offset: 0 })
        );
        assert_eq!(
            validate_values(&[OBJECT, 0, 1, b'k', OBJECT_END]),
            Err(AmfError::UnexpectedObjectEnd { offset: 4 })
        );
        assert_eq!(
            validate_values(&[OBJECT, 0, 0, NULL]),
            Err(AmfError::MissingObjectEnd { offset: 1 })
        );
        assert_eq!(
            validate_values(&[STRING, 0, 2, 0xC3, 0x28]),
            Err(AmfError::InvalidUtf8 { offset: 1 })
        );
        // A strict array announcing more values than follow.
        assert_eq!(
            validate_values(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, NULL]),
            Err(AmfError::Truncated { offset: 6 })
        );
        assert_eq!(
            validate_values(&[STRING, 0xFF, 0xFF, b'a']),
            Err(AmfError::Truncated { offset: 3 })
        );
    }

    #[test]
    fn parses_ffmpeg_connect_and_publish() {
        let connect = parse_command(&ffmpeg_connect()).unwrap();
        assert_eq!(connect.name, "connect");
        assert_eq!(connect.transaction_id, 1.0);
        assert_eq!(
            connect.connect,
            Some(ConnectInfo {
                app: "live".into(),
                tc_url: Some("rtmp://example.com:1935/live".into()),
                flash_ver: Some("FMLE/3.0 (compatible; Lavf59.27.100)".into()),
            })
        );
        assert_eq!(connect.publish, None);

        let publish = parse_command(&ffmpeg_publish()).unwrap();
        assert_eq!(
            (publish.name.as_str(), publish.transaction_id),
            ("publish", 5.0)
        );
        assert_eq!(
            publish.publish,
            Some(PublishInfo {
                name: "cam1?token=x".into(),
                publish_type: "live".into(),
            })
        );

        // An ECMA array as the command object, no tcUrl, duplicate app: the last wins,
        // as in rml_amf0's HashMap.
        let odd = cat(&[
            s("connect"),
            n(1.0),
            ecma(&[("app", s("first")), ("app", s("app/sub"))]),
        ]);
        let info = parse_command(&odd).unwrap().connect.unwrap();
        assert_eq!((info.app.as_str(), info.tc_url), ("app/sub", None));

        let create = parse_command(&cat(&[s("createStream"), n(4.0), vec![NULL]])).unwrap();
        assert_eq!((create.connect, create.publish), (None, None));
    }

    #[test]
    fn short_or_misshapen_commands_are_rejected() {
        let bad = |payload: Vec<u8>| match parse_command(&payload) {
            Err(AmfError::BadCommand { reason }) => reason,
            other => panic!("expected BadCommand, got {other:?}"),
        };
        assert!(bad(s("publish")).contains("got 1 value"));
        assert!(bad(cat(&[s("connect"), n(1.0)])).contains("got 2 value"));
        assert!(bad(Vec::new()).contains("got 0 value"));
        assert!(bad(cat(&[s("publish"), n(5.0), vec![NULL]])).contains("stream name"));
        assert!(bad(cat(&[s("publish"), n(5.0), vec![NULL], s("cam1")])).contains("publish type"));
        assert!(
            bad(cat(&[s("publish"), n(5.0), vec![NULL], n(1.0), s("live")]))
                .contains("stream name")
        );
        assert!(bad(cat(&[s("connect"), n(1.0), vec![NULL]])).contains("command object"));
        assert!(bad(cat(&[s("connect"), n(1.0), obj(&[("app", n(3.0))])])).contains("app"));
        assert!(bad(cat(&[s("connect"), n(1.0), obj(&[])])).contains("app"));
        assert!(bad(cat(&[n(1.0), n(1.0), vec![NULL]])).contains("name"));
        assert!(bad(cat(&[s("x"), s("1"), vec![NULL]])).contains("transaction"));
        assert!(bad(cat(&[s("x"), n(1.0), s("o")])).contains("object"));
    }

    fn metadata() -> Vec<u8> {
        cat(&[
            s("@setDataFrame"),
            s("onMetaData"),
            ecma(&[
                ("width", n(1280.0)),
                ("height", n(720.0)),
                ("encoder", s("Lavf59.27.100")),
            ]),
        ])
    }

    #[test]
    fn data_message_names() {
        assert_eq!(
            data_message_name(&metadata()),
            Ok(Some("@setDataFrame".into()))
        );
        assert_eq!(
            data_message_name(&cat(&[s("onMetaData"), obj(&[])])),
            Ok(Some("onMetaData".into()))
        );
        assert_eq!(data_message_name(&n(1.0)), Ok(None));
        assert_eq!(data_message_name(&[]), Ok(None));
        // Short @setDataFrame is the caller's to drop (see the function docs).
        assert_eq!(
            data_message_name(&s("@setDataFrame")),
            Ok(Some("@setDataFrame".into()))
        );
        assert_eq!(
            data_message_name(&cat(&[s("@setDataFrame"), s("onCuePoint")])),
            Ok(Some("@setDataFrame".into()))
        );
        assert!(matches!(
            data_message_name(&cat(&[s("onMetaData"), vec![0x11]])),
            Err(AmfError::UnsupportedMarker { marker: 0x11, .. })
        ));
    }
}
