//! Warm restart: the inputs of the last good index (the Ironic nodes, ports and portgroups
//! it was built from, configdrives already downloaded) kept in `STATE_DIR/index.snapshot`,
//! with the poll watermark and the Ironic they came from. A restart builds its first index
//! from them through the same builder a sweep uses, serves at once, and catches up by
//! polling from the watermark instead of sweeping.
//!
//! The file is gzip of one record a line: a header, the ports and portgroups, the nodes, a
//! trailer with the watermark and the node count. Each record names its node, so applying
//! a poll's changes copies every other line as it is, never parsing a node it keeps. It is
//! written to a temporary file in the same directory, synced, then renamed: a crash leaves
//! the previous snapshot or the new one, never half of one. Nothing of it is used unless
//! the whole file reads back (gzip's checksum, the trailer, the count).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::ironic::model::{Node, Port, Portgroup, Raw};
use crate::node::Builder;

/// The snapshot's name in `STATE_DIR`.
pub(crate) const FILE_NAME: &str = "index.snapshot";
const MAGIC: &str = "ironic-metadata index snapshot";
/// Raised whenever the records change shape; a snapshot of another format is ignored.
const FORMAT: u32 = 1;
/// Nodes handed to the builder at once while loading.
const BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct Header {
    magic: String,
    format: u32,
    /// The Ironic the records came from.
    source: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    /// The poll watermark (microseconds) the records are current to.
    covered: i64,
    /// When the file was written (seconds since the epoch).
    written: u64,
    nodes: u64,
}

/// One node's records: its ports and portgroups, then the node itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NodeRecords {
    links: Vec<String>,
    node: String,
}

/// The records of `node` as the builder takes them, to replace its old ones.
pub(crate) fn records(node: &Node, ports: &[Port], groups: &[Portgroup]) -> NodeRecords {
    let mut links = Vec::new();
    for p in ports {
        links.extend(record('P', &node.uuid, p));
    }
    for g in groups {
        links.extend(record('G', &node.uuid, g));
    }
    NodeRecords {
        links,
        node: record('N', &node.uuid, node).unwrap_or_default(),
    }
}

/// `KIND\tKEY\tJSON`; none for a key no line can hold (never an Ironic UUID).
fn record<T: Serialize>(kind: char, key: &str, value: &T) -> Option<String> {
    if key.is_empty() || key.contains(['\t', '\n', '\r']) {
        return None;
    }
    let json = serde_json::to_string(value).ok()?;
    Some(format!("{kind}\t{key}\t{json}"))
}

/// The line's kind and key, and its JSON.
fn split(line: &str) -> Option<(char, &str, &str)> {
    let mut it = line.splitn(3, '\t');
    let kind = it.next()?;
    let key = it.next()?;
    let json = it.next()?;
    let mut chars = kind.chars();
    match (chars.next(), chars.next()) {
        (Some(k), None) => Some((k, key, json)),
        _ => None,
    }
}

fn unix_now(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A snapshot being written; it replaces the previous one only when finished.
pub(crate) struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<GzEncoder<BufWriter<File>>>,
    nodes: u64,
}

impl Writer {
    /// Starts a snapshot of the records of `source`.
    pub(crate) fn create(path: &Path, source: &str) -> io::Result<Writer> {
        let tmp = path.with_extension("snapshot.tmp");
        // A temporary file a crash left behind.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // It holds user data and keys: readable by this user alone.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = Writer {
            path: path.to_path_buf(),
            tmp,
            out: Some(GzEncoder::new(BufWriter::new(file), Compression::fast())),
            nodes: 0,
        };
        let header = Header {
            magic: MAGIC.into(),
            format: FORMAT,
            source: source.into(),
        };
        w.line(&format!("H\t-\t{}", serde_json::to_string(&header)?))?;
        Ok(w)
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        let out = self.out.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// The ports and portgroups (all of them before any node).
    pub(crate) fn links(&mut self, ports: &[Port], groups: &[Portgroup]) -> io::Result<()> {
        for p in ports {
            if let Some(l) = p.node_uuid.as_deref().and_then(|n| record('P', n, p)) {
                self.line(&l)?;
            }
        }
        for g in groups {
            if let Some(l) = g.node_uuid.as_deref().and_then(|n| record('G', n, g)) {
                self.line(&l)?;
            }
        }
        Ok(())
    }

