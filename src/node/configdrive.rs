//! Configdrives Ironic stores as a string: base64 of a gzipped (or raw) ISO 9660 image, as
//! Nova and Ironic's own builder make them. The image is read with the `hadris-iso` crate,
//! through the Joliet tree (names as written) or the primary one, and only
//! `openstack/latest/*` and `ec2/latest/meta-data.json`. Sizes recorded in the image are never trusted for allocation:
//! directories and files over the limits below are skipped, and reads stop at the limit.

use std::io::Read;

use base64::Engine;
use bytes::Bytes;
use hadris_fs::{ErrorKind, MountOptions, OpenOptions};
use hadris_iso::sync::IsoFs;
use hadris_iso::Namespace;
use hadris_storage::{BlockSize, MemDevice};
use serde_json::Value;

use super::doc::Doc;

/// Fuzzing builds (`cargo fuzz` passes `--cfg fuzzing`) check the same limits at a few
/// hundred KiB, so that no input spends its time inflating or copying megabytes.
#[allow(unexpected_cfgs)]
const FUZZING: bool = cfg!(fuzzing);

/// Ironic's limit for a configdrive is 64 MiB.
pub(crate) const MAX_IMAGE: usize = if FUZZING { 256 << 10 } else { 64 << 20 };
/// Largest single file read from the image.
pub(crate) const MAX_FILE: usize = if FUZZING { 128 << 10 } else { 16 << 20 };
/// Largest directory looked through (about 1,000 entries; a configdrive has a dozen).
const MAX_DIR: u64 = if FUZZING { 16 << 10 } else { 64 << 10 };
const SECTOR: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DriveError {
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

/// The four parts of a configdrive, as Ironic's `build_configdrive` takes them.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct DriveContents {
    /// An object.
    pub(crate) meta_data: Doc,
    pub(crate) user_data: Option<Bytes>,
    /// An object.
    pub(crate) network_data: Option<Doc>,
    /// An object.
    pub(crate) vendor_data: Option<Doc>,
    /// The image's `ec2/latest/meta-data.json`, an object: Nova writes it, Ironic's builder
    /// does not (and its JSON dict form has no place for it).
    pub(crate) ec2_meta_data: Option<Doc>,
}

/// Decode the string form into the configdrive parts.
pub(crate) fn decode(text: &str) -> Result<DriveContents, DriveError> {
    read_image(image_of(text)?)
}

/// The image the string form holds: base64 of the image, or of its gzip.
pub(crate) fn image_of(text: &str) -> Result<Vec<u8>, DriveError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() / 4 * 3 > MAX_IMAGE * 2 {
        return Err(DriveError::TooLarge);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| DriveError::Base64)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_IMAGE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DriveError::Gzip)?;
    if out.len() > MAX_IMAGE {
        return Err(DriveError::TooLarge);
    }
    Ok(out)
}

/// The configdrive parts of a raw ISO 9660 image.
pub(crate) fn read_image(image: Vec<u8>) -> Result<DriveContents, DriveError> {
    let iso = Iso::open(image)?;
    let file = |name: &str| iso.read(&["openstack", "latest", name]);
    let parse = |name: &'static str, bytes: Option<Vec<u8>>| -> Result<Option<Value>, DriveError> {
        match bytes {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DriveError::Json(name, e.to_string())),
        }
    };
    let json =
        |name: &'static str| -> Result<Option<Value>, DriveError> { parse(name, file(name)) };
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
    // Nova's images also carry the EC2 view of the instance.
    let ec2_meta_data = parse(
        "ec2/latest/meta-data.json",
        iso.read(&["ec2", "latest", "meta-data.json"]),
    )?
    .filter(Value::is_object);
    Ok(DriveContents {
        meta_data: Doc::new(&meta_data),
        user_data: file("user_data").filter(|u| !u.is_empty()).map(Bytes::from),
        network_data: network_data.as_ref().map(Doc::new),
        vendor_data: vendor_data.as_ref().map(Doc::new),
        ec2_meta_data: ec2_meta_data.as_ref().map(Doc::new),
    })
}

/// A mounted image, read through its Joliet tree when it has one (names as written),
/// otherwise through the primary tree. The Rock Ridge tree is never used: its continuation
/// areas let a small hostile image cost seconds of CPU per lookup.
type Volume = hadris_fs::sync::Volume<IsoFs<MemDevice<Vec<u8>>>>;

