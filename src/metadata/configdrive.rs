//! Configdrives Ironic stores as a string: base64 of a gzipped (or raw) ISO 9660 image, as
//! Nova and Ironic's own builder make them. Only `openstack/latest/*` is read, through the
//! Joliet tree (names as written) or the primary one. Every size and offset inside the
//! image is checked against the image itself; nothing here can panic or read out of bounds.

use std::io::Read;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::view::{Doc, DriveContents};

/// Ironic's limit for a configdrive is 64 MiB.
pub const MAX_IMAGE: usize = 64 * 1024 * 1024;
/// Largest single file read from the image.
pub const MAX_FILE: usize = 16 * 1024 * 1024;
/// Directory records read before giving up.
const MAX_RECORDS: usize = 4096;
const SECTOR: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    #[error("configdrive is not valid base64")]
    Base64,
    #[error("configdrive image is larger than {MAX_IMAGE} bytes")]
    TooLarge,
    #[error("configdrive gzip stream is corrupt")]
    Gzip,
    #[error("configdrive is not an ISO 9660 image: {0}")]
    NotIso(&'static str),
    #[error("configdrive {0} is not valid JSON: {1}")]
    Json(&'static str, String),
}

/// Decode the string form into the configdrive parts.
pub fn decode(text: &str) -> Result<DriveContents, DriveError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() / 4 * 3 > MAX_IMAGE * 2 {
        return Err(DriveError::TooLarge);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| DriveError::Base64)?;
    let image = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_IMAGE as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| DriveError::Gzip)?;
        if out.len() > MAX_IMAGE {
            return Err(DriveError::TooLarge);
        }
        out
    } else {
        raw
    };
    let iso = Iso::open(&image)?;
    let file = |name: &str| iso.read(&["openstack", "latest", name]);
    let json = |name: &'static str| -> Result<Option<Value>, DriveError> {
        match file(name) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DriveError::Json(name, e.to_string())),
        }
    };
    let meta_data = match json("meta_data.json")? {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(DriveError::Json("meta_data.json", "not an object".into())),
        None => return Err(DriveError::NotIso("no openstack/latest/meta_data.json")),
    };
    let network_data = json("network_data.json")?.filter(Value::is_object);
    // Ironic's builder writes vendor data to vendor_data2.json; Nova writes both.
    let vendor_data = match json("vendor_data.json")? {
        Some(v) => Some(v),
        None => json("vendor_data2.json")?,
    }
    .filter(Value::is_object);
    Ok(DriveContents {
        meta_data: Doc::new(&meta_data),
        user_data: file("user_data").filter(|u| !u.is_empty()).map(Bytes::from),
        network_data: network_data.as_ref().map(Doc::new),
        vendor_data: vendor_data.as_ref().map(Doc::new),
    })
}

/// A directory record's extent.
#[derive(Debug, Clone, Copy)]
struct Extent {
    lba: usize,
    len: usize,
    dir: bool,
}

struct Iso<'a> {
    image: &'a [u8],
    root: Extent,
    joliet: bool,
}

