//! JSON documents as they are served: text byte-identical to Python's `json.dumps(obj)`
//! (separators `", "` and `": "`, `ensure_ascii=True`), which is what Nova's handler and
//! Ironic's configdrive builder produce. Clients that hash or compare documents see the same
//! bytes as from Nova.

use std::io::{self, Write};

use bytes::Bytes;
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use serde_json::{Map, Value};

/// A JSON document kept as the bytes it is served as, compactly: a few hundred bytes where
/// a parsed tree takes kilobytes, and a document over [`PACK_FROM`] bytes is kept deflated
/// against a dictionary of the keys and values every Nova document repeats (a fleet's
/// network data shrinks to a fifth). Files served whole go out as these bytes; the rest is
/// parsed back when a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doc(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Plain(Bytes),
    /// Raw deflate of the text with [`DICTIONARY`] preset; deterministic, so equal
    /// documents have equal forms.
    Deflated(std::sync::Arc<[u8]>),
}

impl Default for Doc {
    /// `{}`.
    fn default() -> Doc {
        Doc(Repr::Plain(Bytes::from_static(b"{}")))
    }
}

impl Doc {
    pub(crate) fn new<T: Serialize + ?Sized>(value: &T) -> Doc {
        let text = to_vec(value);
        match pack::deflate(&text) {
            Some(packed) => Doc(Repr::Deflated(packed.into())),
            None => Doc(Repr::Plain(Bytes::copy_from_slice(&text))),
        }
    }

    /// The document as served.
    pub(crate) fn body(&self) -> Bytes {
        match &self.0 {
            Repr::Plain(b) => b.clone(),
            // Inflating what this process deflated cannot fail; if it ever did, `null`
            // parses as no document rather than serving garbage.
            Repr::Deflated(d) => Bytes::from(pack::inflate(d).unwrap_or_else(|| b"null".to_vec())),
        }
    }

    pub(crate) fn value(&self) -> Value {
        // The bytes were written from a `Value` by this module: they always parse.
        serde_json::from_slice(&self.body()).unwrap_or(Value::Null)
    }

    /// The document as an object (empty when it is not one).
    pub(crate) fn object(&self) -> Map<String, Value> {
        match self.value() {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// Documents shorter than this are kept as they are.
const PACK_FROM: usize = 160;

/// What Nova's `meta_data.json`, `network_data.json` and cloud-config documents repeat: the
/// preset dictionary of packed documents (no fleet's values, only the formats' own).
const DICTIONARY: &[u8] = br#"{"links": [{"id": "iface0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:00", "mtu": 1500}, {"id": "bond0", "type": "bond", "bond_mode": "802.3ad", "bond_links": ["iface0", "iface1"], "bond_miimon": 100, "bond_xmit_hash_policy": "layer3+4"}, {"id": "vlan0", "type": "vlan", "vlan_link": "iface0", "vlan_id": 100, "vlan_mac_address": "52:54:00:00:00:00"}], "networks": [{"id": "network0", "type": "ipv4", "link": "iface0", "network_id": "", "ip_address": "10.0.0.1", "netmask": "255.255.255.0", "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}], "services": [{"type": "dns", "address": "10.0.0.1"}]}, {"id": "network1", "type": "ipv6", "link": "iface0", "ip_address": "2001:db8::1", "netmask": "ffff:ffff:ffff:ffff::", "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]}, {"id": "network2", "type": "ipv4_dhcp", "link": "iface0", "network_id": ""}], "services": [{"type": "dns", "address": "10.0.0.1"}]}{"uuid": "", "name": "", "hostname": "", "availability_zone": "nova", "launch_index": 0, "public_keys": {"default": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBB"}, "keys": [{"name": "", "type": "ssh", "data": ""}], "meta": {}, "project_id": "", "devices": [], "random_seed": ""}#cloud-config
hostname: "#;

#[cfg(feature = "server")]
mod pack {
    use std::cell::RefCell;

    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    use super::{DICTIONARY, PACK_FROM};

    thread_local! {
        // A deflate state is a few hundred kilobytes: one per thread, reset for each use.
        static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::best(), false));
        static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    }

    /// The packed form of `text`, when it is worth it.
    pub(super) fn deflate(text: &[u8]) -> Option<Vec<u8>> {
        if text.len() < PACK_FROM {
            return None;
        }
        DEFLATE.with(|d| {
            let mut d = d.borrow_mut();
            d.reset();
            d.set_dictionary(DICTIONARY).ok()?;
            let mut out = Vec::with_capacity(text.len());
            match d.compress_vec(text, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) if out.len() + 16 < text.len() => Some(out),
                _ => None,
            }
        })
    }

    pub(super) fn inflate(packed: &[u8]) -> Option<Vec<u8>> {
        INFLATE.with(|i| {
            let mut i = i.borrow_mut();
            i.reset(false);
            i.set_dictionary(DICTIONARY).ok()?;
            let mut out = Vec::with_capacity(packed.len() * 8);
            loop {
                let before = i.total_in();
                let status = i
                    .decompress_vec(
                        &packed[before as usize..],
                        &mut out,
                        FlushDecompress::Finish,
                    )
                    .ok()?;
                match status {
                    Status::StreamEnd => return Some(out),
                    _ if out.len() == out.capacity() => out.reserve(out.capacity()),
                    _ if i.total_in() == before => return None,
                    _ => {}
                }
            }
        })
    }
}

/// Without the server (the fuzz targets' build) documents are kept as they are.
#[cfg(not(feature = "server"))]
mod pack {
    pub(super) fn deflate(_: &[u8]) -> Option<Vec<u8>> {
        let _ = (super::DICTIONARY, super::PACK_FROM);
        None
    }

    pub(super) fn inflate(_: &[u8]) -> Option<Vec<u8>> {
        None
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

    #[test]
    fn packed_documents_serve_their_exact_text() {
        let nd = json!({"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 9000}],
            "networks": [{"id": "n0", "type": "ipv4", "link": "eth0", "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}], "network_id": "caf\u{e9}"}],
            "services": [{"type": "dns", "address": "192.0.2.53"}]});
        let doc = Doc::new(&nd);
        assert_eq!(&doc.body()[..], &to_vec(&nd)[..]);
        assert_eq!(doc.value(), nd);
        // Deterministic: equal documents compare equal.
        assert_eq!(doc, Doc::new(&nd));
        assert_ne!(doc, Doc::new(&json!({"links": []})));
        #[cfg(feature = "server")]
        assert!(matches!(doc.0, Repr::Deflated(ref d) if d.len() * 2 < to_vec(&nd).len()));
        // Small documents are kept as they are.
        assert!(matches!(Doc::new(&json!({"a": 1})).0, Repr::Plain(_)));
        // A large document that does not compress is kept as it is.
        let noise: String = (0..400u32)
            .map(|i| char::from(b'!' + ((i * 7919 + i / 3) % 90) as u8))
            .collect();
        let doc = Doc::new(&json!({"k": noise}));
        assert_eq!(doc.value(), json!({"k": noise}));
    }
}
