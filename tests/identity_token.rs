//! Signed node identity tokens, through the real binary: the token a node gets, the checks
//! before it, the keys published on the admin listener, the key directory's hot reload and
//! rotation, the per-node limit, the audit line, `vendor_data2.json`.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const BRAVO: &str = "bbbbbbbb-0000-4000-8000-000000000012";
const ISSUER: &str = "https://metadata.example.com";
const IDENTITY: &str = "/openstack/latest/identity";

/// Loopback clients allowed, tokens for `openbao` and `spire`, the `spire` one placed in
/// vendor_data2.json.
const POLICY: &str = r#"
[[zone]]
name = "loopback"
cidrs = ["127.0.0.0/8"]
action = "allow"
rate_limit = { per_second = 100000, burst = 1000000 }
identity_audiences = ["openbao", "spire"]
identity_vendor_data2 = "spire"
"#;

struct Setup {
    policy: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Setup {
    fn new(keys: &[(&str, &str)]) -> Setup {
        let policy = tempfile::tempdir().unwrap();
        std::fs::write(policy.path().join("p.toml"), POLICY).unwrap();
        let s = Setup {
            policy,
            keys: tempfile::tempdir().unwrap(),
        };
        for (name, fixture) in keys {
            s.add_key(name, fixture);
        }
        s
    }

    /// Written beside, then renamed in: the way a key is best put in place.
    fn add_key(&self, name: &str, fixture: &str) {
        let tmp = self.keys.path().join(format!(".{name}.tmp"));
        std::fs::copy(common::fixture(&format!("identity/{fixture}")), &tmp).unwrap();
        std::fs::rename(tmp, self.keys.path().join(name)).unwrap();
    }

    fn start(&self, extra: &[&str]) -> Server {
        let mut args = vec![
            "--policy-dir",
            self.policy.path().to_str().unwrap(),
            "--identity-key-dir",
            self.keys.path().to_str().unwrap(),
            "--identity-issuer",
            ISSUER,
        ];
        args.extend(extra);
        Server::start_with(&fixture("nodes.json"), "127.0.0.1".parse().unwrap(), &args)
    }
}

/// A GET with the identity header (or not), from `ip`: status, headers, body.
async fn ask(
    s: &Server,
    ip: &str,
    path: &str,
    flavour: bool,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client_from(ip).get(s.url(path));
    if flavour {
        req = req.header("Metadata-Flavor", "ironic");
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

async fn token(s: &Server, ip: &str, audience: &str) -> String {
    let (status, headers, body) =
        ask(s, ip, &format!("{IDENTITY}?audience={audience}"), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/jwt");
    body
}

/// (header, claims) of a compact JWT.
fn parts(jwt: &str) -> (Value, Value) {
    let p: Vec<&str> = jwt.split('.').collect();
    assert_eq!(p.len(), 3, "{jwt}");
    let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (json(p[0]), json(p[1]))
}

async fn jwks(s: &Server) -> Value {
    let (status, ct, body) = get(
        &client_from("127.0.0.1"),
        &s.admin_url("/.well-known/jwks.json"),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    serde_json::from_str(&body).unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `jwt` verifies with the key of its `kid` in `jwks`, by ring alone.
fn verifies(jwks: &Value, jwt: &str) -> bool {
    use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
    let (header, _) = parts(jwt);
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    jwks["keys"].as_array().unwrap().iter().any(|k| {
        k["kid"] == header["kid"]
            && match (header["alg"].as_str(), k["kty"].as_str()) {
                (Some("ES256"), Some("EC")) => {
                    let point = [vec![4], b64(&k["x"]), b64(&k["y"])].concat();
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed.as_bytes(), &sig)
                        .is_ok()
                }
                (Some("RS256"), Some("RSA")) => RsaPublicKeyComponents {
                    n: b64(&k["n"]),
                    e: b64(&k["e"]),
                }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &sig,
                )
                .is_ok(),
                _ => false,
            }
    })
}

#[tokio::test]
async fn a_node_gets_its_own_token_and_verifiers_find_the_key() {
    let setup = Setup::new(&[("2026-01.pem", "ec-leading-zero.pem")]);
    let s = setup.start(&[]);
    let jwt = token(&s, "127.0.0.12", "openbao").await;
    let keys = jwks(&s).await;
    assert!(verifies(&keys, &jwt));
    let (header, claims) = parts(&jwt);
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "JWT", "kid": "2026-01"})
    );
    assert_eq!(
        (&claims["iss"], &claims["sub"], &claims["aud"]),
        (&json!(ISSUER), &json!(BRAVO), &json!("openbao"))
    );
    assert_eq!(claims["ironic"]["node_uuid"], BRAVO);
    assert_eq!(claims["ironic"]["name"], "bravo");
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(
        (claims["nbf"].as_u64(), claims["exp"].as_u64()),
        (Some(iat), Some(iat + 600))
    );
    // The EC2 spelling, with `aud=`.
    let (status, _, ec2) = ask(
        &s,
        "127.0.0.12",
        "/latest/meta-data/identity?aud=spire",
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(parts(&ec2).1["aud"], "spire");

    // The discovery document names the issuer and where its keys are.
    let (status, _, body) = get(
        &client_from("127.0.0.1"),
        &s.admin_url("/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(status, 200);
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(
        discovery["jwks_uri"],
        format!("{ISSUER}/.well-known/jwks.json")
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256", "RS256"])
    );
    // Not on the metadata listener unless asked.
    let (status, _, _) = ask(&s, "127.0.0.12", "/.well-known/jwks.json", false).await;
    assert_eq!(status, 404);

    // Every issuance is an audit line, without the token.
    let events = s
        .audit_until("the issuance's audit line", |ev| {
            ev.iter()
                .filter(|e| e["event"] == "identity_issued")
                .count()
                >= 2
        })
        .await;
    let line = events
        .iter()
        .find(|e| e["event"] == "identity_issued")
        .unwrap();
    assert_eq!(
        (&line["node"], &line["audience"], &line["client"]),
        (&json!(BRAVO), &json!("openbao"), &json!("127.0.0.12"))
    );
    assert_eq!(
        (&line["jti"], &line["exp"], &line["kid"]),
        (&claims["jti"], &claims["exp"], &json!("2026-01"))
    );
    assert!(
        !s.log().contains(jwt.split('.').nth(2).unwrap()),
        "a token's signature in the log"
    );
    assert_eq!(
        s.metric("metadata_identity_tokens_total{result=\"issued\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn no_token_without_the_header_a_valid_audience_or_an_identity() {
    let setup = Setup::new(&[("k.pem", "ec-sec1.pem")]);
    let s = setup.start(&[]);
    let cases = [
        (
            "127.0.0.12",
            format!("{IDENTITY}?audience=openbao"),
            false,
            400,
            "identity tokens need the header Metadata-Flavor: ironic or Metadata: true\n",
        ),
        (
            "127.0.0.12",
            IDENTITY.to_string(),
            true,
            400,
            "give one audience= (or aud=) of 1 to 256 bytes without control characters\n",
        ),
        (
            "127.0.0.12",
            format!("{IDENTITY}?audience={}", "a".repeat(257)),
            true,
            400,
            "give one audience= (or aud=) of 1 to 256 bytes without control characters\n",
        ),
        (
            "127.0.0.12",
            format!("{IDENTITY}?audience=open%01bao"),
            true,
            400,
            "give one audience= (or aud=) of 1 to 256 bytes without control characters\n",
        ),
        (
            "127.0.0.12",
            format!("{IDENTITY}?audience=openbao2"),
            true,
            403,
            "audience not allowed\n",
        ),
        (
            "127.0.0.12",
            format!("{IDENTITY}?audience=open"),
            true,
            403,
            "audience not allowed\n",
        ),
        // Another node's address claimed by two nodes, an unknown one, a node not served.
        (
            "127.0.0.13",
            format!("{IDENTITY}?audience=openbao"),
            true,
            404,
            "no metadata for this address\n",
        ),
        (
            "127.0.0.99",
            format!("{IDENTITY}?audience=openbao"),
            true,
            404,
            "no metadata for this address\n",
        ),
        (
            "127.0.0.14",
            format!("{IDENTITY}?audience=openbao"),
            true,
            404,
            "no metadata for this address\n",
        ),
    ];
    for (ip, path, flavour, status, body) in cases {
        let (got, _, text) = ask(&s, ip, &path, flavour).await;
        assert_eq!((got, text.as_str()), (status, body), "{ip} {path}");
    }
    // Unknown parameters are ignored.
    let (got, _, _) = ask(
        &s,
        "127.0.0.12",
        &format!("{IDENTITY}?format=full&audience=openbao&x"),
        true,
    )
    .await;
    assert_eq!(got, 200);
    s.audit_until("the missing header's audit line", |ev| {
        ev.iter().any(|e| e["reason"] == "identity_header_required")
    })
    .await;
    assert_eq!(
        s.metric("metadata_identity_tokens_total{result=\"issued\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn each_node_has_a_limited_share_of_tokens() {
    let setup = Setup::new(&[("k.pem", "ec-sec1.pem")]);
    let s = setup.start(&[
        "--identity-tokens-per-second",
        "1",
        "--identity-tokens-burst",
        "2",
    ]);
    let path = format!("{IDENTITY}?audience=openbao");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, headers, _) = ask(&s, "127.0.0.12", &path, true).await;
        if status == 429 {
            assert!(
                headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..2], [200, 200]);
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 1, "{statuses:?}");
    // Another node has its own share.
    assert_eq!(ask(&s, "127.0.0.16", &path, true).await.0, 200);
    let limited = s
        .metric("metadata_identity_tokens_total{result=\"rate_limited\"}")
        .await;
    assert_eq!(limited, refused as f64);
}

#[tokio::test]
async fn keys_are_reloaded_rotated_and_a_bad_file_never_replaces_them() {
    let setup = Setup::new(&[]);
    // Waiting for a key to sign asks for many tokens.
    let s = setup.start(&[
        "--identity-tokens-per-second",
        "1000",
        "--identity-tokens-burst",
        "10000",
    ]);
    let path = format!("{IDENTITY}?audience=openbao");
    // No key: the path does not exist, and readiness says so.
    assert_eq!(ask(&s, "127.0.0.12", &path, true).await.0, 404);
    let warnings = s.readyz().await["warnings"].to_string();
    assert!(
        warnings.contains("identity tokens: no key file (*.pem) in"),
        "{warnings}"
    );
    assert_eq!(kids(&jwks(&s).await), Vec::<String>::new());
    // No key is made up to fill the gap.
    assert_eq!(std::fs::read_dir(setup.keys.path()).unwrap().count(), 0);

    setup.add_key("2026-01.pem", "ec-sec1.pem");
    eventually(
        Duration::from_secs(10),
        "the first key is loaded",
        || async { ask(&s, "127.0.0.12", &path, true).await.0 == 200 },
    )
    .await;
    let old = token(&s, "127.0.0.12", "openbao").await;
    assert!(!s.readyz().await["warnings"]
        .to_string()
        .contains("identity"));

    // A bad file: refused by name, the key in force stays.
    setup.add_key("2026-04.pem", "rsa-1024.pem");
    s.metric_reaches(
        "metadata_identity_key_reloads_total{result=\"rejected\"}",
        1.0,
    )
    .await;
    let warnings = s.readyz().await["warnings"].to_string();
    assert!(
        warnings.contains("2026-04.pem: an RSA key shorter than 2048 bits"),
        "{warnings}"
    );
    assert_eq!(
        parts(&token(&s, "127.0.0.12", "openbao").await).0["kid"],
        "2026-01"
    );
    std::fs::remove_file(setup.keys.path().join("2026-04.pem")).unwrap();

    // Rotation: a newer key signs, the old one stays published and its tokens verify.
    setup.add_key("2026-07.pem", "rsa-2048.pem");
    eventually(Duration::from_secs(10), "the new key signs", || async {
        parts(&token(&s, "127.0.0.12", "openbao").await).0["kid"] == "2026-07"
    })
    .await;
    let keys = jwks(&s).await;
    assert_eq!(kids(&keys), ["2026-01", "2026-07"]);
    assert!(verifies(&keys, &old));
    assert!(!s.readyz().await["warnings"]
        .to_string()
        .contains("identity"));
    // Removed: no longer published, so its tokens no longer verify.
    std::fs::remove_file(setup.keys.path().join("2026-01.pem")).unwrap();
    eventually(
        Duration::from_secs(10),
        "the old key is withdrawn",
        || async { kids(&jwks(&s).await) == ["2026-07"] },
    )
    .await;
    assert!(!verifies(&jwks(&s).await, &old));
    assert_eq!(s.metric("metadata_identity_keys").await, 1.0);
}

#[tokio::test]
async fn vendor_data2_carries_a_fresh_token_and_nodes_may_fetch_the_keys() {
    let setup = Setup::new(&[("k.pem", "rsa-3072-pkcs8.pem")]);
    let s = setup.start(&[
        "--identity-publish-on-metadata",
        "--identity-ttl-seconds",
        "3600",
        "--identity-subject",
        "spiffe://example.org/ironic/node/{uuid}",
    ]);
    let (status, _, body) = ask(
        &s,
        "127.0.0.12",
        "/openstack/latest/vendor_data2.json",
        false,
    )
    .await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["static"], json!({}));
    let jwt = doc["openstack_iid"]["jwt"].as_str().unwrap();
    let (header, claims) = parts(jwt);
    assert_eq!(
        (&header["alg"], &claims["aud"], &claims["sub"]),
        (
            &json!("RS256"),
            &json!("spire"),
            &json!(format!("spiffe://example.org/ironic/node/{BRAVO}"))
        )
    );
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(3600));
    // The keys, from the metadata listener this time.
    let (status, _, keys) = ask(&s, "127.0.0.12", "/.well-known/jwks.json", false).await;
    assert_eq!(status, 200);
    assert!(verifies(&serde_json::from_str(&keys).unwrap(), jwt));
    let again = ask(
        &s,
        "127.0.0.12",
        "/openstack/latest/vendor_data2.json",
        false,
    )
    .await
    .2;
    assert_ne!(again, body, "a fresh token per answer");
    // Older versions and other files are as they were.
    let (_, _, older) = ask(
        &s,
        "127.0.0.12",
        "/openstack/2016-10-06/vendor_data2.json",
        false,
    )
    .await;
    assert!(older.contains("openstack_iid"));
    let (_, _, vd) = ask(
        &s,
        "127.0.0.12",
        "/openstack/latest/vendor_data.json",
        false,
    )
    .await;
    assert_eq!(vd, "{}");
}

#[test]
fn a_bad_key_or_a_missing_issuer_stops_the_start() {
    let setup = Setup::new(&[("a.pem", "ec-sec1.pem"), ("b.pem", "ed25519.pem")]);
    let inv = fixture("nodes.json");
    let keys = setup.keys.path().to_str().unwrap();
    let port = free_port("127.0.0.1".parse().unwrap()).to_string();
    let base = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args([
            "serve",
            "--inventory",
            inv.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
        ])
        .args([
            "--policy-dir",
            setup.policy.path().to_str().unwrap(),
            "--identity-key-dir",
            keys,
        ])
        .args(extra)
        .env_remove("IDENTITY_ISSUER");
        cmd
    };
    let (code, stderr) = run_to_exit(&mut base(&["--identity-issuer", ISSUER]));
    assert_eq!(code, Some(1));
    let b = Path::new(keys).join("b.pem");
    assert!(
        stderr.contains(&format!(
            "identity keys: {}: not a P-256 (ES256) or RSA (RS256) private key",
            b.display()
        )),
        "{stderr}"
    );
    // A token lives an hour at most.
    let (code, stderr) = run_to_exit(&mut base(&[
        "--identity-issuer",
        ISSUER,
        "--identity-ttl-seconds",
        "3601",
    ]));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--identity-ttl-seconds"), "{stderr}");
    let (code, stderr) = run_to_exit(&mut base(&[]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--identity-key-dir needs --identity-issuer"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&mut base(&[
        "--identity-issuer",
        "https://metadata.example.com/",
    ]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("without a query or a trailing '/'"),
        "{stderr}"
    );
}
