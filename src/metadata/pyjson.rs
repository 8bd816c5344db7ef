//! JSON text byte-identical to Python's `json.dumps(obj)` (separators `", "` and `": "`,
//! `ensure_ascii=True`), which is what Nova's handler and Ironic's configdrive builder
//! produce. Clients that hash or compare documents see the same bytes as from Nova.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

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
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
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
