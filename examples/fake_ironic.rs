//! A fake Ironic holding any number of deployed nodes (100,000 and more), for the scale
//! benchmark (`scripts/bench.sh --only scale`, `scripts/bench/scale.py`).
//!
//! Node *i* is `bench-NNNNNN`, active, with one port (MAC `52:54:00:XX:XX:XX` from *i*), a
//! `node.network_data` and a configdrive as Ironic stores one deployed by Nova or
//! metalsmith: base64 of a gzipped ISO 9660 image (Joliet, Rock Ridge, label `config-2`)
//! holding `openstack/{2012-08-10,latest}/{meta_data.json,user_data,network_data.json}`.
//! Both network_data documents give the node the loopback address 127.x.y.z of
//! `client_address(1, i)` (`127.1.0.1` onwards, as `scripts/bench/common.py` numbers them),
//! so one machine can pose as any node. Even nodes are a plain NIC, odd ones a VLAN on it.
//!
//! Configdrives are made cheaply: `genisoimage` (the flags of openstacksdk's
//! `configdrive.pack`) builds one template image per kind whose files hold fixed-width
//! placeholders; JSON allows spaces after a value, so shorter values are padded. Only the
//! stretch of the image between the first and the last placeholder differs per node: the
//! rest is deflated once, the stretch per node, and the gzip members are joined at
//! sync-flush boundaries with the CRC combined.
//!
//! The Ironic API it answers (what the service uses): `GET /` (microversions), `GET
//! /v1/{nodes,ports,portgroups}` with `detail`, `fields`, `limit` (clamped to `--max-limit`,
//! as Ironic's `[api]max_limit`), `marker`, `sort_key` (`id`, `uuid`, `created_at`, `updated_at`),
//! `sort_dir`, `node` and a `next` link on every full page, and `GET /v1/nodes/{uuid or
//! name}`. Every API request is counted by kind, with the bytes answered.
//!
//! Control endpoints for the benchmark (not counted): `GET /_fake/stats`, `GET
//! /_fake/requests?since=SEQ` (the API requests since sequence number SEQ), `GET
//! /_fake/node?index=I` (what node I must be served), `POST /_fake/deploy?count=K` (K new
//! active nodes, created and updated now), `POST /_fake/edit?index=I` (new user data: the
//! revision in it goes up; `updated_at` now), `POST /_fake/delete?index=I`.
//!
//! ```sh
//! cargo run --release --example fake_ironic -- --nodes 100000
//! ```
//! prints `fake-ironic listening on http://127.0.0.1:PORT, N nodes` once it answers.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use clap::Parser;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(about = "A fake Ironic with many deployed nodes, for the scale benchmark")]
struct Args {
    /// Deployed nodes at start (indices 0..N).
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Largest page, as Ironic's `[api]max_limit` (default 1000).
    #[arg(long, default_value_t = 1000)]
    max_limit: usize,
    /// Newest microversion announced (1.N).
    #[arg(long, default_value_t = 115)]
    max_minor: u32,
    /// The ISO 9660 builder (genisoimage or mkisofs).
    #[arg(long, default_value = "genisoimage")]
    genisoimage: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Largest node index: names are `bench-` and six digits.
const MAX_INDEX: u32 = 999_999;
/// API requests remembered for `/_fake/requests`.
const LOG_SIZE: usize = 200_000;

// ---------------------------------------------------------------------------------------
// What node i is

/// The per-node values, each exactly as wide as its placeholder.
struct Values {
    index: u32,
    uuid: String,
    instance_uuid: String,
    name: String,
    mac: String,
    address: String,
    key: String,
    revision: u32,
}

impl Values {
    fn of(index: u32, revision: u32) -> Values {
        let name = format!("bench-{index:06}");
        let mut blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20".to_vec();
        blob.extend_from_slice(&Sha256::digest(name.as_bytes()));
        Values {
            index,
            uuid: format!("0b0e0000-0000-4000-8000-{index:012x}"),
            instance_uuid: format!("0b0e0000-0000-4000-9000-{index:012x}"),
            mac: format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                (index >> 16) & 255,
                (index >> 8) & 255,
                index & 255
            ),
            address: address(index),
            key: base64::engine::general_purpose::STANDARD.encode(blob),
            name,
            revision,
        }
    }

    fn kind(&self) -> Kind {
        if self.index.is_multiple_of(2) {
            Kind::Phy
        } else {
            Kind::Vlan
        }
    }

    fn port_uuid(&self) -> String {
        format!("0b0e0000-0000-4000-a000-{:012x}", self.index)
    }

    fn user_data(&self) -> String {
        user_data(&self.name, &format!("{:06}", self.revision))
    }

    /// (placeholder, value) pairs; each value as long as its placeholder.
    fn substitutions(&self) -> Vec<(String, String)> {
        vec![
            (token('U', 36), self.instance_uuid.clone()),
            (token('N', 12), self.name.clone()),
            (token('K', 68), self.key.clone()),
            (token('M', 17), self.mac.clone()),
            (
                token('I', 17),
                format!("{:<17}", format!("\"{}\"", self.address)),
            ),
            (token('R', 6), format!("{:06}", self.revision)),
        ]
    }
}