struct Iso {
    volume: Volume,
}

impl Iso {
    fn open(image: Vec<u8>) -> Result<Iso, DriveError> {
        let block = BlockSize::new(SECTOR as u32).ok_or(DriveError::NotIso("bad block size"))?;
        let device = MemDevice::new(image, block);
        let fs = match IsoFs::mount_namespace(device, MountOptions::new(), Namespace::Joliet) {
            Ok(fs) => fs,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                IsoFs::mount_namespace(e.into_device(), MountOptions::new(), Namespace::Primary)
                    .map_err(|_| DriveError::NotIso("no readable volume descriptor"))?
            }
            Err(_) => return Err(DriveError::NotIso("no readable volume descriptor")),
        };
        Ok(Iso {
            volume: hadris_fs::sync::Volume::new(fs),
        })
    }

    /// A file's bytes; `None` when it is absent, not a file, too large, or any directory on
    /// the way is larger than [`MAX_DIR`] (lookups scan directories record by record).
    fn read(&self, path: &[&str]) -> Option<Vec<u8>> {
        let (file, dirs) = path.split_last()?;
        let small_dir = |p: &str| {
            self.volume
                .metadata(p)
                .is_ok_and(|m| m.file_type().is_dir() && m.len() <= MAX_DIR)
        };
        let mut at = String::new();
        if !small_dir("/") {
            return None;
        }
        for dir in dirs {
            at = format!("{at}/{dir}");
            if !small_dir(&at) {
                return None;
            }
        }
        at = format!("{at}/{file}");
        let meta = self.volume.metadata(&at).ok()?;
        if !meta.file_type().is_file() || meta.len() > MAX_FILE as u64 {
            return None;
        }
        // The recorded length is not trusted either: extents may repeat, so reading stops
        // at the limit whatever the records say.
        let mut out = Vec::new();
        self.volume
            .open(&at, OpenOptions::new().read())
            .ok()?
            .take(MAX_FILE as u64 + 1)
            .read_to_end(&mut out)
            .ok()?;
        (out.len() <= MAX_FILE).then_some(out)
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

    fn fixture(name: &str) -> DriveContents {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        decode(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// tests/fixtures/configdrive-iso.b64 was made by openstacksdk's
    /// `openstack.baremetal.configdrive.build` (genisoimage, gzip, base64), the function
    /// Ironic's own builder calls.
    #[test]
    fn reads_an_image_built_like_ironic_builds_it() {
        let d = fixture("configdrive-iso.b64");
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
        // Ironic's builder writes no ec2/ directory.
        assert_eq!(d.ec2_meta_data, None);
    }

    /// tests/fixtures/configdrive-nova-ec2.b64 was made with Nova's genisoimage options and
    /// Nova's layout, ec2/latest/meta-data.json included.
    #[test]
    fn reads_the_ec2_metadata_of_an_image_nova_built() {
        let d = fixture("configdrive-nova-ec2.b64");
        let ec2 = d.ec2_meta_data.unwrap().value();
        assert_eq!(ec2["instance-id"], "i-00000013");
        assert_eq!(ec2["public-keys"]["0"]["_name"], "0=ops");
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    /// Crafted images in fuzz/seeds/configdrive/hostile-* (a form byte, then gzip; the
    /// same images, raw, are fuzz/seeds/iso/hostile-*): a Joliet directory that points back
    /// at the root, a directory record claiming 4 GiB, a Rock Ridge NM entry too short to
    /// hold a name, and a directory claiming 2,000 records each pointing at a 4 MiB Rock
    /// Ridge continuation area (its first 70 kept).
    #[test]
    fn crafted_images_decode_or_fail_cleanly() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/configdrive");
        for name in [
            "hostile-loop-joliet",
            "hostile-bigdir",
            "hostile-rr-nm4",
            "hostile-many-ce",
        ] {
            let bytes = std::fs::read(format!("{seeds}/{name}")).unwrap();
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes[1..]);
            let got = decode(&text).map(|d| d.meta_data.value()["uuid"].clone());
            match name {
                // The oversized record is not on the way to openstack/latest: the files
                // still read.
                "hostile-bigdir" => assert!(got.as_ref().is_ok_and(Value::is_string), "{got:?}"),
                _ => assert_eq!(
                    got,
                    Err(DriveError::NotIso("no openstack/latest/meta_data.json")),
                    "{name}"
                ),
            }
        }
    }
}