    pub(crate) fn nodes(&mut self, nodes: &[Node]) -> io::Result<()> {
        for n in nodes {
            if let Some(l) = record('N', &n.uuid, n) {
                self.line(&l)?;
                self.nodes += 1;
            }
        }
        Ok(())
    }

    /// Ends the snapshot with its watermark and puts it in place of the previous one.
    /// Returns the nodes it holds.
    pub(crate) fn finish(mut self, covered: i64) -> io::Result<u64> {
        let trailer = Trailer {
            covered,
            written: unix_now(SystemTime::now()),
            nodes: self.nodes,
        };
        self.line(&format!("E\t-\t{}", serde_json::to_string(&trailer)?))?;
        let out = self.out.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let file = out.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        // The rename itself survives a crash once the directory is synced.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(self.nodes)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not finished: the previous snapshot stays as it was.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Why a snapshot was not used (the reason is a metric label).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Ignored {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

fn ignored(reason: &'static str, message: impl Into<String>) -> Ignored {
    Ignored {
        reason,
        message: message.into(),
    }
}

/// A snapshot read back whole.
pub(crate) struct Loaded {
    pub(crate) builder: Builder,
    pub(crate) covered: i64,
    pub(crate) written: SystemTime,
    pub(crate) nodes: u64,
    /// Nodes whose configdrive is still a URL (its download had not finished), with it.
    pub(crate) url_nodes: Vec<(String, String)>,
}

/// The lines of a snapshot, checked for its header (`source`, format) as they are read.
struct Lines {
    lines: io::Lines<BufReader<GzDecoder<BufReader<File>>>>,
    number: usize,
}

impl Lines {
    fn open(path: &Path, source: &str) -> Result<Lines, Ignored> {
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ignored("absent", "no snapshot"),
            _ => ignored("unreadable", format!("cannot be read: {e}")),
        })?;
        let mut lines = Lines {
            lines: BufReader::new(GzDecoder::new(BufReader::new(file))).lines(),
            number: 0,
        };
        let first = lines.next_line()?;
        let header: Header = match split(&first) {
            Some(('H', _, json)) => serde_json::from_str(json).ok(),
            _ => None,
        }
        .filter(|h: &Header| h.magic == MAGIC)
        .ok_or_else(|| ignored("corrupt", "line 1: not a snapshot header"))?;
        if header.format != FORMAT {
            return Err(ignored(
                "format",
                format!(
                    "format {} (this version reads format {FORMAT})",
                    header.format
                ),
            ));
        }
        if header.source != source {
            return Err(ignored(
                "other_source",
                format!("it holds the nodes of {}, not of {source}", header.source),
            ));
        }
        Ok(lines)
    }

    fn next_line(&mut self) -> Result<String, Ignored> {
        self.number += 1;
        match self.lines.next() {
            Some(Ok(l)) => Ok(l),
            Some(Err(e)) => Err(ignored(
                "corrupt",
                format!("line {}: {e} (damaged or cut short)", self.number),
            )),
            None => Err(ignored(
                "corrupt",
                format!("line {}: the file ends before its trailer", self.number),
            )),
        }
    }

    /// The end of the stream must follow the trailer (gzip's checksum is checked there).
    fn end(&mut self) -> Result<(), Ignored> {
        match self.lines.next() {
            None => Ok(()),
            Some(Ok(_)) => Err(ignored(
                "corrupt",
                format!("line {}: data after the trailer", self.number + 1),
            )),
            Some(Err(e)) => Err(ignored(
                "corrupt",
                format!("after the trailer: {e} (damaged)"),
            )),
        }
    }