/// `client_address(1, i)` of scripts/bench/common.py: 127.1.0.1 onwards.
fn address(index: u32) -> String {
    let n = (1u32 << 16) + index + 1;
    format!("127.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn token(tag: char, width: usize) -> String {
    format!("~{tag}{}", "~".repeat(width - 2))
}

#[derive(Clone, Copy)]
enum Kind {
    Phy,
    Vlan,
}

fn user_data(name: &str, revision: &str) -> String {
    format!("#cloud-config\nhostname: {name}\n# revision {revision}\n")
}

/// meta_data.json as openstacksdk writes it (Python's json.dump).
fn meta_data(kind: Kind, uuid: &str, name: &str, key: &str) -> String {
    let kind = match kind {
        Kind::Phy => "phy",
        Kind::Vlan => "vlan",
    };
    format!(
        "{{\"uuid\": \"{uuid}\", \"name\": \"vm-{name}\", \"hostname\": \"{name}\", \
         \"availability_zone\": \"nova\", \"launch_index\": 0, \"public_keys\": {{\"default\": \
         \"ssh-ed25519 {key} {name}@bench\"}}, \"meta\": {{\"kind\": \"{kind}\"}}}}"
    )
}

/// network_data.json; `ip` is the JSON text of the address (quoted, maybe padded).
fn network_data(kind: Kind, mac: &str, ip: &str) -> String {
    let dns = r#"[{"type": "dns", "address": "198.18.0.53"}]"#;
    let v4 = format!(
        "{{\"id\": \"network0\", \"type\": \"ipv4\", \"network_id\": \"net0\", \"ip_address\": {ip}, \
         \"netmask\": \"255.0.0.0\", \"routes\": [], \"services\": {dns}, \"link\": "
    );
    let phy = format!(
        "{{\"id\": \"iface0\", \"type\": \"phy\", \"ethernet_mac_address\": \"{mac}\", \"mtu\": 1500}}"
    );
    match kind {
        Kind::Phy => format!(
            "{{\"links\": [{phy}], \"networks\": [{v4}\"iface0\"}}], \"services\": {dns}}}"
        ),
        Kind::Vlan => format!(
            "{{\"links\": [{phy}, {{\"id\": \"vlan120\", \"type\": \"vlan\", \"vlan_link\": \"iface0\", \
             \"vlan_id\": 120, \"vlan_mac_address\": \"{mac}\", \"mtu\": 1500}}], \"networks\": \
             [{v4}\"vlan120\"}}, {{\"id\": \"network1\", \"type\": \"ipv4_dhcp\", \"link\": \"iface0\", \
             \"network_id\": \"net1\"}}], \"services\": {dns}}}"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Configdrives from a template image

/// One kind's image: the parts before and after the stretch that holds placeholders,
/// deflated once; the stretch itself, and where each placeholder lies in it.
struct Template {
    head: Vec<u8>,
    head_crc: Crc,
    stretch: Vec<u8>,
    spots: Vec<(usize, usize)>, // (offset in stretch, substitution number)
    tail: Vec<u8>,
    tail_crc: Crc,
    total: u32,
}

impl Template {
    fn build(kind: Kind, genisoimage: &str) -> Result<Template, String> {
        let probe = Values::of(0, 0);
        let subs: Vec<String> = probe.substitutions().into_iter().map(|(t, _)| t).collect();
        let image = template_image(kind, genisoimage, &subs)?;
        let mut spots = Vec::new();
        for (n, t) in subs.iter().enumerate() {
            let found: Vec<usize> = find_all(&image, t.as_bytes());
            if found.is_empty() {
                return Err(format!("placeholder {t} not in the image"));
            }
            spots.extend(found.into_iter().map(|at| (at, n)));
        }
        let lo = spots.iter().map(|s| s.0).min().expect("placeholders");
        let hi = spots
            .iter()
            .map(|&(at, n)| at + subs[n].len())
            .max()
            .expect("placeholders");
        let crc = |b: &[u8]| {
            let mut c = Crc::new();
            c.update(b);
            c
        };
        Ok(Template {
            head: deflate(&image[..lo], false),
            head_crc: crc(&image[..lo]),
            stretch: image[lo..hi].to_vec(),
            spots: spots.into_iter().map(|(at, n)| (at - lo, n)).collect(),
            tail: deflate(&image[hi..], true),
            tail_crc: crc(&image[hi..]),
            total: u32::try_from(image.len()).map_err(|_| "image too large")?,
        })
    }

    /// The image of node `v`, uncompressed (to check the gzip form against).
    fn stretch_for(&self, v: &Values) -> Vec<u8> {
        let subs = v.substitutions();
        let mut s = self.stretch.clone();
        for &(at, n) in &self.spots {
            let value = subs[n].1.as_bytes();
            s[at..at + value.len()].copy_from_slice(value);
        }
        s
    }

    /// base64 of the gzipped image of node `v`, as Ironic stores a configdrive.
    fn configdrive(&self, v: &Values) -> String {
        let stretch = self.stretch_for(v);
        let mut crc = Crc::new();
        crc.combine(&self.head_crc);
        let mut mid = Crc::new();
        mid.update(&stretch);
        crc.combine(&mid);
        crc.combine(&self.tail_crc);
        let body = deflate(&stretch, false);
        let mut gz = Vec::with_capacity(18 + self.head.len() + body.len() + self.tail.len());
        gz.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        gz.extend_from_slice(&self.head);
        gz.extend_from_slice(&body);
        gz.extend_from_slice(&self.tail);
        gz.extend_from_slice(&crc.sum().to_le_bytes());
        gz.extend_from_slice(&self.total.to_le_bytes());
        base64::engine::general_purpose::STANDARD.encode(gz)
    }
}

/// The template image of `kind`, built by genisoimage from files holding placeholders.
fn template_image(kind: Kind, genisoimage: &str, subs: &[String]) -> Result<Vec<u8>, String> {
    let (uuid, name, key, mac, ip, rev) =
        (&subs[0], &subs[1], &subs[2], &subs[3], &subs[4], &subs[5]);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for version in ["2012-08-10", "latest"] {
        let d = dir.path().join("tree/openstack").join(version);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let files = [
            ("meta_data.json", meta_data(kind, uuid, name, key)),
            ("network_data.json", network_data(kind, mac, ip)),
            ("user_data", user_data(name, rev)),
        ];
        for (file, text) in files {
            std::fs::write(d.join(file), text).map_err(|e| e.to_string())?;
        }
    }
    let iso = dir.path().join("config.iso");
    let out = std::process::Command::new(genisoimage)
        .args(["-o"])
        .arg(&iso)
        .args(["-ldots", "-allow-lowercase", "-allow-multidot", "-l"])
        .args([
            "-publisher",
            "metalsmith",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
        ])
        .arg(dir.path().join("tree"))
        .output()
        .map_err(|e| format!("cannot run {genisoimage}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{genisoimage} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::read(&iso).map_err(|e| e.to_string())
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Raw deflate of `data` on its own: ending with a sync flush (byte-aligned, not final)
/// so more members may follow, or with the final block.
fn deflate(data: &[u8], last: bool) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 4 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let done = usize::try_from(c.total_in()).expect("small");
        let status = c
            .compress_vec(&data[done..], &mut out, flush)
            .expect("deflate of a buffer");
        let all_in = usize::try_from(c.total_in()).expect("small") == data.len();
        let finished = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if finished {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The node table

struct Entry {
    values: Values,
    json: Box<str>,
    port_json: Box<str>,
    created: i64,
    updated: i64,
    port_created: i64,
}

#[derive(Default)]
struct Nodes {
    by_index: BTreeMap<u32, Entry>,
    by_ident: HashMap<String, u32>,
    ports: HashMap<String, u32>,
    created: BTreeSet<(i64, u32)>,
    updated: BTreeSet<(i64, u32)>,
    port_created: BTreeSet<(i64, u32)>,
    next_index: u32,
}

impl Nodes {
    fn insert(&mut self, e: Entry) {
        let i = e.values.index;
        self.by_ident.insert(e.values.uuid.clone(), i);
        self.by_ident.insert(e.values.name.clone(), i);
        self.ports.insert(e.values.port_uuid(), i);
        self.created.insert((e.created, i));
        self.updated.insert((e.updated, i));
        self.port_created.insert((e.port_created, i));
        self.next_index = self.next_index.max(i + 1);
        self.by_index.insert(i, e);
    }

    fn remove(&mut self, i: u32) -> Option<Entry> {
        let e = self.by_index.remove(&i)?;
        self.by_ident.remove(&e.values.uuid);
        self.by_ident.remove(&e.values.name);
        self.ports.remove(&e.values.port_uuid());
        self.created.remove(&(e.created, i));
        self.updated.remove(&(e.updated, i));
        self.port_created.remove(&(e.port_created, i));
        Some(e)
    }
}

struct Fake {
    base: String,
    max_limit: usize,
    max_minor: u32,
    templates: [Template; 2],
    nodes: RwLock<Nodes>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    seq: u64,
    by_kind: BTreeMap<&'static str, (u64, u64)>,
    log: VecDeque<(u64, f64, &'static str, String)>,
}

impl Fake {
    fn entry(&self, v: Values, created: i64, updated: i64, port_created: i64) -> Entry {
        let t = &self.templates[v.index as usize % 2];
        let drive = t.configdrive(&v);
        let json = node_json(&self.base, &v, &drive, created, updated);
        let port_json = port_json(&self.base, &v, port_created);
        Entry {
            values: v,
            json: json.into(),
            port_json: port_json.into(),
            created,
            updated,
            port_created,
        }
    }

    fn record(&self, kind: &'static str, path: String, bytes: usize) {
        let mut c = self.counts.lock().expect("counts");
        c.seq += 1;
        let seq = c.seq;
        let slot = c.by_kind.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += bytes as u64;
        if c.log.len() >= LOG_SIZE {
            c.log.pop_front();
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        c.log.push_back((seq, t, kind, path));
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An Ironic timestamp: `2026-11-30T10:19:50.799565+00:00`.
fn stamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("a time in range")
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// A node as `GET /v1/nodes?detail=True` lists it at API 1.115 (the fields of Ironic 39's
/// answer, in its order).
fn node_json(base: &str, v: &Values, drive: &str, created: i64, updated: i64) -> String {
    let (uuid, name) = (&v.uuid, &v.name);
    let nd = network_data(v.kind(), &v.mac, &format!("\"{}\"", v.address));
    let (c, u) = (stamp(created), stamp(updated));
    let link = |what: &str| {
        format!(
            "[{{\"href\": \"{base}/v1/nodes/{uuid}{what}\", \"rel\": \"self\"}}, {{\"href\": \"{base}/nodes/{uuid}{what}\", \"rel\": \"bookmark\"}}]"
        )
    };
    format!(
        "{{\"uuid\": \"{uuid}\", \"created_at\": \"{c}\", \"updated_at\": \"{u}\", \"automated_clean\": null, \
         \"bios_interface\": \"no-bios\", \"boot_interface\": \"fake\", \"boot_mode\": null, \"clean_step\": {{}}, \
         \"conductor_group\": \"\", \"console_enabled\": false, \"console_interface\": \"no-console\", \
         \"disable_power_off\": false, \"deploy_interface\": \"fake\", \"deploy_step\": {{}}, \"description\": null, \
         \"driver\": \"fake-hardware\", \"driver_info\": {{}}, \"driver_internal_info\": {{\"clean_steps\": null, \
         \"automatic_lessee\": true, \"deploy_steps\": null, \"last_power_state_change\": \"{c}\"}}, \"extra\": {{}}, \
         \"fault\": null, \"firmware_interface\": \"no-firmware\", \"health\": null, \"inspection_finished_at\": null, \
         \"inspection_started_at\": null, \"inspect_interface\": \"no-inspect\", \"instance_info\": {{\"display_name\": \
         \"vm-{name}\", \"image_source\": \"0b0e0000-0000-4000-b000-000000000000\", \"root_gb\": \"10\", \
         \"project_id\": \"bench\", \"configdrive\": \"{drive}\"}}, \"instance_name\": null, \"instance_uuid\": \
         \"{iu}\", \"last_error\": null, \"lessee\": \"bench\", \"maintenance\": false, \"maintenance_reason\": null, \
         \"management_interface\": \"fake\", \"name\": \"{name}\", \"network_data\": {nd}, \"network_interface\": \
         \"noop\", \"owner\": null, \"parent_node\": null, \"power_interface\": \"fake\", \"power_state\": \"power on\", \
         \"properties\": {{\"cpus\": 8, \"memory_mb\": 16384, \"local_gb\": 100, \"cpu_arch\": \"x86_64\"}}, \
         \"protected\": false, \"protected_reason\": null, \"provision_state\": \"active\", \"provision_updated_at\": \
         \"{u}\", \"raid_config\": {{}}, \"raid_interface\": \"no-raid\", \"rescue_interface\": \"no-rescue\", \
         \"reservation\": null, \"resource_class\": null, \"retired\": false, \"retired_reason\": null, \"secure_boot\": \
         null, \"service_step\": {{}}, \"shard\": null, \"storage_interface\": \"noop\", \"target_power_state\": null, \
         \"target_provision_state\": null, \"target_raid_config\": {{}}, \"traits\": [], \"vendor_interface\": \"fake\", \
         \"links\": {l}, \"conductor\": \"fake-ironic\", \"allocation_uuid\": null, \"chassis_uuid\": null, \"ports\": \
         {lp}, \"states\": {ls}, \"portgroups\": {lg}, \"volume\": {lv}}}",
        iu = v.instance_uuid,
        l = link(""),
        lp = link("/ports"),
        ls = link("/states"),
        lg = link("/portgroups"),
        lv = link("/volume"),
    )
}

/// A port as `GET /v1/ports?detail=True` lists it.
fn port_json(base: &str, v: &Values, created: i64) -> String {
    let p = v.port_uuid();
    format!(
        "{{\"uuid\": \"{p}\", \"created_at\": \"{c}\", \"updated_at\": null, \"address\": \"{mac}\", \"extra\": {{}}, \
         \"internal_info\": {{}}, \"is_smartnic\": false, \"local_link_connection\": {{}}, \"physical_network\": null, \
         \"pxe_enabled\": true, \"node_uuid\": \"{n}\", \"name\": \"{name}-eth0\", \"description\": null, \"vendor\": \
         null, \"category\": null, \"available_for_dynamic_portgroup\": true, \"links\": [{{\"href\": \
         \"{base}/v1/ports/{p}\", \"rel\": \"self\"}}, {{\"href\": \"{base}/ports/{p}\", \"rel\": \"bookmark\"}}], \
         \"portgroup_uuid\": null}}",
        c = stamp(created),
        mac = v.mac,
        n = v.uuid,
        name = v.name,
    )
}

/// Nodes 0..count, made on every core: created two days ago one millisecond apart,
/// updated (deployed) one day after their creation, their port a moment after them.
fn populate(fake: &Fake, count: u32) -> Vec<Entry> {
    let start = now_micros() - 2 * 86_400_000_000;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = (count as usize).div_ceil(threads).max(1);
    let mut out: Vec<Entry> = Vec::with_capacity(count as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|lo| {
                let hi = (lo as usize + chunk).min(count as usize) as u32;
                s.spawn(move || {
                    (lo..hi)
                        .map(|i| {
                            let created = start + i64::from(i) * 1000;
                            fake.entry(
                                Values::of(i, 0),
                                created,
                                created + 86_400_000_000,
                                created + 100,
                            )
                        })
                        .collect::<Vec<Entry>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("a generator thread"));
        }
    });
    out
}

/// The configdrive of node 0 of each kind, decoded, must be the template image with the
/// node's values: the joined gzip members are one valid stream.
fn self_check(fake: &Fake) -> Result<(), String> {
    for i in 0..2u32 {
        let v = Values::of(i, 7);
        let t = &fake.templates[i as usize];
        let gz = base64::engine::general_purpose::STANDARD
            .decode(t.configdrive(&v))
            .map_err(|e| e.to_string())?;
        let mut image = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut image)
            .map_err(|e| format!("the configdrive of node {i} does not decompress: {e}"))?;
        let stretch = t.stretch_for(&v);
        let user = v.user_data();
        if image.len() != t.total as usize
            || find_all(&image, &stretch).is_empty()
            || find_all(&image, user.as_bytes()).len() != 2
        {
            return Err(format!("the configdrive of node {i} is not its image"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The Ironic API

type Shared = Arc<Fake>;

/// A refusal, answered in Ironic's error shape.
struct Fail(StatusCode, String);

impl Fail {
    fn new(status: StatusCode, text: &str) -> Fail {
        Fail(status, text.to_string())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        ironic_error(self.0, &self.1)
    }
}

fn ironic_error(status: StatusCode, text: &str) -> Response {
    let inner = json!({"faultstring": text, "faultcode": "Client", "debuginfo": null}).to_string();
    (
        status,
        [("Content-Type", "application/json")],
        json!({ "error_message": inner }).to_string(),
    )
        .into_response()
}

fn answer(fake: &Fake, kind: &'static str, path: String, minor: u32, body: String) -> Response {
    fake.record(kind, path, body.len());
    (
        StatusCode::OK,
        [
            ("Content-Type", "application/json".to_string()),
            ("X-OpenStack-Ironic-API-Version", format!("1.{minor}")),
            (
                "X-OpenStack-Ironic-API-Maximum-Version",
                format!("1.{}", fake.max_minor),
            ),
            ("X-OpenStack-Ironic-API-Minimum-Version", "1.1".into()),
        ],
        body,
    )
        .into_response()
}

/// The microversion asked for (1.1 without the header); Err when Ironic would refuse it.
fn microversion(fake: &Fake, headers: &HeaderMap) -> Result<u32, Fail> {
    let Some(v) = headers.get("x-openstack-ironic-api-version") else {
        return Ok(1);
    };
    let minor = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m <= fake.max_minor => Ok(m),
        _ => Err(Fail::new(
            StatusCode::NOT_ACCEPTABLE,
            "Version not supported",
        )),
    }
}

async fn root(State(fake): State<Shared>) -> Response {
    let v = format!("1.{}", fake.max_minor);
    let links = json!([{"href": format!("{}/v1/", fake.base), "rel": "self"}]);
    let doc = json!({
        "name": "OpenStack Ironic API",
        "description": "Ironic is an OpenStack project which enables the provision and management of baremetal machines.",
        "default_version": {"id": "v1", "links": links, "status": "CURRENT", "min_version": "1.1", "version": v},
        "versions": [{"id": "v1", "links": links, "status": "CURRENT", "min_version": "1.1", "version": v}],
    });
    answer(&fake, "root", "/".into(), 1, doc.to_string())
}

/// A listing's query.
struct Listing {
    detail: bool,
    fields: Option<Vec<String>>,
    sort: Option<String>,
    desc: bool,
    limit: usize,
    marker: Option<String>,
    node: Option<String>,
}

fn listing(fake: &Fake, query: &str) -> Result<Listing, Fail> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let bad = |t: &str| Fail::new(StatusCode::BAD_REQUEST, t);
    // Node UUIDs are the index in hex, zero-padded: UUID order is index order.
    let sort = get("sort_key").filter(|k| k != "id" && k != "uuid");
    if sort
        .as_deref()
        .is_some_and(|k| !matches!(k, "created_at" | "updated_at"))
    {
        return Err(bad("The sort_key value is an invalid field for sorting"));
    }
    let desc = match get("sort_dir").as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(bad("Invalid sort direction")),
    };
    let limit = match get("limit") {
        None => fake.max_limit,
        Some(l) => match l.parse::<usize>() {
            Ok(0) | Err(_) => return Err(bad("Limit must be positive")),
            Ok(n) => n.min(fake.max_limit),
        },
    };
    let detail = match get("detail").as_deref() {
        None => false,
        Some(d) => d.eq_ignore_ascii_case("true"),
    };
    let fields: Option<Vec<String>> =
        get("fields").map(|f| f.split(',').map(str::to_string).collect());
    if detail && fields.is_some() {
        return Err(bad(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    Ok(Listing {
        detail,
        fields,
        sort,
        desc,
        limit,
        marker: get("marker"),
        node: get("node"),
    })
}

/// The indices of one page: in the order asked for, after the marker, at most `limit`.
fn page_indices(
    nodes: &Nodes,
    order: &BTreeSet<(i64, u32)>,
    by_key: impl Fn(u32) -> i64,
    q: &Listing,
    marker: Option<u32>,
) -> Vec<u32> {
    let key = marker.map(|m| (by_key(m), m));
    if q.sort.is_none() {
        let range = match (marker, q.desc) {
            (Some(m), false) => nodes.by_index.range((Bound::Excluded(m), Bound::Unbounded)),
            (Some(m), true) => nodes.by_index.range(..m),
            (None, _) => nodes.by_index.range(..),
        };
        let it = range.map(|(i, _)| *i);
        return if q.desc {
            it.rev().take(q.limit).collect()
        } else {
            it.take(q.limit).collect()
        };
    }
    let range = match (key, q.desc) {
        (Some(k), false) => order.range((Bound::Excluded(k), Bound::Unbounded)),
        (Some(k), true) => order.range(..k),
        (None, _) => order.range(..),
    };
    let it = range.map(|(_, i)| *i);
    if q.desc {
        it.rev().take(q.limit).collect()
    } else {
        it.take(q.limit).collect()
    }
}

async fn list(
    State(fake): State<Shared>,
    Path(kind): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let path = format!("/v1/{kind}?{query}");
    let minor = match microversion(&fake, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let q = match listing(&fake, &query) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let label = label(&kind, &q);
    let nodes = fake.nodes.read().expect("nodes");
    let body = match kind.as_str() {
        "nodes" => list_nodes(&fake, &nodes, &q),
        "ports" => list_ports(&fake, &nodes, &q),
        "portgroups" => Ok(r#"{"portgroups": []}"#.to_string()),
        _ => return ironic_error(StatusCode::NOT_FOUND, "The resource could not be found."),
    };
    drop(nodes);
    match body {
        Ok(body) => answer(&fake, label, path, minor, body),
        Err(r) => r.into_response(),
    }
}

/// What a listing is, for the counts.
fn label(kind: &str, q: &Listing) -> &'static str {
    match (
        kind,
        q.node.is_some(),
        q.fields.is_some(),
        q.sort.as_deref(),
    ) {
        ("nodes", _, true, _) => "nodes:fields",
        ("nodes", _, _, Some("updated_at")) => "nodes:sorted:updated_at",
        ("nodes", _, _, Some(_)) => "nodes:sorted:created_at",
        ("nodes", _, _, None) => "nodes:all",
        ("ports", true, _, _) => "ports:of_node",
        ("ports", _, _, Some(_)) => "ports:sorted",
        ("ports", _, _, None) => "ports:all",
        ("portgroups", true, _, _) => "portgroups:of_node",
        ("portgroups", _, _, Some(_)) => "portgroups:sorted",
        ("portgroups", _, _, None) => "portgroups:all",
        _ => "other",
    }
}

fn marker_index(ids: &HashMap<String, u32>, marker: Option<&String>) -> Result<Option<u32>, Fail> {
    match marker {
        None => Ok(None),
        Some(m) => ids
            .get(m)
            .copied()
            .map(Some)
            .ok_or_else(|| Fail::new(StatusCode::BAD_REQUEST, &format!("Marker {m} not found"))),
    }
}

fn list_nodes(fake: &Fake, nodes: &Nodes, q: &Listing) -> Result<String, Fail> {
    let marker = marker_index(&nodes.by_ident, q.marker.as_ref())?;
    let order = if q.sort.as_deref() == Some("updated_at") {
        &nodes.updated
    } else {
        &nodes.created
    };
    let updated = q.sort.as_deref() == Some("updated_at");
    let key = |i: u32| {
        let e = &nodes.by_index[&i];
        if updated {
            e.updated
        } else {
            e.created
        }
    };
    let page = page_indices(nodes, order, key, q, marker);
    let mut items = Vec::with_capacity(page.len());
    for i in &page {
        let e = &nodes.by_index[i];
        items.push(match &q.fields {
            _ if q.detail => e.json.to_string(),
            Some(f) => some_fields(fake, e, f)?,
            None => some_fields(fake, e, &SUMMARY.map(str::to_string))?,
        });
    }
    let last = page.last().map(|i| nodes.by_index[i].values.uuid.clone());
    Ok(page_body(fake, "nodes", &items, q, last))
}

/// The fields `GET /v1/nodes` without `detail` returns.
const SUMMARY: [&str; 6] = [
    "uuid",
    "instance_uuid",
    "maintenance",
    "power_state",
    "provision_state",
    "name",
];

/// A node with only `fields` (and its links, as Ironic adds them).
fn some_fields(fake: &Fake, e: &Entry, fields: &[String]) -> Result<String, Fail> {
    let v = &e.values;
    let mut out = serde_json::Map::new();
    let mut full: Option<serde_json::Map<String, Value>> = None;
    for f in fields {
        let value = match f.as_str() {
            "uuid" => json!(v.uuid),
            "name" => json!(v.name),
            "instance_uuid" => json!(v.instance_uuid),
            "maintenance" => json!(false),
            "power_state" => json!("power on"),
            "provision_state" => json!("active"),
            "created_at" => json!(stamp(e.created)),
            "updated_at" | "provision_updated_at" => json!(stamp(e.updated)),
            other => {
                let all = full.get_or_insert_with(|| {
                    serde_json::from_str(&e.json).expect("the fake's own JSON")
                });
                match all.get(other) {
                    Some(x) => x.clone(),
                    None => {
                        return Err(Fail::new(
                            StatusCode::BAD_REQUEST,
                            &format!("Field(s) \"{other}\" are not valid"),
                        ))
                    }
                }
            }
        };
        out.insert(f.clone(), value);
    }
    out.insert(
        "links".into(),
        json!([{"href": format!("{}/v1/nodes/{}", fake.base, v.uuid), "rel": "self"},
               {"href": format!("{}/nodes/{}", fake.base, v.uuid), "rel": "bookmark"}]),
    );
    Ok(Value::Object(out).to_string())
}

fn list_ports(fake: &Fake, nodes: &Nodes, q: &Listing) -> Result<String, Fail> {
    if let Some(node) = &q.node {
        let Some(i) = nodes.by_ident.get(node) else {
            return Err(Fail::new(
                StatusCode::NOT_FOUND,
                &format!("Node {node} could not be found."),
            ));
        };
        let e = &nodes.by_index[i];
        return Ok(format!("{{\"ports\": [{}]}}", e.port_json));
    }
    let marker = marker_index(&nodes.ports, q.marker.as_ref())?;
    let key = |i: u32| nodes.by_index[&i].port_created;
    let page = page_indices(nodes, &nodes.port_created, key, q, marker);
    let items: Vec<String> = page
        .iter()
        .map(|i| nodes.by_index[i].port_json.to_string())
        .collect();
    let last = page.last().map(|i| nodes.by_index[i].values.port_uuid());
    Ok(page_body(fake, "ports", &items, q, last))
}

/// `{"KIND": [ITEMS], "next": ...}`, `next` on a full page, as Ironic does.
fn page_body(
    fake: &Fake,
    kind: &str,
    items: &[String],
    q: &Listing,
    last: Option<String>,
) -> String {
    let size: usize = items.iter().map(|i| i.len() + 2).sum();
    let mut body = String::with_capacity(size + 300);
    body.push_str(&format!("{{\"{kind}\": ["));
    body.push_str(&items.join(", "));
    body.push(']');
    if let (true, Some(last)) = (items.len() == q.limit, last) {
        let mut next = format!(
            "{}/v1/{kind}?sort_key={}&sort_dir={}",
            fake.base,
            q.sort.as_deref().unwrap_or("id"),
            if q.desc { "desc" } else { "asc" }
        );
        if q.detail {
            next.push_str("&detail=True");
        }
        if let Some(f) = &q.fields {
            next.push_str(&format!("&fields={}", f.join(",")));
        }
        next.push_str(&format!("&limit={}&marker={last}", q.limit));
        body.push_str(&format!(", \"next\": \"{next}\""));
    }
    body.push('}');
    body
}

async fn one_node(
    State(fake): State<Shared>,
    Path(ident): Path<String>,
    headers: HeaderMap,
) -> Response {
    let minor = match microversion(&fake, &headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let path = format!("/v1/nodes/{ident}");
    let nodes = fake.nodes.read().expect("nodes");
    let json = nodes
        .by_ident
        .get(&ident)
        .map(|i| nodes.by_index[i].json.to_string());
    drop(nodes);
    match json {
        Some(j) => answer(&fake, "nodes:one", path, minor, j),
        None => {
            fake.record("nodes:one", path, 0);
            ironic_error(
                StatusCode::NOT_FOUND,
                &format!("Node {ident} could not be found."),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Control endpoints

async fn stats(State(fake): State<Shared>) -> Response {
    let nodes = fake.nodes.read().expect("nodes").by_index.len();
    let c = fake.counts.lock().expect("counts");
    let by_kind: serde_json::Map<String, Value> = c
        .by_kind
        .iter()
        .map(|(k, (n, b))| ((*k).to_string(), json!({"requests": n, "bytes": b})))
        .collect();
    let total: u64 = c.by_kind.values().map(|(n, _)| n).sum();
    let bytes: u64 = c.by_kind.values().map(|(_, b)| b).sum();
    axum::Json(json!({"nodes": nodes, "seq": c.seq, "requests": total, "bytes": bytes, "by_kind": by_kind}))
        .into_response()
}

async fn requests(State(fake): State<Shared>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let since = q.get("since").copied().unwrap_or(0);
    let c = fake.counts.lock().expect("counts");
    let out: Vec<Value> = c
        .log
        .iter()
        .filter(|(seq, ..)| *seq > since)
        .map(|(seq, t, kind, path)| json!({"seq": seq, "t": t, "kind": kind, "path": path}))
        .collect();
    axum::Json(json!({"seq": c.seq, "requests": out})).into_response()
}

fn describe(v: &Values) -> Value {
    json!({"index": v.index, "uuid": v.uuid, "name": v.name, "instance_uuid": v.instance_uuid,
           "address": v.address, "mac": v.mac, "user_data": v.user_data(), "revision": v.revision})
}

fn index_param(q: &HashMap<String, u64>) -> Result<u32, Fail> {
    q.get("index")
        .and_then(|i| u32::try_from(*i).ok())
        .ok_or_else(|| Fail::new(StatusCode::BAD_REQUEST, "index=I wanted"))
}

async fn node_info(State(fake): State<Shared>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let i = match index_param(&q) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match fake.nodes.read().expect("nodes").by_index.get(&i) {
        Some(e) => axum::Json(describe(&e.values)).into_response(),
        None => (StatusCode::NOT_FOUND, "no such node\n").into_response(),
    }
}

async fn deploy(State(fake): State<Shared>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let count = q.get("count").copied().unwrap_or(1).clamp(1, 10_000) as u32;
    let mut nodes = fake.nodes.write().expect("nodes");
    let first = nodes.next_index;
    if first + count - 1 > MAX_INDEX {
        return (StatusCode::CONFLICT, "no more node names\n").into_response();
    }
    let mut out = Vec::new();
    for i in first..first + count {
        let now = now_micros();
        let e = fake.entry(Values::of(i, 0), now, now, now);
        out.push(describe(&e.values));
        nodes.insert(e);
    }
    axum::Json(Value::Array(out)).into_response()
}

async fn edit(State(fake): State<Shared>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let i = match index_param(&q) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let mut nodes = fake.nodes.write().expect("nodes");
    let Some(old) = nodes.remove(i) else {
        return (StatusCode::NOT_FOUND, "no such node\n").into_response();
    };
    let v = Values::of(i, old.values.revision + 1);
    let e = fake.entry(
        v,
        old.created,
        now_micros().max(old.updated + 1),
        old.port_created,
    );
    let out = describe(&e.values);
    nodes.insert(e);
    axum::Json(out).into_response()
}

async fn delete(State(fake): State<Shared>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let i = match index_param(&q) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match fake.nodes.write().expect("nodes").remove(i) {
        Some(e) => axum::Json(describe(&e.values)).into_response(),
        None => (StatusCode::NOT_FOUND, "no such node\n").into_response(),
    }
}

fn router(fake: Shared) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1/{kind}", get(list))
        .route("/v1/nodes/{ident}", get(one_node))
        .route("/_fake/stats", get(stats))
        .route("/_fake/requests", get(requests))
        .route("/_fake/node", get(node_info))
        .route("/_fake/deploy", post(deploy))
        .route("/_fake/edit", post(edit))
        .route("/_fake/delete", post(delete))
        .with_state(fake)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.nodes > MAX_INDEX + 1 {
        eprintln!("fake-ironic: at most {} nodes", MAX_INDEX + 1);
        return std::process::ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-ironic: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let t0 = Instant::now();
    let listener = std::net::TcpListener::bind(("127.0.0.1", args.port))
        .map_err(|e| format!("cannot bind 127.0.0.1:{}: {e}", args.port))?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let templates = [
        Template::build(Kind::Phy, &args.genisoimage)?,
        Template::build(Kind::Vlan, &args.genisoimage)?,
    ];
    let fake = Arc::new(Fake {
        base: base.clone(),
        max_limit: args.max_limit.max(1),
        max_minor: args.max_minor,
        templates,
        nodes: RwLock::new(Nodes::default()),
        counts: Mutex::new(Counts::default()),
    });
    self_check(&fake)?;
    let entries = populate(&fake, args.nodes);
    {
        let mut nodes = fake.nodes.write().expect("nodes");
        for e in entries {
            nodes.insert(e);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        println!(
            "fake-ironic listening on {base}, {} nodes (made in {:.1}s)",
            args.nodes,
            t0.elapsed().as_secs_f64()
        );
        axum::serve(listener, router(fake))
            .await
            .map_err(|e| e.to_string())
    })
}
