//! Every route of the first-version trees, through the real binary, for known nodes, an
//! unknown address, a contested address and unserved or unreadable nodes.
//! Expected bodies follow Nova's handler (`nova/api/metadata/base.py`: sorted listings
//! joined by "\n" without a final newline, `json.dumps` JSON) and Ironic's configdrive
//! builder (`build_configdrive`: `uuid`/`name` defaults appended to meta_data, JSON
//! user_data dumped with `json.dumps`).

mod common;

use common::{client_from, fixture, get, Server};

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const ALPHA: &str = "127.0.0.11";
const BRAVO: &str = "127.0.0.12";

/// meta_data.json carries a fresh random_seed each time (as Nova's): check that it is
/// base64 of 512 bytes, then compare the rest byte for byte with `<seed>` in its place.
async fn check_md(s: &Server, from: &str, path: &str, body: &str) {
    use base64::Engine;
    let (status, ct, got) = get(&client_from(from), &s.url(path)).await;
    assert_eq!((status, ct.as_str()), (200, JSON), "GET {path} from {from}");
    let key = "\"random_seed\": \"";
    let start = got.find(key).expect("random_seed present") + key.len();
    let end = start + got[start..].find('"').unwrap();
    let seed = base64::engine::general_purpose::STANDARD
        .decode(&got[start..end])
        .expect("base64 seed");
    assert_eq!(seed.len(), 512);
    assert_eq!(
        format!("{}<seed>{}", &got[..start], &got[end..]),
        body,
        "GET {path} from {from}"
    );
    // The next answer is the same document with a seed of its own.
    let (_, _, again) = get(&client_from(from), &s.url(path)).await;
    assert_eq!(
        (&again[..start], &again[end..]),
        (&got[..start], &got[end..])
    );
    assert_ne!(
        &again[start..end],
        &got[start..end],
        "the seed is fresh per answer"
    );
}

async fn check(s: &Server, from: &str, path: &str, status: u16, ct: &str, body: &str) {
    let got = get(&client_from(from), &s.url(path)).await;
    assert_eq!(
        got,
        (status, ct.to_string(), body.to_string()),
        "GET {path} from {from}"
    );
}

