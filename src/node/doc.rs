//! JSON documents as they are served: text byte-identical to Python's `json.dumps(obj)`
//! (separators `", "` and `": "`, `ensure_ascii=True`), which is what Nova's handler and
//! Ironic's configdrive builder produce. Clients that hash or compare documents see the same
//! bytes as from Nova.

use std::io::{self, Write};

use bytes::Bytes;
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use serde_json::{Map, Value};

/// A JSON document kept as the bytes it is served as: a few hundred bytes where a parsed
/// tree takes kilobytes. Files served whole go out as these bytes; the rest is parsed back
/// when a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doc(Bytes);

impl Default for Doc {
    /// `{}`.
    fn default() -> Doc {
        Doc(Bytes::from_static(b"{}"))
    }
}

impl Doc {
    pub(crate) fn new<T: Serialize + ?Sized>(value: &T) -> Doc {
        Doc(Bytes::from(to_vec(value)))
    }

    /// The document as served (a cheap, shared copy).
    pub(crate) fn body(&self) -> Bytes {
        self.0.clone()
    }

    pub(crate) fn value(&self) -> Value {
        // The bytes were written from a `Value` by this module: they always parse.
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// The document as an object (empty when it is not one).
    pub(crate) fn object(&self) -> Map<String, Value> {
        match self.value() {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        if s.is_ascii() {
            return w.write_all(s.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in s.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serialise like Python's `json.dumps`. Serialising a `serde_json::Value` cannot fail.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing into a Vec has no I/O error and Value keys are always strings.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Expected strings are what CPython 3.11 prints for json.dumps of the same object.
        let v = json!({"b": [1, 2, {"x": null}], "a": "caf\u{e9} \u{1f600}", "c": "q\"\n\t/"});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"b": [1, 2, {"x": null}], "a": "caf\u00e9 \ud83d\ude00", "c": "q\"\n\t/"}"#
        );
        assert_eq!(to_vec(&json!({})), b"{}");
        assert_eq!(to_vec(&json!([])), b"[]");
    }
}
