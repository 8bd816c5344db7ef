//! The `password` file as cloudbase-init uses it: GET before and after one POST, 409 on a
//! second POST, 400 over 1020 bytes, kept across restarts, forgotten on redeployment.

mod common;

use common::{client_from, fixture, get, Server};

const ALPHA: &str = "127.0.0.11";

async fn post(s: &Server, body: &str) -> (u16, String) {
    let r = client_from(ALPHA)
        .post(s.url("/openstack/2013-04-04/password"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The fixture with alpha's deployment marker set to `provisioned`.
fn inventory(dir: &std::path::Path, provisioned: &str) -> std::path::PathBuf {
    let mut inv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("nodes.json")).unwrap()).unwrap();
    inv["nodes"][0]["provision_updated_at"] = serde_json::json!(provisioned);
    let path = dir.join(format!("inventory-{provisioned}.json"));
    std::fs::write(&path, inv.to_string()).unwrap();
    path
}

#[tokio::test]
async fn password_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let inv = inventory(dir.path(), "2026-11-01T10:00:00+00:00");
    let args = ["--state-dir", state.to_str().unwrap()];
    let s = Server::start_with(&inv, "127.0.0.1".parse().unwrap(), &args);
    let c = client_from(ALPHA);
    // Listed from 2013-04-04 on (Nova's GRIZZLY), after user_data.
    assert_eq!(
        get(&c, &s.url("/openstack/2013-04-04")).await.2,
        "meta_data.json\nuser_data\npassword"
    );
    assert_eq!(
        get(&c, &s.url("/openstack/2012-08-10/password")).await.0,
        404
    );
    // Unset: 200 with an empty body.
    assert_eq!(
        get(&c, &s.url("/openstack/latest/password")).await,
        (200, "text/plain; charset=utf-8".into(), String::new())
    );
    assert_eq!(
        post(&s, &"x".repeat(1021)).await,
        (400, "password too long\n".into())
    );
    assert_eq!(
        post(&s, "c2VjcmV0LWVuY3J5cHRlZA==").await,
        (200, String::new())
    );
    assert_eq!(
        get(&c, &s.url("/openstack/latest/password")).await.2,
        "c2VjcmV0LWVuY3J5cHRlZA=="
    );
    assert_eq!(
        post(&s, "other").await,
        (409, "password already set\n".into())
    );
    // POST elsewhere is not allowed.
    let r = c
        .post(s.url("/openstack/latest/meta_data.json"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    drop(s);
    // Survives a restart.
    let s = Server::start_with(&inv, "127.0.0.1".parse().unwrap(), &args);
    assert_eq!(
        get(&c, &s.url("/openstack/latest/password")).await.2,
        "c2VjcmV0LWVuY3J5cHRlZA=="
    );
    drop(s);
    // The node is redeployed: the password is gone and can be set again.
    let redeployed = inventory(dir.path(), "2026-11-20T08:00:00+00:00");
    let s = Server::start_with(&redeployed, "127.0.0.1".parse().unwrap(), &args);
    assert_eq!(get(&c, &s.url("/openstack/latest/password")).await.2, "");
    assert_eq!(post(&s, "new").await.0, 200);
}