    fn bad(&self, what: impl std::fmt::Display) -> Ignored {
        ignored("corrupt", format!("line {}: {what}", self.number))
    }
}

/// Reads the snapshot at `path` into a builder made by `builder` from its links. It is
/// ignored when it is not whole, of another format or Ironic (`source`), or older than
/// `max_age` at `now`.
pub(crate) fn load(
    path: &Path,
    source: &str,
    max_age: Duration,
    now: SystemTime,
    builder: impl FnOnce(Vec<Port>, Vec<Portgroup>) -> Builder,
) -> Result<Loaded, Ignored> {
    let mut lines = Lines::open(path, source)?;
    let (mut ports, mut groups) = (Vec::new(), Vec::new());
    let mut line = lines.next_line()?;
    loop {
        match split(&line) {
            Some(('P', _, json)) => ports.push(
                serde_json::from_str::<Port>(json).map_err(|e| lines.bad(format!("port: {e}")))?,
            ),
            Some(('G', _, json)) => groups.push(
                serde_json::from_str::<Portgroup>(json)
                    .map_err(|e| lines.bad(format!("portgroup: {e}")))?,
            ),
            _ => break,
        }
        line = lines.next_line()?;
    }
    let mut b = builder(ports, groups);
    let mut batch = Vec::with_capacity(BATCH);
    let mut url_nodes = Vec::new();
    let mut count = 0u64;
    let trailer: Trailer = loop {
        match split(&line) {
            Some(('N', key, json)) => {
                let n: Node =
                    serde_json::from_str(json).map_err(|e| lines.bad(format!("node: {e}")))?;
                if n.uuid != key {
                    return Err(lines.bad(format!("node {} under key {key}", n.uuid)));
                }
                let url = n.instance_info.get("configdrive").and_then(Raw::string);
                if let Some(u) = url.filter(|u| u.contains("://")) {
                    url_nodes.push((n.uuid.clone(), u));
                }
                batch.push(n);
                count += 1;
                if batch.len() == BATCH {
                    b.add(std::mem::take(&mut batch));
                }
            }
            Some(('E', _, json)) => {
                break serde_json::from_str(json).map_err(|e| lines.bad(format!("trailer: {e}")))?
            }
            _ => return Err(lines.bad("not a node record")),
        }
        line = lines.next_line()?;
    };
    lines.end()?;
    b.add(batch);
    // Polls from no watermark would take a page of the newest rows for every change.
    if trailer.covered <= 0 {
        return Err(ignored("corrupt", "the trailer has no watermark"));
    }
    if trailer.nodes != count {
        return Err(ignored(
            "corrupt",
            format!("{count} nodes where the trailer says {}", trailer.nodes),
        ));
    }
    let written = UNIX_EPOCH + Duration::from_secs(trailer.written);
    match now.duration_since(written) {
        Ok(age) if age > max_age => {
            return Err(ignored(
                "stale",
                format!(
                    "written {} s ago, more than {} s (the full refresh interval)",
                    age.as_secs(),
                    max_age.as_secs()
                ),
            ))
        }
        Ok(_) => {}
        Err(_) => return Err(ignored("stale", "written in the future (clock changed)")),
    }
    Ok(Loaded {
        builder: b,
        covered: trailer.covered,
        written,
        nodes: count,
        url_nodes,
    })
}