fn u32_le(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

impl<'a> Iso<'a> {
    fn open(image: &'a [u8]) -> Result<Iso<'a>, DriveError> {
        let mut primary = None;
        let mut joliet = None;
        for n in 16..64 {
            let Some(d) = image.get(n * SECTOR..(n + 1) * SECTOR) else {
                return Err(DriveError::NotIso("no volume descriptor set terminator"));
            };
            if &d[1..6] != b"CD001" {
                return Err(DriveError::NotIso("bad volume descriptor"));
            }
            let root = Iso::record(d.get(156..190).unwrap_or(&[]));
            match d[0] {
                1 => primary = root,
                // Joliet: a supplementary descriptor with a UCS-2 escape sequence.
                2 if matches!(&d[88..91], b"%/@" | b"%/C" | b"%/E") => joliet = root,
                255 => break,
                _ => {}
            }
        }
        match (joliet, primary) {
            (Some(root), _) => Ok(Iso {
                image,
                root,
                joliet: true,
            }),
            (None, Some(root)) => Ok(Iso {
                image,
                root,
                joliet: false,
            }),
            _ => Err(DriveError::NotIso("no primary volume descriptor")),
        }
    }

    fn record(r: &[u8]) -> Option<Extent> {
        if r.len() < 34 || (r[0] as usize) < 34 {
            return None;
        }
        Some(Extent {
            lba: u32_le(r, 2)?,
            len: u32_le(r, 10)?,
            dir: r[25] & 2 != 0,
        })
    }

    fn data(&self, e: Extent, max: usize) -> Option<&'a [u8]> {
        if e.len > max {
            return None;
        }
        let start = e.lba.checked_mul(SECTOR)?;
        self.image.get(start..start.checked_add(e.len)?)
    }

    fn name(&self, raw: &[u8]) -> String {
        let name = if self.joliet {
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        let name = name.split(';').next().unwrap_or("");
        name.strip_suffix('.').unwrap_or(name).to_string()
    }

    fn find(&self, dir: Extent, want: &str) -> Option<Extent> {
        let data = self.data(dir, MAX_FILE)?;
        let mut at = 0;
        let mut seen = 0;
        while at < data.len() && seen < MAX_RECORDS {
            let len = data[at] as usize;
            if len == 0 {
                // Records never span sectors: skip to the next one.
                at = (at / SECTOR + 1) * SECTOR;
                continue;
            }
            let rec = data.get(at..at + len)?;
            seen += 1;
            at += len;
            let name_len = *rec.get(32)? as usize;
            let raw = rec.get(33..33 + name_len)?;
            if raw == [0] || raw == [1] {
                continue;
            }
            let matches = if self.joliet {
                self.name(raw) == want
            } else {
                self.name(raw).eq_ignore_ascii_case(want)
            };
            if matches {
                return Iso::record(rec);
            }
        }
        None
    }

    fn read(&self, path: &[&str]) -> Option<Vec<u8>> {
        let mut at = self.root;
        for (i, part) in path.iter().enumerate() {
            if !at.dir {
                return None;
            }
            at = self.find(at, part)?;
            if i + 1 < path.len() && !at.dir {
                return None;
            }
        }
        if at.dir {
            return None;
        }
        self.data(at, MAX_FILE).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode("not base64!"), Err(DriveError::Base64));
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert!(matches!(decode(&b64(b"short")), Err(DriveError::NotIso(_))));
        assert_eq!(decode(&b64(&[0x1f, 0x8b, 1, 2, 3])), Err(DriveError::Gzip));
        let mut fake = vec![0u8; 17 * SECTOR];
        fake[16 * SECTOR] = 1;
        fake[16 * SECTOR + 1..16 * SECTOR + 6].copy_from_slice(b"CD001");
        // A root record pointing far outside the image.
        let r = 16 * SECTOR + 156;
        fake[r] = 34;
        fake[r + 2..r + 6].copy_from_slice(&u32::MAX.to_le_bytes());
        fake[r + 10..r + 14].copy_from_slice(&u32::MAX.to_le_bytes());
        fake[r + 25] = 2;
        assert!(decode(&b64(&fake)).is_err());
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    /// tests/fixtures/configdrive-iso.b64 was made by openstacksdk's
    /// `openstack.baremetal.configdrive.build` (genisoimage, gzip, base64), the function
    /// Ironic's own builder calls.
    #[test]
    fn reads_an_image_built_like_ironic_builds_it() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/configdrive-iso.b64"
        ))
        .unwrap();
        let d = decode(&text).unwrap();
        assert_eq!(
            d.meta_data.value()["uuid"],
            "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
        );
        assert_eq!(
            d.meta_data.value()["public_keys"]["ops"],
            "ssh-ed25519 AAAAiso ops@example.com"
        );
        assert_eq!(
            d.user_data.as_deref(),
            Some(&b"#cloud-config\nhostname: iso-node\n"[..])
        );
        assert_eq!(
            d.network_data.as_ref().unwrap().value()["networks"][0]["ip_address"],
            "127.0.0.17"
        );
        assert_eq!(
            d.vendor_data.as_ref().unwrap().value()["cloud-init"],
            "#cloud-config\nruncmd: [true]\n"
        );
    }
}
