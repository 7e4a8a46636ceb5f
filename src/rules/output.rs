//! A rule's extra outputs (`[[rules.outputs]]`, the API's `outputs` array): each one more
//! picture of every snapshot, with its own key templates, box (`width` and/or `height`,
//! `fit`), `format` and `quality`. The rule's own `overwrite_object` / `sequence_object` are
//! output 0: full size, JPEG at `[snapshot] quality`. Validation here names the field
//! (`rules[0].outputs[1].fit`); the key checks across all of a rule's templates live in
//! `spec`.

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Invalid};
use crate::storage::template::Template;

/// The largest `width` or `height` an output may ask for (WebP's limit; JPEG's is higher).
pub const MAX_SIDE: u32 = 16383;

/// How a picture fills an output's box (see `snapshot::resize` for the geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Keep the aspect ratio inside the box (default).
    #[default]
    Scale,
    /// Keep the aspect ratio and letterbox to the exact box (black bars).
    Pad,
    /// Fill the exact box, cutting what overflows (centred).
    Crop,
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Scale => "scale",
            Fit::Pad => "pad",
            Fit::Crop => "crop",
        }
    }
}

/// An output's picture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Jpeg,
    Webp,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Webp => "webp",
        }
    }

    /// The stored object's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
        }
    }

    /// The extension (with the dot) of this format's keys.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => ".jpg",
            Format::Webp => ".webp",
        }
    }

    /// The format a key's extension names, if any.
    pub fn of_key(key: &str) -> Option<Format> {
        [Format::Jpeg, Format::Webp]
            .into_iter()
            .find(|f| key.ends_with(f.extension()))
    }
}

/// One output as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Key template replaced at every snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite_object: Option<String>,
    /// Key template producing a new object at every snapshot (shares the snapshot's
    /// `{Sequence}` and `{UnixTimestamp}` with every other output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_object: Option<String>,
    /// Box width in pixels (1..=16383); absent: bounded by `height` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Box height in pixels (1..=16383); absent: bounded by `width` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// `scale` (default), `pad` or `crop`; `pad` and `crop` need `width` and `height`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// `jpeg` (default) or `webp`; the templates' extension must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// 1..=100; default `[snapshot] quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
}

/// A validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub overwrite_object: Option<Template>,
    pub sequence_object: Option<Template>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: Format,
    /// `None`: the node's `[snapshot] quality`.
    pub quality: Option<u8>,
}

impl OutputSpec {
    /// Validates one output; `at` is its key (`rules[0].outputs[1]`).
    pub fn validate(&self, at: &str) -> Result<Output, Invalid> {
        let key = |k: &str| format!("{at}.{k}");
        let format = self.format.unwrap_or_default();
        let fit = self.fit.unwrap_or_default();
        let parse = |field: &str, t: &str, sequential: bool| {
            let ext = format.extension();
            let parsed = if sequential {
                Template::parse_sequential_ending(t, ext)
            } else {
                Template::parse_ending(t, ext)
            };
            parsed.map_err(|e| invalid(key(field), format!("{t:?} {e}")))
        };
        let overwrite_object = self
            .overwrite_object
            .as_deref()
            .map(|t| parse("overwrite_object", t, false))
            .transpose()?;
        let sequence_object = self
            .sequence_object
            .as_deref()
            .map(|t| parse("sequence_object", t, true))
            .transpose()?;
        if overwrite_object.is_none() && sequence_object.is_none() {
            return Err(invalid(
                at,
                "needs overwrite_object, sequence_object or both",
            ));
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v {
                if !(1..=MAX_SIDE).contains(&v) {
                    return Err(invalid(
                        key(field),
                        format!("must be 1..={MAX_SIDE}, got {v}"),
                    ));
                }
            }
        }
        if fit != Fit::Scale && (self.width.is_none() || self.height.is_none()) {
            return Err(invalid(
                key("fit"),
                format!("{:?} needs both width and height", fit.as_str()),
            ));
        }
        if let Some(q) = self.quality {
            if !(1..=100).contains(&q) {
                return Err(invalid(key("quality"), format!("must be 1..=100, got {q}")));
            }
        }
        Ok(Output {
            overwrite_object,
            sequence_object,
            width: self.width,
            height: self.height,
            fit,
            format,
            quality: self.quality,
        })
    }
}

