//! Per-request cost of the request path without the network: client address, zone,
//! rate limit, hygiene, token, identity and render, over the test fixture inventory; the
//! kernel query a MAC-verifying zone adds; decoding an ISO configdrive.
//! `cargo bench --bench filters` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use ironic_metadata::gateway::{self, Context, Request};
use ironic_metadata::identity::DEFAULT_SERVED_STATES;
use ironic_metadata::inventory::{file, Catalog};
use ironic_metadata::metadata::configdrive;
use ironic_metadata::metadata::password::PasswordStore;
use ironic_metadata::metrics::Metrics;
use ironic_metadata::neighbour::{Neighbours, Netlink};
use ironic_metadata::policy::store::PolicyStore;
use ironic_metadata::policy::token::TokenKey;

fn fixtures() -> (Catalog, PolicyStore) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let served = DEFAULT_SERVED_STATES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let catalog = Catalog::new("bench", served);
    catalog.publish(file::load(&root.join("tests/fixtures/nodes.json")).unwrap());
    let policy = PolicyStore::load(
        &root.join("tests/fixtures/policies/open"),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    (catalog, policy)
}

fn bench(c: &mut Criterion) {
    let (catalog, store) = fixtures();
    let policy = store.current();
    let tokens = TokenKey::random();
    let passwords = PasswordStore::new(None).unwrap();
    let ctx = Context {
        catalog: &catalog,
        neighbours: &ironic_metadata::neighbour::Netlink,
        policy: &policy,
        tokens: &tokens,
        passwords: &passwords,
        now: SystemTime::now(),
        today: "2026-11-27",
    };
    let peer = Some("127.0.0.11".parse().unwrap());
    let mut group = c.benchmark_group("request_path");
    for (name, path) in [
        ("meta_data_json", "/openstack/latest/meta_data.json"),
        ("network_data_json", "/openstack/latest/network_data.json"),
        ("ec2_instance_id", "/latest/meta-data/instance-id"),
        ("ec2_listing", "/latest/meta-data/"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = Request {
                    method: "GET",
                    path: black_box(path),
                    peer,
                    ..Request::default()
                };
                black_box(gateway::handle(&ctx, &req))
            })
        });
    }
    // The filters alone: a request refused at identity (no render).
    group.bench_function("filters_then_unknown_node", |b| {
        let peer = Some("127.0.0.99".parse().unwrap());
        b.iter(|| {
            let req = Request {
                method: "GET",
                path: "/openstack/latest/meta_data.json",
                peer,
                ..Request::default()
            };
            black_box(gateway::handle(&ctx, &req))
        })
    });
    group.finish();

    // What a zone with verify_mac adds per request: the kernel's route to the client (here
    // loopback, answered as local); an on-link client costs one more query of the same kind,
    // its neighbour entry.
    let mut group = c.benchmark_group("link_layer");
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    group.bench_function("route_query", |b| {
        b.iter(|| black_box(Netlink.resolve(black_box(lo)).unwrap()))
    });
    group.finish();

    // Decoding an ISO configdrive, done once per node version when the index is built.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let iso = std::fs::read_to_string(root.join("tests/fixtures/configdrive-iso.b64")).unwrap();
    let mut group = c.benchmark_group("configdrive");
    group.bench_function("iso_gzip_base64_decode", |b| {
        b.iter(|| black_box(configdrive::decode(black_box(&iso)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