/// Rewrites the snapshot at `path` with `changes` applied (a node's new records, or none
/// when it is gone) and the watermark `covered`. Returns the nodes it holds. Fails, leaving
/// the old file as it was, when that cannot be read whole.
pub(crate) fn merge(
    path: &Path,
    source: &str,
    changes: &HashMap<String, Option<NodeRecords>>,
    covered: i64,
) -> Result<u64, MergeError> {
    let mut lines = Lines::open(path, source).map_err(MergeError::Base)?;
    let mut out = Writer::create(path, source).map_err(MergeError::Io)?;
    let mut links_done = false;
    loop {
        let line = lines.next_line().map_err(MergeError::Base)?;
        let Some((kind, key, _)) = split(&line) else {
            return Err(MergeError::Base(lines.bad("not a record")));
        };
        if matches!(kind, 'N' | 'E') && !links_done {
            for l in changes.values().flatten().flat_map(|r| &r.links) {
                out.line(l).map_err(MergeError::Io)?;
            }
            links_done = true;
        }
        match kind {
            'P' | 'G' | 'N' if changes.contains_key(key) => {}
            'P' | 'G' => out.line(&line).map_err(MergeError::Io)?,
            'N' => {
                out.line(&line).map_err(MergeError::Io)?;
                out.nodes += 1;
            }
            'E' => break,
            _ => return Err(MergeError::Base(lines.bad("not a record"))),
        }
    }
    lines.end().map_err(MergeError::Base)?;
    for r in changes.values().flatten() {
        if !r.node.is_empty() {
            out.line(&r.node).map_err(MergeError::Io)?;
            out.nodes += 1;
        }
    }
    out.finish(covered).map_err(MergeError::Io)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    /// The snapshot to update cannot be read whole.
    #[error("the previous snapshot cannot be updated: {0}")]
    Base(Ignored),
    #[error("{0}")]
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Index;
    use crate::node::DriveCache;
    use serde_json::json;

    const SRC: &str = "http://ironic:6385/";

    fn node(uuid: &str, ip: &str) -> Node {
        serde_json::from_value(json!({
            "uuid": uuid, "name": uuid, "provision_state": "active",
            "updated_at": "2026-01-01T00:00:00+00:00",
            "instance_info": {"configdrive": {"user_data": format!("#cloud-config\n# {uuid}\n")}},
            "network_data": {"links": [], "services": [], "networks": [
                {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": ip}]}
        }))
        .unwrap()
    }

    fn port(uuid: &str, node: &str, mac: &str) -> Port {
        serde_json::from_value(json!({"uuid": uuid, "address": mac, "node_uuid": node})).unwrap()
    }

    fn write(path: &Path, nodes: &[Node], ports: &[Port]) {
        let mut w = Writer::create(path, SRC).unwrap();
        w.links(ports, &[]).unwrap();
        w.nodes(nodes).unwrap();
        assert_eq!(w.finish(42).unwrap(), nodes.len() as u64);
    }

    fn read(path: &Path) -> Result<(Loaded, Index), Ignored> {
        let mut loaded = load(
            path,
            SRC,
            Duration::from_secs(60),
            SystemTime::now(),
            |p, g| Builder::new(p, g, &[], DriveCache::new()),
        )?;
        let b = std::mem::replace(
            &mut loaded.builder,
            Builder::new(vec![], vec![], &[], DriveCache::new()),
        );
        let (views, _) = b.finish();
        let index = Index::build(views, &["active".to_string()]);
        Ok((loaded, index))
    }

    fn user_data(index: &Index, uuid: &str) -> String {
        let n = index.nodes().iter().find(|n| n.uuid == uuid).unwrap();
        let ud = n.drive().unwrap().user_data.clone().unwrap();
        String::from_utf8(ud.to_vec()).unwrap()
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write(
            &path,
            &[node("a", "192.0.2.1"), node("b", "192.0.2.2")],
            &[port("p1", "a", "52:54:00:00:00:01")],
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("snapshot.tmp").exists());
        let (loaded, index) = read(&path).unwrap();
        assert_eq!((loaded.covered, loaded.nodes), (42, 2));
        assert_eq!(user_data(&index, "b"), "#cloud-config\n# b\n");
        let a = index.nodes().iter().find(|n| n.uuid == "a").unwrap();
        assert_eq!(a.macs, vec!["52:54:00:00:00:01".parse().unwrap()]);
    }

    #[test]
    fn damaged_cut_foreign_or_stale_snapshots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write(&path, &[node("a", "192.0.2.1")], &[]);
        let good = std::fs::read(&path).unwrap();
        let reason = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read(&path).err().map(|e| e.reason)
        };
        assert_eq!(reason(&good[..good.len() - 3]), Some("corrupt"));
        assert_eq!(reason(&good[..good.len() / 2]), Some("corrupt"));
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        assert_eq!(reason(&flipped), Some("corrupt"));
        assert_eq!(reason(b"not gzip at all"), Some("corrupt"));
        assert_eq!(reason(b""), Some("corrupt"));
        std::fs::write(&path, &good).unwrap();
        let other = load(
            &path,
            "http://other:6385/",
            Duration::from_secs(60),
            SystemTime::now(),
            |p, g| Builder::new(p, g, &[], DriveCache::new()),
        );
        assert_eq!(other.err().map(|e| e.reason), Some("other_source"));
        let later = load(
            &path,
            SRC,
            Duration::from_secs(60),
            SystemTime::now() + Duration::from_secs(61),
            |p, g| Builder::new(p, g, &[], DriveCache::new()),
        );
        assert_eq!(later.err().map(|e| e.reason), Some("stale"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read(&path).err().map(|e| e.reason), Some("absent"));
    }

    #[test]
    fn no_damaged_byte_panics_or_changes_what_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write(
            &path,
            &[node("a", "192.0.2.1"), node("b", "192.0.2.2")],
            &[port("p1", "a", "52:54:00:00:00:01")],
        );
        let good = std::fs::read(&path).unwrap();
        let (_, want) = read(&path).unwrap();
        for i in 0..good.len() {
            for bits in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= bits;
                std::fs::write(&path, &bad).unwrap();
                // Only bytes gzip does not check (its header's time and flags) may change
                // and still read; what reads is what was written.
                if let Ok((_, got)) = read(&path) {
                    assert_eq!(got.nodes(), want.nodes(), "byte {i} ^ {bits:#x}");
                }
            }
        }
    }

    #[test]
    fn merged_changes_replace_only_their_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write(
            &path,
            &[
                node("a", "192.0.2.1"),
                node("b", "192.0.2.2"),
                node("c", "192.0.2.3"),
            ],
            &[
                port("p1", "a", "52:54:00:00:00:01"),
                port("p2", "b", "52:54:00:00:00:02"),
            ],
        );
        let mut a = node("a", "192.0.2.1");
        a.instance_info.insert(
            "configdrive".into(),
            Raw::new(&json!({"user_data": "edited"})),
        );
        let changes = HashMap::from([
            (
                "a".to_string(),
                Some(records(&a, &[port("p3", "a", "52:54:00:00:00:03")], &[])),
            ),
            ("b".to_string(), None),
            (
                "d".to_string(),
                Some(records(&node("d", "192.0.2.4"), &[], &[])),
            ),
        ]);
        assert_eq!(merge(&path, SRC, &changes, 99).unwrap(), 3);
        let (loaded, index) = read(&path).unwrap();
        assert_eq!(loaded.covered, 99);
        let mut uuids: Vec<&str> = index.nodes().iter().map(|n| n.uuid.as_str()).collect();
        uuids.sort_unstable();
        assert_eq!(uuids, ["a", "c", "d"]);
        assert_eq!(user_data(&index, "a"), "edited");
        let a = index.nodes().iter().find(|n| n.uuid == "a").unwrap();
        assert_eq!(a.macs, vec!["52:54:00:00:00:03".parse().unwrap()]);
        // A damaged base is not merged into: the caller starts over.
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(
            merge(&path, SRC, &changes, 100),
            Err(MergeError::Base(_))
        ));
    }
}