/// The fields of an output, as written.
pub const FIELDS: &[&str] = &[
    "overwrite_object",
    "sequence_object",
    "width",
    "height",
    "fit",
    "format",
    "quality",
];

/// Reads the API's `outputs` array field by field, so that a wrong type or an unknown
/// value is reported at its key (`outputs[1].fit`), not for the whole array.
pub fn outputs_from_json(value: &serde_json::Value) -> Result<Vec<OutputSpec>, Invalid> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid("outputs", "must be an array of output objects"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("outputs[{i}]");
            let object = item
                .as_object()
                .ok_or_else(|| invalid(&at, "must be an object"))?;
            if let Some(k) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err(invalid(
                    format!("{at}.{k}"),
                    format!("unknown field (known: {})", FIELDS.join(", ")),
                ));
            }
            fn field<T: serde::de::DeserializeOwned>(
                o: &serde_json::Map<String, serde_json::Value>,
                at: &str,
                k: &str,
            ) -> Result<Option<T>, Invalid> {
                match o.get(k) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(v) => serde_json::from_value(v.clone())
                        .map(Some)
                        .map_err(|e| invalid(format!("{at}.{k}"), e.to_string())),
                }
            }
            Ok(OutputSpec {
                overwrite_object: field(object, &at, "overwrite_object")?,
                sequence_object: field(object, &at, "sequence_object")?,
                width: field(object, &at, "width")?,
                height: field(object, &at, "height")?,
                fit: field(object, &at, "fit")?,
                format: field(object, &at, "format")?,
                quality: field(object, &at, "quality")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OutputSpec {
        OutputSpec {
            sequence_object: Some("{StreamName}/thumb/{Sequence}.webp".into()),
            width: Some(320),
            format: Some(Format::Webp),
            ..OutputSpec::default()
        }
    }

    #[test]
    fn errors_name_the_field() {
        let at = "rules[0].outputs[1]";
        let err = |s: OutputSpec| s.validate(at).unwrap_err().key;
        assert!(spec().validate(at).is_ok());
        assert_eq!(
            err(OutputSpec {
                fit: Some(Fit::Pad),
                ..spec()
            }),
            "rules[0].outputs[1].fit"
        );
        assert_eq!(
            err(OutputSpec {
                quality: Some(0),
                ..spec()
            }),
            "rules[0].outputs[1].quality"
        );
        assert_eq!(
            err(OutputSpec {
                width: Some(0),
                ..spec()
            }),
            "rules[0].outputs[1].width"
        );
        assert_eq!(
            err(OutputSpec {
                height: Some(20000),
                ..spec()
            }),
            "rules[0].outputs[1].height"
        );
        assert_eq!(
            err(OutputSpec {
                format: Some(Format::Jpeg),
                ..spec()
            }),
            "rules[0].outputs[1].sequence_object"
        );
        assert_eq!(
            err(OutputSpec {
                sequence_object: None,
                ..spec()
            }),
            "rules[0].outputs[1]"
        );
        assert_eq!(
            err(OutputSpec {
                sequence_object: Some("{StreamName}/thumb.webp".into()),
                ..spec()
            }),
            "rules[0].outputs[1].sequence_object"
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let key = |v: serde_json::Value| outputs_from_json(&v).unwrap_err().key;
        assert_eq!(
            key(serde_json::json!([{}, {"fit": "stretch"}])),
            "outputs[1].fit"
        );
        assert_eq!(key(serde_json::json!([{"width": -1}])), "outputs[0].width");
        assert_eq!(key(serde_json::json!([{"colour": 1}])), "outputs[0].colour");
        assert_eq!(key(serde_json::json!({"width": 1})), "outputs");
        let ok = outputs_from_json(&serde_json::json!([{"width": 320, "format": "webp"}]));
        assert_eq!(ok.unwrap()[0].format, Some(Format::Webp));
    }

    #[test]
    fn defaults_and_extensions() {
        let o = OutputSpec {
            overwrite_object: Some("{StreamName}/small.jpg".into()),
            height: Some(90),
            ..OutputSpec::default()
        }
        .validate("o")
        .unwrap();
        assert_eq!(
            (o.fit, o.format, o.quality),
            (Fit::Scale, Format::Jpeg, None)
        );
        assert_eq!(Format::of_key("a/b.webp"), Some(Format::Webp));
        assert_eq!(Format::of_key("a/b.png"), None);
        assert_eq!(Format::Webp.content_type(), "image/webp");
    }
}
