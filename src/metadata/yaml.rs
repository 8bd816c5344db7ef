//! JSON values written as block YAML that cloud-init's reader (PyYAML, YAML 1.1) reads
//! back as the same values. Every string is double-quoted: YAML 1.1 takes plain `yes`,
//! `on` or `off` for booleans, `0755` for an octal number and a MAC address such as
//! `52:54:00:12:34:00` for a base-60 integer. Characters PyYAML refuses in a stream (C0
//! and C1 controls) or reads as line breaks (NEL, U+2028, U+2029) are escaped.

use std::fmt::Write;

use serde_json::Value;

/// `value` as a YAML document (a mapping or a sequence at the top, block style).
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        other => {
            out.push_str(&inline(other).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// A value that fits on its key's line: a scalar, `{}` or `[]`.
fn inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => quoted(s),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        _ => return None,
    })
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        let _ = write!(out, "{:indent$}{}:", "", key(k));
        nested(out, v, indent + 2);
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for v in items {
        match inline(v) {
            Some(s) => {
                let _ = writeln!(out, "{:indent$}- {s}", "");
            }
            None => {
                // The item's first line starts after `- `, the rest line up with it.
                let mut inner = String::new();
                nested_block(&mut inner, v, indent + 2);
                let _ = write!(out, "{:indent$}- {}", "", &inner[indent + 2..]);
            }
        }
    }
}

/// What follows `key:`: the value on the same line, or a block below it.
fn nested(out: &mut String, v: &Value, indent: usize) {
    match inline(v) {
        Some(s) => {
            let _ = writeln!(out, " {s}");
        }
        None => {
            out.push('\n');
            nested_block(out, v, indent);
        }
    }
}

fn nested_block(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) => mapping(out, m, indent),
        Value::Array(a) => sequence(out, a, indent),
        _ => {}
    }
}

/// A key as written: plain when YAML 1.1 reads it as that very string, else quoted.
fn key(k: &str) -> String {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !WORDS.iter().any(|w| w.eq_ignore_ascii_case(k));
    if plain {
        k.to_string()
    } else {
        quoted(k)
    }
}

/// A number PyYAML reads as one of the same kind: an integer as it is, a float always
/// with a `.` (YAML 1.1 floats need one) and never with an exponent.
fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let text = f.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A double-quoted scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{a0}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_with_every_string_quoted() {
        let v = json!({
            "version": 1,
            "config": [
                {"type": "physical", "name": "eth0", "mac_address": "52:54:00:12:34:00",
                 "mtu": 9000, "subnets": [{"type": "dhcp4"}], "params": {}},
                {"type": "nameserver", "address": ["192.0.2.53"]},
            ],
            "yes": [[1, 2], []],
            "a b": null,
            "f": 1.5,
        });
        assert_eq!(
            to_yaml(&v),
            "version: 1\n\
             config:\n\
             \x20 - type: \"physical\"\n\
             \x20   name: \"eth0\"\n\
             \x20   mac_address: \"52:54:00:12:34:00\"\n\
             \x20   mtu: 9000\n\
             \x20   subnets:\n\
             \x20     - type: \"dhcp4\"\n\
             \x20   params: {}\n\
             \x20 - type: \"nameserver\"\n\
             \x20   address:\n\
             \x20     - \"192.0.2.53\"\n\
             \"yes\":\n\
             \x20 - - 1\n\
             \x20   - 2\n\
             \x20 - []\n\
             \"a b\": null\n\
             f: 1.5\n"
        );
    }

    #[test]
    fn what_yaml_would_misread_is_escaped() {
        assert_eq!(quoted("on"), "\"on\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            quoted("x\u{0}\u{85}\u{9f}\u{2028}\ty\u{e9}"),
            "\"x\\x00\\x85\\x9f\\u2028\\ty\u{e9}\""
        );
        assert_eq!(number(&serde_json::Number::from_f64(2.0).unwrap()), "2.0");
        assert_eq!(
            number(&serde_json::Number::from_f64(1e20).unwrap()),
            "100000000000000000000.0"
        );
    }

    #[test]
    fn a_yaml_parser_reads_back_the_same_value() {
        let v = json!({
            "instance-id": "i-1", "local-hostname": "no", "public-keys": ["ssh-ed25519 A: b"],
            "nested": {"list": [{"a": [{"b": "0755"}], "c": true}], "empty": []},
            "weird key: x": "#comment", "n": -3, "z": "\u{1}\u{7f}é漢\u{1F600}",
        });
        let back: Value = serde_yaml_ng::from_str(&to_yaml(&v)).unwrap();
        assert_eq!(back, v);
    }
}