#[tokio::test]
async fn openstack_tree_for_a_node_with_a_configdrive() {
    let s = Server::start(&fixture("nodes.json"));
    check(&s, ALPHA, "/openstack", 200, TEXT,
        "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n2018-08-27\n2020-10-14\n2025-04-04\nlatest").await;
    for p in [
        "/openstack/latest",
        "/openstack/latest/",
        "/openstack/2025-04-04",
    ] {
        check(
            &s,
            ALPHA,
            p,
            200,
            TEXT,
            "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json",
        )
        .await;
    }
    // Version gating of the listing (Nova's `_handle_version`).
    check(
        &s,
        ALPHA,
        "/openstack/2012-08-10",
        200,
        TEXT,
        "meta_data.json\nuser_data",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/2015-10-15/",
        200,
        TEXT,
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json",
    )
    .await;
    // Nova's `_metadata_as_json` keys and order, filled from the configdrive's meta_data
    // (uuid and name default to the node's, as Ironic's `build_configdrive` does): `keys`
    // mirrors `public_keys`, launch_index 0, no project, no devices, no dedicated CPUs.
    check_md(&s, ALPHA, "/openstack/latest/meta_data.json",
        r#"{"uuid": "aaaaaaaa-0000-4000-8000-000000000011", "public_keys": {"ops": "ssh-ed25519 AAAAops ops@example.com", "backup": "ssh-rsa AAAAbackup backup@example.com"}, "keys": [{"name": "ops", "type": "ssh", "data": "ssh-ed25519 AAAAops ops@example.com"}, {"name": "backup", "type": "ssh", "data": "ssh-rsa AAAAbackup backup@example.com"}], "hostname": "alpha.example.com", "name": "alpha", "launch_index": 0, "availability_zone": "rack-1", "random_seed": "<seed>", "project_id": null, "devices": [], "dedicated_cpus": []}"#).await;
    // Each version carries exactly its keys: 2012-08-10 has no random_seed (2013-04-04),
    // no project_id (2015-10-15), no devices (2016-06-30), no dedicated_cpus (2020-10-14).
    check(&s, ALPHA, "/openstack/2012-08-10/meta_data.json", 200, JSON,
        r#"{"uuid": "aaaaaaaa-0000-4000-8000-000000000011", "public_keys": {"ops": "ssh-ed25519 AAAAops ops@example.com", "backup": "ssh-rsa AAAAbackup backup@example.com"}, "keys": [{"name": "ops", "type": "ssh", "data": "ssh-ed25519 AAAAops ops@example.com"}, {"name": "backup", "type": "ssh", "data": "ssh-rsa AAAAbackup backup@example.com"}], "hostname": "alpha.example.com", "name": "alpha", "launch_index": 0, "availability_zone": "rack-1"}"#).await;
    check_md(&s, ALPHA, "/openstack/2016-06-30/meta_data.json",
        r#"{"uuid": "aaaaaaaa-0000-4000-8000-000000000011", "public_keys": {"ops": "ssh-ed25519 AAAAops ops@example.com", "backup": "ssh-rsa AAAAbackup backup@example.com"}, "keys": [{"name": "ops", "type": "ssh", "data": "ssh-ed25519 AAAAops ops@example.com"}, {"name": "backup", "type": "ssh", "data": "ssh-rsa AAAAbackup backup@example.com"}], "hostname": "alpha.example.com", "name": "alpha", "launch_index": 0, "availability_zone": "rack-1", "random_seed": "<seed>", "project_id": null, "devices": []}"#).await;
    check(
        &s,
        ALPHA,
        "/openstack/latest/user_data",
        200,
        "text/plain",
        "#cloud-config\nhostname: alpha\n",
    )
    .await;
    check(&s, ALPHA, "/openstack/latest/network_data.json", 200, JSON,
        r#"{"links": [{"id": "port-0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:11", "mtu": 1500}], "networks": [{"id": "network0", "type": "ipv4", "link": "port-0", "network_id": "11111111-2222-4333-8444-555555555555", "ip_address": "127.0.0.11", "netmask": "255.0.0.0", "routes": []}, {"id": "network1", "type": "ipv6", "link": "port-0", "network_id": "11111111-2222-4333-8444-555555555555", "ip_address": "::1", "netmask": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "routes": []}], "services": []}"#).await;
    // Static vendor data is the configdrive's vendor_data; vendor_data2 wraps it in "static".
    check(
        &s,
        ALPHA,
        "/openstack/latest/vendor_data.json",
        200,
        JSON,
        r##"{"cloud-init": "#cloud-config\nruncmd: [true]\n"}"##,
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/latest/vendor_data2.json",
        200,
        JSON,
        r##"{"static": {"cloud-init": "#cloud-config\nruncmd: [true]\n"}}"##,
    )
    .await;
    // Files a version does not have, unknown files and unknown versions: 404.
    check(
        &s,
        ALPHA,
        "/openstack/2012-08-10/vendor_data.json",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/2015-10-15/vendor_data2.json",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/latest/secrets.json",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/2099-01-01/meta_data.json",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    // network_data.json is not version-gated in Nova's handler: older versions answer it
    // although their listing does not show it.
    let (status, _, _) = get(
        &client_from(ALPHA),
        &s.url("/openstack/2012-08-10/network_data.json"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn documents_carry_an_etag() {
    let s = Server::start(&fixture("nodes.json"));
    let c = client_from(ALPHA);
    let r = c
        .get(s.url("/openstack/latest/network_data.json"))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26,
        "{etag}"
    );
    let r = c
        .get(s.url("/openstack/latest/network_data.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = c
        .get(s.url("/openstack/latest/network_data.json"))
        .header("If-None-Match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Text answers carry one too, and refusals none.
    let r = c
        .get(s.url("/latest/meta-data/hostname"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("etag").is_some());
    let r = c
        .get(s.url("/latest/meta-data/no-such-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().get("etag").is_none());
}

#[tokio::test]
async fn ec2_tree_for_a_node_with_a_configdrive() {
    let s = Server::start(&fixture("nodes.json"));
    check(&s, ALPHA, "/", 200, TEXT,
        "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest").await;
    check(
        &s,
        ALPHA,
        "/latest",
        200,
        TEXT,
        "dynamic/\nmeta-data/\nuser-data",
    )
    .await;
    for p in [
        "/latest/meta-data/",
        "/latest/meta-data",
        "/2009-04-04/meta-data/",
        "/ec2/latest/meta-data",
    ] {
        // Nova's keys for 2009-04-04, sorted, plus `mac`; keys without a value here
        // (instance-type without a flavor, public-ipv4, kernel and ramdisk ids) are absent
        // rather than empty; ami-id and security-groups are always there.
        check(&s, ALPHA, p, 200, TEXT,
            "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\ninstance-action\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nplacement/\npublic-hostname\npublic-keys/\nreservation-id\nsecurity-groups").await;
    }
    // Version gating: 1.0 has neither the 2007 keys nor placement nor instance-action.
    check(&s, ALPHA, "/1.0/meta-data/", 200, TEXT,
        "ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\npublic-keys/\nreservation-id\nsecurity-groups").await;
    check(&s, ALPHA, "/2007-12-15/meta-data/", 200, TEXT,
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\ninstance-id\nlocal-hostname\nlocal-ipv4\npublic-hostname\npublic-keys/\nreservation-id\nsecurity-groups").await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/ami-launch-index",
        200,
        TEXT,
        "0",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/ami-manifest-path",
        200,
        TEXT,
        "FIXME",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/instance-action",
        200,
        TEXT,
        "none",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/local-hostname",
        200,
        TEXT,
        "alpha.example.com",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-hostname",
        200,
        TEXT,
        "alpha.example.com",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/mac",
        200,
        TEXT,
        "52:54:00:00:00:11",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/reservation-id",
        200,
        TEXT,
        "r-fad7d6fb",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/placement/",
        200,
        TEXT,
        "availability-zone\nregion",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/placement/availability-zone",
        200,
        TEXT,
        "rack-1",
    )
    .await;
    // Nova's mapping for an instance without block device mappings.
    check(
        &s,
        ALPHA,
        "/latest/meta-data/block-device-mapping",
        200,
        TEXT,
        "ami\nephemeral0\nroot\nswap",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/block-device-mapping/root",
        200,
        TEXT,
        "/dev/sda1",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-ipv4",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/instance-id",
        200,
        TEXT,
        "aaaaaaaa-0000-4000-8000-000000000011",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/hostname",
        200,
        TEXT,
        "alpha.example.com",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/local-ipv4",
        200,
        TEXT,
        "127.0.0.11",
    )
    .await;
    // `N=name` lines, in the order of the node's public_keys (afterburn asks without a slash).
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys",
        200,
        TEXT,
        "0=ops\n1=backup",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys/",
        200,
        TEXT,
        "0=ops\n1=backup",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys/1",
        200,
        TEXT,
        "openssh-key",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys/0/openssh-key",
        200,
        TEXT,
        "ssh-ed25519 AAAAops ops@example.com",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys/1/openssh-key",
        200,
        TEXT,
        "ssh-rsa AAAAbackup backup@example.com",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/public-keys/2/openssh-key",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/meta-data/instance-id/x",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/user-data",
        200,
        "text/plain",
        "#cloud-config\nhostname: alpha\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/latest/user-data/",
        200,
        "text/plain",
        "#cloud-config\nhostname: alpha\n",
    )
    .await;
}

#[tokio::test]
async fn node_without_configdrive_gets_defaults_and_no_user_data() {
    let s = Server::start(&fixture("nodes.json"));
    check(
        &s,
        BRAVO,
        "/openstack/latest",
        200,
        TEXT,
        "meta_data.json\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json",
    )
    .await;
    check_md(&s, BRAVO, "/openstack/latest/meta_data.json",
        r#"{"uuid": "bbbbbbbb-0000-4000-8000-000000000012", "hostname": "bravo", "name": "bravo", "launch_index": 0, "availability_zone": null, "random_seed": "<seed>", "project_id": null, "devices": [], "dedicated_cpus": []}"#).await;
    // Missing user data is a 404 in both trees, as in Nova.
    check(
        &s,
        BRAVO,
        "/openstack/latest/user_data",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(&s, BRAVO, "/latest/user-data", 404, TEXT, "not found\n").await;
    check(&s, BRAVO, "/latest", 200, TEXT, "dynamic/\nmeta-data/").await;
    // network_data.json falls back to node.network_data.
    check(&s, BRAVO, "/openstack/latest/network_data.json", 200, JSON,
        r#"{"links": [{"id": "port-0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:12", "mtu": 1500}], "networks": [{"id": "network0", "type": "ipv4", "link": "port-0", "network_id": "11111111-2222-4333-8444-555555555555", "ip_address": "127.0.0.12", "netmask": "255.0.0.0", "routes": []}], "services": []}"#).await;
    check(
        &s,
        BRAVO,
        "/openstack/latest/vendor_data.json",
        200,
        JSON,
        "{}",
    )
    .await;
    check(
        &s,
        BRAVO,
        "/openstack/latest/vendor_data2.json",
        200,
        JSON,
        r#"{"static": {}}"#,
    )
    .await;
    check(&s, BRAVO, "/latest/meta-data/", 200, TEXT,
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\ninstance-action\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\npublic-hostname\nreservation-id\nsecurity-groups").await;
    check(
        &s,
        BRAVO,
        "/latest/meta-data/reservation-id",
        200,
        TEXT,
        "r-9e735511",
    )
    .await;
    check(&s, BRAVO, "/latest/meta-data/hostname", 200, TEXT, "bravo").await;
    check(
        &s,
        BRAVO,
        "/latest/meta-data/public-keys",
        404,
        TEXT,
        "not found\n",
    )
    .await;
}

#[tokio::test]
async fn json_user_data_and_explicit_uuid() {
    let s = Server::start(&fixture("nodes.json"));
    let fox = "127.0.0.15";
    check(
        &s,
        fox,
        "/openstack/latest/user_data",
        200,
        "text/plain",
        r#"{"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core"}]}}"#,
    )
    .await;
    check(&s, fox, "/openstack/2012-08-10/meta_data.json", 200, JSON,
        r#"{"uuid": "0e0e0e0e-1111-4222-8333-444444444444", "hostname": "fox", "name": "fox", "launch_index": 0, "availability_zone": null}"#).await;
    check(
        &s,
        fox,
        "/latest/meta-data/instance-id",
        200,
        TEXT,
        "0e0e0e0e-1111-4222-8333-444444444444",
    )
    .await;
}

#[tokio::test]
async fn refusals_for_unknown_contested_and_unserved_addresses() {
    let s = Server::start(&fixture("nodes.json"));
    let refused = "no metadata for this address\n";
    for from in ["127.0.0.99", "127.0.0.13", "127.0.0.14"] {
        for p in [
            "/openstack/latest/meta_data.json",
            "/openstack/latest/user_data",
            "/latest/meta-data/instance-id",
            "/latest",
        ] {
            check(&s, from, p, 404, TEXT, refused).await;
        }
        // Version lists carry no node data and are answered for anyone, as Nova does.
        check(&s, from, "/", 200, TEXT,
            "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest").await;
    }
    // The first refusal of each client and reason is an audit line, with the reason and,
    // for the operator only, why; the other three of each are counted.
    let clients = ["127.0.0.99", "127.0.0.13", "127.0.0.14"];
    let events = s
        .audit_until("one refusal per client logged", |ev| {
            clients
                .iter()
                .all(|ip| ev.iter().any(|e| e["client"] == *ip))
        })
        .await;
    let about = |ip: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["client"] == ip)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap().to_string(),
                    e["detail"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let one = |r: &str, d: &str| vec![(r.to_string(), d.to_string())];
    assert_eq!(
        about("127.0.0.99"),
        one("unknown_address", "no node claims this address")
    );
    assert_eq!(about("127.0.0.13"), one("contested_address",
        "address claimed by nodes cccccccc-0000-4000-8000-000000000013, dddddddd-0000-4000-8000-000000000013"));
    assert_eq!(
        about("127.0.0.14"),
        one(
            "node_not_served",
            "node eeeeeeee-0000-4000-8000-000000000014 is in provision state \"available\""
        )
    );
    assert_eq!(
        s.metric_reaches("metadata_audit_suppressed_total", 9.0)
            .await,
        9.0
    );
}

#[tokio::test]
async fn masked_configdrive_is_never_served_as_data() {
    let s = Server::start(&fixture("nodes.json"));
    let golf = "127.0.0.16";
    check(
        &s,
        golf,
        "/openstack/latest/meta_data.json",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        golf,
        "/openstack/latest/user_data",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        golf,
        "/latest/meta-data/instance-id",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    let (status, _, body) = get(&client_from("127.0.0.1"), &s.admin_url("/readyz")).await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = ready["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().starts_with(
        "node 99999999-0000-4000-8000-000000000016: instance_info.configdrive is masked by Ironic; grant the service account Ironic's show_instance_secrets policy")), "{body}");
    assert!(warnings.iter().any(|w| w.as_str().unwrap()
        == "address 127.0.0.13 is claimed by nodes cccccccc-0000-4000-8000-000000000013, dddddddd-0000-4000-8000-000000000013; it is refused"), "{body}");
}

#[tokio::test]
async fn head_and_other_methods() {
    let s = Server::start(&fixture("nodes.json"));
    let c = client_from(ALPHA);
    let r = c
        .head(s.url("/openstack/latest/user_data"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["content-length"], "30");
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = c
            .request(
                m.parse().unwrap(),
                s.url("/openstack/latest/meta_data.json"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{m}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
        assert_eq!(r.text().await.unwrap(), "method not allowed\n");
    }
}

#[tokio::test]
async fn hostile_paths_get_clean_answers() {
    let s = Server::start(&fixture("nodes.json"));
    // `..` and its encodings never leave the tree: they normalise like Nova's normpath.
    check(
        &s,
        ALPHA,
        "/openstack/latest/../../../../etc/passwd",
        404,
        TEXT,
        "not found\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/%2e%2e/openstack/latest/user_data",
        200,
        "text/plain",
        "#cloud-config\nhostname: alpha\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/latest/%ff",
        400,
        TEXT,
        "bad request path\n",
    )
    .await;
    check(
        &s,
        ALPHA,
        "/openstack/latest/%00",
        400,
        TEXT,
        "bad request path\n",
    )
    .await;
    let long = format!("/openstack/{}", "a".repeat(2000));
    check(&s, ALPHA, &long, 414, TEXT, "request path too long\n").await;
    // More header lines or bytes than any metadata client sends: 431 (defaults 64, 16 KiB).
    let mut req = client_from(ALPHA).get(s.url("/latest/meta-data/instance-id"));
    for i in 0..70 {
        req = req.header(format!("x-filler-{i}"), "1");
    }
    let r = req.send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (431, "request headers too large\n".into())
    );
    let r = client_from(ALPHA)
        .get(s.url("/latest/meta-data/instance-id"))
        .header("x-big", "a".repeat(17000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    // Reads carry no body.
    let r = client_from(ALPHA)
        .get(s.url("/openstack/latest/meta_data.json"))
        .body("x".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.text().await.unwrap(), "request body not accepted\n");
    // The admin endpoints do not exist on the metadata listener.
    check(&s, ALPHA, "/metrics", 404, TEXT, "not found\n").await;
    check(&s, ALPHA, "/healthz", 404, TEXT, "not found\n").await;
}

#[tokio::test]
async fn ipv6_client_is_identified() {
    let s = Server::start_with(&fixture("nodes.json"), "::1".parse().unwrap(), &[]);
    check(
        &s,
        "::1",
        "/latest/meta-data/instance-id",
        200,
        TEXT,
        "aaaaaaaa-0000-4000-8000-000000000011",
    )
    .await;
}

#[tokio::test]
async fn readme_example_answers_from_loopback() {
    let s = Server::start(&common::repo_file("examples/inventory.json"));
    let (status, ct, body) = get(
        &client_from("127.0.0.1"),
        &s.url("/openstack/latest/meta_data.json"),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, JSON));
    let md: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md["uuid"], "1be26c0b-03f2-4d2e-ae87-c02d7f33c123");
    assert_eq!(md["name"], "web-0");
    check(
        &s,
        "127.0.0.1",
        "/latest/meta-data/hostname",
        200,
        TEXT,
        "web-0.example.com",
    )
    .await;
    // All three example nodes are indexed and served.
    let (_, _, ready) = get(&client_from("127.0.0.1"), &s.admin_url("/readyz")).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        (ready["nodes"].as_u64(), ready["served_nodes"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(ready["warnings"], serde_json::json!([]));
}
