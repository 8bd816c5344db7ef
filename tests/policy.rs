//! The policy engine end to end through the server: zones, the forwarded-header spoof
//! matrix, rate limits, session tokens and hot reload.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{client_from, eventually, fixture, get, Server};

const WAIT: Duration = Duration::from_secs(20);
const ALPHA: &str = "aaaaaaaa-0000-4000-8000-000000000011";
const BRAVO: &str = "bbbbbbbb-0000-4000-8000-000000000012";
const REFUSED: &str = "no metadata for this address\n";

fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn serve(dir: &Path, extra: &[&str]) -> Server {
    serve_on(dir, "127.0.0.1", extra)
}

fn serve_on(dir: &Path, bind: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--policy-dir", dir.to_str().unwrap()];
    args.extend(extra);
    Server::start_with(&fixture("nodes.json"), bind.parse().unwrap(), &args)
}

async fn instance_id(s: &Server, from: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client_from(from).get(s.url("/latest/meta-data/instance-id"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const ZONES: &str = r#"
[[zone]]
name = "lab"
cidrs = ["127.0.0.0/8"]
action = "allow"
rate_limit = { per_second = 1000, burst = 1000 }

# The proxies sit inside the denied /24; their own zone allows them and trusts them.
[[zone]]
name = "proxies"
cidrs = ["127.0.0.30/31"]
action = "allow"
trusted_proxies = ["127.0.0.30/31"]

[[zone]]
name = "quarantine"
cidrs = ["127.0.0.0/24"]
action = "deny"

[[zone]]
name = "alpha-host"
cidrs = ["127.0.0.11/32"]
action = "allow"

[[zone]]
name = "bravo-host"
cidrs = ["127.0.0.12"]
action = "allow"
"#;

#[tokio::test]
async fn allow_and_deny_by_most_specific_zone() {
    let dir = policy_dir(&[("zones.toml", ZONES)]);
    let s = serve(dir.path(), &[]);
    // 127.0.0.11 and .12 have host zones that allow, inside a /24 that denies.
    assert_eq!(
        instance_id(&s, "127.0.0.11", &[]).await,
        (200, ALPHA.into())
    );
    assert_eq!(
        instance_id(&s, "127.0.0.12", &[]).await,
        (200, BRAVO.into())
    );
    assert_eq!(
        instance_id(&s, "127.0.0.99", &[]).await,
        (403, "forbidden\n".into())
    );
    // Outside the /24 the /8 allows (and no node claims the address).
    assert_eq!(
        instance_id(&s, "127.0.1.99", &[]).await,
        (404, REFUSED.into())
    );
    let events = s
        .audit_until("the denial logged", |ev| {
            ev.iter().any(|e| e["client"] == "127.0.0.99")
        })
        .await;
    let e = events.iter().find(|e| e["client"] == "127.0.0.99").unwrap();
    assert_eq!(
        (e["reason"].as_str(), e["zone"].as_str()),
        (Some("zone_denied"), Some("quarantine"))
    );
    s.metric_reaches(
        "metadata_requests_denied_total{reason=\"zone_denied\",zone=\"quarantine\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn ipv6_zones() {
    let allow = policy_dir(&[(
        "v6.toml",
        "[[zone]]\nname = \"v6\"\ncidrs = [\"::1/128\"]\naction = \"allow\"\n",
    )]);
    let s = serve_on(allow.path(), "::1", &[]);
    assert_eq!(instance_id(&s, "::1", &[]).await, (200, ALPHA.into()));
    let deny = policy_dir(&[(
        "v6.toml",
        "[[zone]]\nname = \"v6\"\ncidrs = [\"::/0\"]\naction = \"deny\"\n",
    )]);
    let s = serve_on(deny.path(), "::1", &[]);
    assert_eq!(
        instance_id(&s, "::1", &[]).await,
        (403, "forbidden\n".into())
    );
    // An address in no zone is denied.
    let none = policy_dir(&[(
        "v4.toml",
        "[[zone]]\nname = \"v4\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n",
    )]);
    let s = serve_on(none.path(), "::1", &[]);
    assert_eq!(
        instance_id(&s, "::1", &[]).await,
        (403, "forbidden\n".into())
    );
}

#[tokio::test]
async fn forwarded_header_spoof_matrix() {
    let dir = policy_dir(&[("zones.toml", ZONES)]);
    let s = serve(dir.path(), &[]);
    let xff = |v: &'static str| vec![("X-Forwarded-For", v)];
    // From an untrusted peer the header is ignored: the peer itself is the client.
    assert_eq!(
        instance_id(&s, "127.0.1.5", &xff("127.0.0.11")).await,
        (404, REFUSED.into())
    );
    assert_eq!(
        instance_id(&s, "127.0.0.12", &xff("127.0.0.11")).await,
        (200, BRAVO.into())
    );
    // Garbage from an untrusted peer is not even read.
    assert_eq!(
        instance_id(&s, "127.0.0.12", &xff("not an address")).await,
        (200, BRAVO.into())
    );
    // From a trusted proxy the header names the client.
    assert_eq!(
        instance_id(&s, "127.0.0.30", &xff("127.0.0.11")).await,
        (200, ALPHA.into())
    );
    // Several hops: trusted hops are skipped from the right.
    assert_eq!(
        instance_id(&s, "127.0.0.30", &xff("127.0.0.12, 127.0.0.31")).await,
        (200, BRAVO.into())
    );
    // A client forging an entry to the left of its own cannot become another node.
    assert_eq!(
        instance_id(&s, "127.0.0.30", &xff("127.0.0.11, 127.0.0.12")).await,
        (200, BRAVO.into())
    );
    // Several header lines form one chain.
    let two = [
        ("X-Forwarded-For", "127.0.0.11"),
        ("X-Forwarded-For", "127.0.0.31"),
    ];
    assert_eq!(
        instance_id(&s, "127.0.0.30", &two).await,
        (200, ALPHA.into())
    );
    // The real client behind the proxy meets its own zone: .99 is in the denied /24.
    assert_eq!(
        instance_id(&s, "127.0.0.30", &xff("127.0.0.99")).await,
        (403, "forbidden\n".into())
    );
    // Garbage and overlong chains from a trusted proxy: 400.
    for bad in [
        "nonsense",
        "127.0.0.11,,127.0.0.12",
        "",
        "127.0.0.11; DROP TABLE",
    ] {
        assert_eq!(
            instance_id(&s, "127.0.0.30", &xff(bad)).await,
            (400, "bad forwarded header\n".into()),
            "{bad:?}"
        );
    }
    let long = ["127.0.0.11"; 9].join(",");
    let long: &'static str = Box::leak(long.into_boxed_str());
    assert_eq!(
        instance_id(&s, "127.0.0.30", &xff(long)).await,
        (400, "bad forwarded header\n".into())
    );
    s.audit_until("the bad header logged", |ev| {
        ev.iter()
            .any(|e| e["reason"] == "bad_forwarded_header" && e["peer"] == "127.0.0.30")
    })
    .await;
}

#[tokio::test]
async fn rfc7239_forwarded_header() {
    let dir = policy_dir(&[("zones.toml", "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\ntrusted_proxies = [\"127.0.0.30\"]\nforwarded_header = \"forwarded\"\n")]);
    let s = serve(dir.path(), &[]);
    let fwd = [("Forwarded", "for=127.0.0.12;proto=http;by=127.0.0.30")];
    assert_eq!(
        instance_id(&s, "127.0.0.30", &fwd).await,
        (200, BRAVO.into())
    );
    // X-Forwarded-For is not the configured header: ignored, the proxy is the client.
    assert_eq!(
        instance_id(&s, "127.0.0.30", &[("X-Forwarded-For", "127.0.0.12")]).await,
        (404, REFUSED.into())
    );
    assert_eq!(
        instance_id(&s, "127.0.0.30", &[("Forwarded", "for=unknown")])
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn rate_limit_exact_counts() {
    // One request per 1000 s after a burst of 5: no refill during the test.
    let dir = policy_dir(&[("zones.toml", "[[zone]]\nname = \"slow\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 0.001, burst = 5 }\n")]);
    let s = serve(dir.path(), &[]);
    for _ in 0..5 {
        assert_eq!(instance_id(&s, "127.0.0.11", &[]).await.0, 200);
    }
    let r = client_from("127.0.0.11")
        .get(s.url("/latest/meta-data/instance-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((999..=1000).contains(&retry), "{retry}");
    assert_eq!(r.text().await.unwrap(), "too many requests\n");
    // Another client has its own allowance.
    assert_eq!(
        instance_id(&s, "127.0.0.12", &[]).await,
        (200, BRAVO.into())
    );
    assert_eq!(
        s.metric_reaches(
            "metadata_requests_denied_total{reason=\"rate_limited\",zone=\"slow\"}",
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn session_tokens() {
    let dir = policy_dir(&[("zones.toml", "[[zone]]\nname = \"open\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n\
        [[zone]]\nname = \"strict\"\ncidrs = [\"127.0.0.12/32\"]\naction = \"allow\"\ntokens = \"required\"\n")]);
    let keydir = tempfile::tempdir().unwrap();
    let keyfile = keydir.path().join("token.key");
    std::fs::write(&keyfile, "a shared secret of enough length\n").unwrap();
    let s = serve(dir.path(), &["--token-key-file", keyfile.to_str().unwrap()]);
    let put = |from: &str, headers: &[(&str, &str)]| {
        let mut req = client_from(from).put(s.url("/latest/api/token"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let r = put(
        "127.0.0.11",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-aws-ec2-metadata-token-ttl-seconds"], "60");
    let token = r.text().await.unwrap();
    let t = [("X-aws-ec2-metadata-token", token.as_str())];
    assert_eq!(instance_id(&s, "127.0.0.11", &t).await, (200, ALPHA.into()));
    // Optional zone: no token is fine, a bad one is 401 (as on AWS).
    assert_eq!(
        instance_id(&s, "127.0.0.11", &[]).await,
        (200, ALPHA.into())
    );
    assert_eq!(
        instance_id(&s, "127.0.0.11", &[("X-aws-ec2-metadata-token", "bogus")]).await,
        (401, "unauthorized\n".into())
    );
    // Another client's token is foreign.
    assert_eq!(instance_id(&s, "127.0.0.15", &t).await.0, 401);
    // Required zone: none is 401, its own is 200.
    assert_eq!(
        instance_id(&s, "127.0.0.12", &[]).await,
        (401, "unauthorized\n".into())
    );
    let r = put(
        "127.0.0.12",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )
    .await
    .unwrap();
    let token12 = r.text().await.unwrap();
    assert_eq!(
        instance_id(
            &s,
            "127.0.0.12",
            &[("X-aws-ec2-metadata-token", token12.as_str())]
        )
        .await,
        (200, BRAVO.into())
    );
    // Expired: a token with the server's key that expired a minute ago.
    let expired = ironic_metadata::probe::session_token(
        &keyfile,
        "127.0.0.12".parse().unwrap(),
        SystemTime::now() - Duration::from_secs(120),
        60,
    )
    .unwrap();
    assert_eq!(
        instance_id(
            &s,
            "127.0.0.12",
            &[("X-aws-ec2-metadata-token", expired.as_str())]
        )
        .await
        .0,
        401
    );
    // The PUT rules.
    for (headers, status) in [
        (vec![], 400),
        (vec![("X-aws-ec2-metadata-token-ttl-seconds", "0")], 400),
        (vec![("X-aws-ec2-metadata-token-ttl-seconds", "21601")], 400),
        (vec![("X-aws-ec2-metadata-token-ttl-seconds", "sixty")], 400),
        (
            vec![
                ("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                ("X-Forwarded-For", "127.0.0.11"),
            ],
            403,
        ),
    ] {
        assert_eq!(
            put("127.0.0.11", &headers).await.unwrap().status().as_u16(),
            status,
            "{headers:?}"
        );
    }
    let r = client_from("127.0.0.11")
        .put(s.url("/2021-03-23/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client_from("127.0.0.11")
        .put(s.url("/openstack/latest/meta_data.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // A token survives a restart with the same key file.
    drop(s);
    let s = serve(dir.path(), &["--token-key-file", keyfile.to_str().unwrap()]);
    assert_eq!(instance_id(&s, "127.0.0.11", &t).await, (200, ALPHA.into()));
}

#[tokio::test]
async fn path_rules_refuse_user_data_in_a_zone() {
    let dir = policy_dir(&[("zones.toml", "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\ndeny_paths = [\"/openstack/*/user_data\", \"/*/user-data\"]\n")]);
    let s = serve(dir.path(), &[]);
    let c = client_from("127.0.0.11");
    assert_eq!(get(&c, &s.url("/openstack/latest/user_data")).await.0, 403);
    assert_eq!(
        get(&c, &s.url("/openstack/2012-08-10/user_data/")).await.0,
        403
    );
    assert_eq!(get(&c, &s.url("/latest/user-data")).await.0, 403);
    assert_eq!(get(&c, &s.url("/latest/./user-data")).await.0, 403);
    assert_eq!(
        get(&c, &s.url("/openstack/latest/meta_data.json")).await.0,
        200
    );
}

#[tokio::test]
async fn policy_edits_apply_without_restart_and_bad_edits_are_rejected() {
    let allow = "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n";
    let deny = "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"deny\"\n";
    let dir = policy_dir(&[("zones.toml", allow)]);
    let s = serve(dir.path(), &[]);
    assert_eq!(instance_id(&s, "127.0.0.11", &[]).await.0, 200);
    // An editor's atomic save: write aside, rename over.
    let replace = |text: &str| {
        let tmp = dir.path().join(".zones.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join("zones.toml")).unwrap();
    };
    replace(deny);
    eventually(WAIT, "deny applied", || async {
        instance_id(&s, "127.0.0.11", &[]).await.0 == 403
    })
    .await;
    // A broken edit is rejected with file and line; the last good policy stays.
    replace("[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/33\"]\naction = \"allow\"\n");
    eventually(WAIT, "rejection counted", || async {
        s.metric("metadata_policy_reloads_total{result=\"rejected\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(instance_id(&s, "127.0.0.11", &[]).await.0, 403);
    let path = dir.path().join("zones.toml");
    assert!(
        s.log().contains(&format!(
            "{}:3: zone \\\"lab\\\": field cidrs: \\\"127.0.0.0/33\\\" is not a CIDR",
            path.display()
        )),
        "{}",
        s.log()
    );
    // A plain in-place write is picked up too.
    std::fs::write(dir.path().join("zones.toml"), allow).unwrap();
    eventually(WAIT, "allow applied", || async {
        instance_id(&s, "127.0.0.11", &[]).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn sighup_forces_a_reload() {
    // The policy file is a symlink to a file outside the watched directory: editing the
    // target makes no event there, so only SIGHUP can bring the change in.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("zones.toml");
    std::fs::write(
        &target,
        "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("zones.toml")).unwrap();
    let s = serve(dir.path(), &[]);
    assert_eq!(instance_id(&s, "127.0.0.11", &[]).await.0, 200);
    std::fs::write(
        &target,
        "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"deny\"\n",
    )
    .unwrap();
    s.signal("HUP");
    eventually(WAIT, "reload on SIGHUP", || async {
        instance_id(&s, "127.0.0.11", &[]).await.0 == 403
    })
    .await;
    assert_eq!(
        s.metric("metadata_policy_reloads_total{result=\"applied\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn kubernetes_configmap_symlink_swap_is_picked_up() {
    // The layout kubelet writes: files are symlinks through `..data` to a timestamped dir,
    // and an update swaps `..data` atomically.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = d.join("..2026_11_27_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("zones.toml"),
        "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_27_01", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/zones.toml", d.join("zones.toml")).unwrap();
    let s = serve(d, &[]);
    assert_eq!(instance_id(&s, "127.0.0.11", &[]).await.0, 200);
    let v2 = d.join("..2026_11_27_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("zones.toml"),
        "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"deny\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_27_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    eventually(WAIT, "swap applied", || async {
        instance_id(&s, "127.0.0.11", &[]).await.0 == 403
    })
    .await;
}

#[test]
fn invalid_policy_at_start_is_fatal_and_check_names_the_problem() {
    let dir = policy_dir(&[
        (
            "a.toml",
            "[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n",
        ),
        (
            "b.toml",
            "\n\n[[zone]]\nname = \"b\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"deny\"\n",
        ),
    ]);
    let want = format!("error: invalid policy: {}:3: zone \"b\": field cidrs: 10.0.0.0/8 is also claimed by zone \"a\" at {}:1\n",
        dir.path().join("b.toml").display(), dir.path().join("a.toml").display());
    let (code, err) =
        common::run_to_exit(common::bin().args(["policy", "check", dir.path().to_str().unwrap()]));
    assert_eq!((code, err.as_str()), (Some(1), want.as_str()));
    let inv = fixture("nodes.json");
    let (code, err) = common::run_to_exit(common::bin().args([
        "serve",
        "--inventory",
        inv.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--port",
        &common::free_port("127.0.0.1".parse().unwrap()).to_string(),
        "--policy-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!((code, err.as_str()), (Some(1), want.as_str()));
}

#[test]
fn shipped_policies_are_valid() {
    let out = common::bin()
        .args(["policy", "check"])
        .arg(common::repo_file("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["10.0.0.0/8", "private", "allow", "20/s", "burst", "100"]),
        "{text}"
    );
    assert!(text.trim_end().ends_with("project(s), valid"), "{text}");
}
