//! Per-request cost of the request path without the network: client address, zone,
//! rate limit, hygiene, token, identity and render, over the test fixture inventory; the
//! kernel query a MAC-verifying zone adds; decoding an ISO configdrive.
//! `cargo bench --bench filters` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ironic_metadata::probe::{self, RequestPath};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = RequestPath::from_files(
        &root.join("tests/fixtures/nodes.json"),
        &root.join("tests/fixtures/policies/open"),
    )
    .unwrap();
    let peer: IpAddr = "127.0.0.11".parse().unwrap();
    let mut group = c.benchmark_group("request_path");
    for (name, target) in [
        ("meta_data_json", "/openstack/latest/meta_data.json"),
        ("network_data_json", "/openstack/latest/network_data.json"),
        ("ec2_instance_id", "/latest/meta-data/instance-id"),
        ("ec2_listing", "/latest/meta-data/"),
    ] {
        assert_eq!(path.get(peer, target).0, 200, "{target}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(path.get(peer, black_box(target))))
        });
    }
    // The filters alone: a request refused at identity (no render).
    let stranger: IpAddr = "127.0.0.99".parse().unwrap();
    assert_eq!(
        path.get(stranger, "/openstack/latest/meta_data.json").0,
        404
    );
    group.bench_function("filters_then_unknown_node", |b| {
        b.iter(|| black_box(path.get(stranger, "/openstack/latest/meta_data.json")))
    });
    group.finish();

    // The same paths with identity tokens configured (a signing key loaded): what the
    // feature costs the requests that do not ask for a token.
    let keys = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("tests/fixtures/identity/ec-sec1.pem"),
        keys.path().join("k.pem"),
    )
    .unwrap();
    let with_keys = RequestPath::from_files(
        &root.join("tests/fixtures/nodes.json"),
        &root.join("tests/fixtures/policies/open"),
    )
    .and_then(|p| p.with_identity(keys.path()))
    .unwrap();
    let mut group = c.benchmark_group("request_path_identity_configured");
    for (name, target) in [
        ("meta_data_json", "/openstack/latest/meta_data.json"),
        ("vendor_data2_json", "/openstack/latest/vendor_data2.json"),
        ("ec2_instance_id", "/latest/meta-data/instance-id"),
    ] {
        assert_eq!(
            with_keys.get(peer, target),
            path.get(peer, target),
            "{target}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(with_keys.get(peer, black_box(target))))
        });
    }
    group.finish();

    // What a zone with verify_mac adds per request: the kernel's route to the client (here
    // loopback, answered as local); an on-link client costs one more query of the same kind,
    // its neighbour entry.
    let mut group = c.benchmark_group("link_layer");
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(probe::route_query(lo));
    group.bench_function("route_query", |b| {
        b.iter(|| black_box(probe::route_query(black_box(lo))))
    });
    group.finish();

    // Decoding an ISO configdrive, done once per node version when the index is built.
    let iso = std::fs::read_to_string(root.join("tests/fixtures/configdrive-iso.b64")).unwrap();
    assert!(probe::decode_configdrive(&iso));
    let mut group = c.benchmark_group("configdrive");
    group.bench_function("iso_gzip_base64_decode", |b| {
        b.iter(|| black_box(probe::decode_configdrive(black_box(&iso))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
