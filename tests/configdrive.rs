//! Configdrives stored as a base64 gzipped ISO 9660 image (what Nova and Ironic's builder
//! store) are served like the JSON dict form; a corrupt image gives 404 for its files and
//! a readiness warning, never another node's data.

mod common;

use common::{client_from, fixture, get, Server};

const ISO: &str = "127.0.0.17";

#[tokio::test]
async fn iso_configdrive_is_served() {
    let s = Server::start(&fixture("nodes-iso.json"));
    let c = client_from(ISO);
    // Identity comes from the network_data inside the image.
    assert_eq!(
        get(&c, &s.url("/latest/meta-data/instance-id")).await.2,
        "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    );
    assert_eq!(
        get(&c, &s.url("/openstack/2012-08-10/meta_data.json"))
            .await
            .2,
        r#"{"uuid": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "public_keys": {"ops": "ssh-ed25519 AAAAiso ops@example.com"}, "keys": [{"name": "ops", "type": "ssh", "data": "ssh-ed25519 AAAAiso ops@example.com"}], "hostname": "iso-node.example.com", "name": "iso-node", "launch_index": 0, "availability_zone": null}"#
    );
    assert_eq!(
        get(&c, &s.url("/openstack/latest/user_data")).await.2,
        "#cloud-config\nhostname: iso-node\n"
    );
    assert_eq!(
        get(&c, &s.url("/openstack/latest/network_data.json"))
            .await
            .2,
        r#"{"links": [{"id": "iface0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:17"}], "networks": [{"id": "network0", "type": "ipv4", "link": "iface0", "network_id": "n0", "ip_address": "127.0.0.17", "netmask": "255.0.0.0", "routes": []}], "services": []}"#
    );
    // Ironic's builder puts vendor data in vendor_data2.json: served as the static vendor data.
    assert_eq!(
        get(&c, &s.url("/openstack/latest/vendor_data.json"))
            .await
            .2,
        r##"{"cloud-init": "#cloud-config\nruncmd: [true]\n"}"##
    );
}

#[tokio::test]
async fn corrupt_image_gives_404_and_a_warning() {
    let s = Server::start(&fixture("nodes-iso.json"));
    let c = client_from("127.0.0.18");
    for p in [
        "/openstack/latest/meta_data.json",
        "/openstack/latest/user_data",
        "/latest/meta-data/instance-id",
    ] {
        assert_eq!(get(&c, &s.url(p)).await.0, 404, "{p}");
    }
    let (_, _, ready) = get(&client_from("127.0.0.1"), &s.admin_url("/readyz")).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert!(
        ready["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(
                "node 13131313-0000-4000-8000-000000000018: configdrive is not an ISO 9660 image"
            )),
        "{ready}"
    );
}

/// An image Nova built (genisoimage with Nova's options) carries `ec2/latest/meta-data.json`,
/// Nova's EC2 view of the instance: the EC2 tree is served from it, cut to each version as
/// Nova's `get_ec2_metadata` cuts it, and printed as Nova's `ec2_md_print` prints it.
#[tokio::test]
async fn nova_image_serves_its_own_ec2_metadata() {
    let s = Server::start(&fixture("nodes-iso.json"));
    let c = client_from("127.0.0.19");
    let body = |p: &'static str| {
        let (c, url) = (c.clone(), s.url(p));
        async move {
            let (status, _, body) = get(&c, &url).await;
            assert_eq!(status, 200, "{p}");
            body
        }
    };
    assert_eq!(
        body("/latest/meta-data/").await,
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n\
         instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\n\
         placement/\npublic-hostname\npublic-keys/\nreservation-id\nsecurity-groups"
    );
    assert_eq!(body("/latest/meta-data/instance-id").await, "i-00000013");
    assert_eq!(
        body("/latest/meta-data/security-groups").await,
        "default\nweb"
    );
    assert_eq!(body("/latest/meta-data/public-keys/").await, "0=ops");
    assert_eq!(
        body("/latest/meta-data/public-keys/0/openssh-key").await,
        "ssh-ed25519 AAAAnova ops@example.com"
    );
    assert_eq!(body("/latest/meta-data/ami-launch-index").await, "0");
    assert_eq!(
        body("/latest/meta-data/block-device-mapping/").await,
        "ami\nephemeral0\nroot"
    );
    assert_eq!(body("/latest/meta-data/mac").await, "52:54:00:00:00:19");
    // An empty public-ipv4 is absent, as in every other EC2 tree served.
    assert_eq!(
        get(&c, &s.url("/latest/meta-data/public-ipv4")).await.0,
        404
    );
    // EC2 1.0 predates local-hostname, instance-type, placement, block devices and mac.
    assert_eq!(
        body("/1.0/meta-data/").await,
        "ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\n\
         public-keys/\nreservation-id\nsecurity-groups"
    );
    // The OpenStack tree still comes from openstack/latest.
    assert!(body("/openstack/latest/meta_data.json")
        .await
        .contains(r#""uuid": "19191919-0000-4000-8000-000000000019""#));
}
