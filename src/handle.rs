//! The whole request path: admission (steps 1 to 5, [`crate::admit`]), then identity and
//! rendering (step 6). A request ends as one [`Outcome`], built in one place from the
//! answer or refusal and what the path learned about the asker on the way.

use std::net::IpAddr;
use std::sync::Arc;

use crate::admit::{admit, Admitted, Context, NodeRequest, Request, Seen};
use crate::identity::link::{identify, Client, Rules};
use crate::identity_token::{self, TokenRequest};
use crate::inventory::OnDemand;
use crate::longpoll::{self, Wait};
use crate::metadata::checkin::{CheckinError, Kind, Shared};
use crate::metadata::password::PasswordError;
use crate::metadata::render;
use crate::metadata::route::Route;
use crate::node::NodeView;
use crate::reply::{Denied, Refusal, Reply};
use crate::versions;

/// The reply, and what the caller logs and counts about it.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) reply: Reply,
    pub(crate) record: Record,
}

/// What the audit and access logs say about a request (never sent to the client).
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) refusal: Option<Refusal>,
    /// The client address the request was answered for.
    pub(crate) client: Option<IpAddr>,
    /// The policy zone of the client.
    pub(crate) zone: Option<Arc<str>>,
    /// The node the request was answered for, or that a refusal concerns.
    pub(crate) node: Option<String>,
    /// Why the request was refused.
    pub(crate) detail: Option<String>,
}

impl Outcome {
    /// The one place an answer or a refusal becomes an outcome.
    pub(crate) fn new(result: Result<Reply, Denied>, seen: Seen) -> Outcome {
        let Seen { client, zone, node } = seen;
        let record = Record {
            refusal: None,
            client,
            zone,
            node,
            detail: None,
        };
        match result {
            Ok(reply) => Outcome { reply, record },
            Err(d) => Outcome {
                reply: d.refusal.reply(),
                record: Record {
                    refusal: Some(d.refusal),
                    node: d.node.or(record.node),
                    detail: d.detail,
                    ..record
                },
            },
        }
    }
}

/// Where a request stands after admission.
pub(crate) enum Step {
    Done(Outcome),
    /// Admitted, and its body is needed (a password POST): read it, then [`resume`]. A
    /// body is never read before the client is admitted.
    NeedsBody(Pending),
    /// Answered, and the answer is the one the client holds: it waits for a change
    /// (`wait_for_change`), asking [`again`] when the index changes.
    Wait(Parked),
}

/// A request waiting for its document to change.
pub(crate) struct Parked {
    pub(crate) wait: Wait,
    /// The ETag the answer must differ from (bare).
    held: String,
    seen: Seen,
    node: NodeRequest,
}

impl Parked {
    /// True when `out` is worth answering: another document, or no document any more.
    pub(crate) fn changed(&self, out: &Outcome) -> bool {
        !matches!(out.reply.status, 200 | 304)
            || out
                .reply
                .etag
                .as_deref()
                .is_none_or(|e| longpoll::bare(e) != self.held)
    }

    /// The client the request is answered for.
    pub(crate) fn client(&self) -> IpAddr {
        self.node.client.ip
    }

    /// The answer when no place is left to wait in.
    pub(crate) fn refused(&self) -> Outcome {
        Outcome::new(Err(Refusal::TooManyWaiting.into()), self.seen.clone())
    }
}

/// The parked request's answer from the index as it is now: identity and rendering again,
/// under the admission it already passed (no second rate-limit token).
pub(crate) fn again(ctx: &Context<'_>, req: &Request<'_>, parked: &Parked) -> Outcome {
    let mut seen = parked.seen.clone();
    let rules = parked.node.rules(ctx);
    let result = serve(
        ctx,
        req,
        parked.node.client,
        &parked.node.route,
        &rules,
        &mut seen,
    );
    conditional(Outcome::new(result, seen), req.if_none_match)
}

/// An admitted request waiting for its body.
pub(crate) struct Pending {
    seen: Seen,
    node: NodeRequest,
}

impl Pending {
    /// The largest body read for it (a password's or a check-in's).
    pub(crate) fn body_limit(&self) -> usize {
        self.node.body_limit()
    }
}

/// The whole path, plus one on-demand refresh when the address is unknown: a node deployed
/// a moment ago is answered on its first request. Before the first inventory has loaded an
/// unknown address gets 503 rather than a 404 that would read as "no such node".
pub(crate) async fn handle(
    ctx: &Context<'_>,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
) -> Step {
    let mut seen = Seen::default();
    let result = match admit(ctx, req, &mut seen) {
        Ok(Admitted::Node(node)) if node.is_password_post(req) => {
            return Step::NeedsBody(Pending { seen, node });
        }
        Ok(Admitted::Node(node)) => {
            // Only reads wait; a bad wait is refused before any node data is looked at.
            let wait = match req.method {
                "GET" | "HEAD" => longpoll::parse(req.path),
                _ => Ok(None),
            };
            match wait {
                Ok(None) => return Step::Done(answer(ctx, on_demand, req, &node, seen).await),
                Ok(Some(wait)) => {
                    let out = answer(ctx, on_demand, req, &node, seen.clone()).await;
                    let etag = out.reply.etag.as_deref().map(longpoll::bare);
                    return match etag {
                        Some(e)
                            if matches!(out.reply.status, 200 | 304)
                                && wait.last_etag.as_deref().is_none_or(|l| l == e) =>
                        {
                            let held = e.to_string();
                            Step::Wait(Parked {
                                wait,
                                held,
                                seen: Seen {
                                    node: out.record.node,
                                    ..seen
                                },
                                node,
                            })
                        }
                        _ => Step::Done(out),
                    };
                }
                Err(r) => Err(Denied::new(r).detail("bad wait_for_change parameters")),
            }
        }
        Ok(Admitted::Answered(reply)) => Ok(reply),
        Err(d) => Err(d),
    };
    Step::Done(conditional(Outcome::new(result, seen), req.if_none_match))
}

/// The rest of the path once the body of `pending` is in `req.body`, or did not arrive in
/// time (`timed_out`).
pub(crate) async fn resume(
    ctx: &Context<'_>,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
    pending: Pending,
    timed_out: bool,
) -> Outcome {
    if timed_out {
        return Outcome::new(Err(Refusal::BodyTimeout.into()), pending.seen);
    }
    answer(ctx, on_demand, req, &pending.node, pending.seen).await
}

/// Identity and rendering, with one on-demand refresh for an unknown address.
async fn answer(
    ctx: &Context<'_>,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
    node: &NodeRequest,
    mut seen: Seen,
) -> Outcome {
    let rules = node.rules(ctx);
    let mut result = serve(ctx, req, node.client, &node.route, &rules, &mut seen);
    if unknown(&result) {
        if let Some(source) = on_demand {
            if source.refresh_for(node.client.ip).await {
                result = serve(ctx, req, node.client, &node.route, &rules, &mut seen);
            }
        }
    }
    let result = until_loaded(result, || ctx.catalog.status().ready);
    conditional(Outcome::new(result, seen), req.if_none_match)
}

/// The whole path without on-demand refresh (file inventories, tests, benchmarks); a
/// password POST's body is taken from `req`.
pub(crate) fn handle_now(ctx: &Context<'_>, req: &Request<'_>) -> Outcome {
    let mut seen = Seen::default();
    let result = admit(ctx, req, &mut seen).and_then(|admitted| match admitted {
        Admitted::Answered(reply) => Ok(reply),
        Admitted::Node(node) => {
            let rules = node.rules(ctx);
            serve(ctx, req, node.client, &node.route, &rules, &mut seen)
        }
    });
    conditional(Outcome::new(result, seen), req.if_none_match)
}

/// Before the first inventory has loaded (`ready`), an unknown address is 503: a 404 would
/// read as "no such node".
pub(crate) fn until_loaded<T>(
    result: Result<T, Denied>,
    ready: impl FnOnce() -> bool,
) -> Result<T, Denied> {
    match result {
        Err(d) if d.refusal == Refusal::UnknownAddress && !ready() => {
            Err(Denied::new(Refusal::NotReady).detail("no inventory loaded yet"))
        }
        result => result,
    }
}

fn unknown(result: &Result<Reply, Denied>) -> bool {
    matches!(result, Err(d) if d.refusal == Refusal::UnknownAddress)
}

/// Step 6: identity, then render.
fn serve(
    ctx: &Context<'_>,
    req: &Request<'_>,
    client: Client,
    route: &Route,
    rules: &Rules<'_>,
    seen: &mut Seen,
) -> Result<Reply, Denied> {
    let index = ctx.catalog.index();
    // An identity token's request is checked before any node data is looked at.
    let token = TokenRequest {
        target: req.path,
        headers: req.headers,
        client: client.ip,
    };
    let ask = identity_token::asked(ctx.identity, ctx.policy, &token, route)?;
    let node = identify(&index, ctx.neighbours, client, rules)?;
    seen.node = Some(node.uuid.clone());
    if let Some(ask) = ask {
        return ask.issue(&node, client.ip, ctx.now);
    }
    if let Route::OpenStack {
        version,
        file: Some(f),
    } = route
    {
        if f == "password" && versions::has(version, versions::GRIZZLY) {
            return password(ctx, req, &node);
        }
        if let Some(kind) = Kind::of_file(f) {
            return checkin(ctx, req, &node, kind);
        }
    }
    let reply = render::render(&node, route, client.ip, ctx.tree).map_err(Denied::new)?;
    let asker = (client.ip, ctx.now);
    identity_token::place(ctx.identity, ctx.policy, route, &node, reply, asker)
}

/// `/openstack/<version>/phone_home` and `.../reporting`: a POST stores the calling node's
/// check-in (400 malformed, 413 over 16 KiB, 429 too many, nothing stored); GET is 405.
fn checkin(
    ctx: &Context<'_>,
    req: &Request<'_>,
    node: &NodeView,
    kind: Kind,
) -> Result<Reply, Denied> {
    if req.method != "POST" {
        return Err(Denied::new(Refusal::MethodNotAllowed).detail("check-ins are POSTed"));
    }
    let Some(body) = req.body else {
        ctx.checkins.count(kind, "too_large");
        return Err(Refusal::CheckinTooLarge.into());
    };
    let shared = node
        .written_back
        .as_ref()
        .and_then(|w| Shared::Checkin.held(w));
    match ctx
        .checkins
        .record(&node.uuid, &node.deployment(), kind, body, shared.as_ref())
    {
        Ok(()) => Ok(Reply::text("")),
        Err(CheckinError::Malformed(why)) => {
            Err(Denied::new(Refusal::CheckinMalformed).detail(why))
        }
        Err(CheckinError::RateLimited) => Err(Refusal::CheckinRateLimited.into()),
        Err(e @ CheckinError::Io(_)) => {
            Err(Denied::new(Refusal::CheckinNotStored).detail(e.to_string()))
        }
    }
}

/// `/openstack/<version>/password`: GET returns the stored value (empty when none), POST
/// stores it once per deployment (409 after that, 400 over 1020 bytes), as Nova does.
fn password(ctx: &Context<'_>, req: &Request<'_>, node: &NodeView) -> Result<Reply, Denied> {
    if req.method != "POST" {
        let value = ctx
            .passwords
            .get(
                &node.uuid,
                &node.deployment(),
                shared_password(node).as_ref(),
            )
            .unwrap_or_default();
        return Ok(Reply::text(value));
    }
    let body = req.body.ok_or(Refusal::PasswordTooLong)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| Denied::new(Refusal::BadPath).detail("password is not UTF-8"))?;
    match ctx.passwords.set(
        &node.uuid,
        &node.deployment(),
        text,
        shared_password(node).as_ref(),
    ) {
        Ok(()) => Ok(Reply::text("")),
        Err(PasswordError::Exists) => Err(Refusal::PasswordExists.into()),
        Err(PasswordError::TooLong) => Err(Refusal::PasswordTooLong.into()),
        Err(e @ PasswordError::Io(_)) => {
            Err(Denied::new(Refusal::PasswordNotStored).detail(e.to_string()))
        }
    }
}

/// The password replicas wrote to the node's `extra` in Ironic.
fn shared_password(node: &NodeView) -> Option<serde_json::Value> {
    node.written_back
        .as_ref()
        .and_then(|w| Shared::Password.held(w))
}

/// Every document served carries an ETag; a matching `If-None-Match` (weak comparison,
/// as RFC 9110 asks for it) gets 304 without a body.
fn conditional(mut out: Outcome, if_none_match: Option<&str>) -> Outcome {
    if out.reply.status != 200 {
        return out;
    }
    let etag = out.reply.entity_tag();
    let strip = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
    let ours = strip(&etag);
    let matches = if_none_match.is_some_and(|h| {
        h.split(',').any(|t| {
            let t = t.trim();
            t == "*" || strip(t) == ours
        })
    });
    if matches {
        out.reply.status = 304;
        out.reply.body = bytes::Bytes::new();
    }
    out.reply.headers.push(("ETag", etag.to_string()));
    out.reply.etag = Some(etag);
    out
}

/// Today's date in UTC as `YYYY-MM-DD`, for hiding future-dated versions. Formatted once a
/// day per thread: formatting it on every request cost about 3 % of the hot path's time.
pub(crate) fn today_utc() -> Arc<str> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date_of_day(secs / 86_400)
}

/// `YYYY-MM-DD` of the `day`-th day since 1970-01-01, from this thread's cache when it
/// holds that day.
fn date_of_day(day: u64) -> Arc<str> {
    thread_local! {
        static CACHED: std::cell::RefCell<Option<(u64, Arc<str>)>> =
            const { std::cell::RefCell::new(None) };
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Some((d, text)) if *d == day => text.clone(),
            _ => {
                let text: Arc<str> = format_day(day).into();
                *c = Some((day, text.clone()));
                text
            }
        }
    })
}

fn format_day(day: u64) -> String {
    i64::try_from(day * 86_400)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::neighbour::{Fixed, Neighbours, L2};
    use crate::identity::DEFAULT_SERVED_STATES;
    use crate::inventory::Catalog;
    use crate::metadata::password::PasswordStore;
    use crate::policy::file::parse_files;
    use crate::policy::token::TokenKey;
    use crate::policy::Policy;
    use macaddr::MacAddr6;
    use serde_json::json;
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::SystemTime;

    fn nd(ip: Option<&str>) -> serde_json::Value {
        let net = match ip {
            Some(ip) => json!({"id": "n", "type": "ipv4", "link": "l", "network_id": "x",
                               "ip_address": ip, "netmask": "255.255.255.0"}),
            None => json!({"id": "n", "type": "ipv4_dhcp", "link": "l", "network_id": "x"}),
        };
        json!({"links": [{"id": "l", "type": "phy"}], "networks": [net], "services": []})
    }

    fn catalog() -> Catalog {
        let node = |uuid: &str, ip: Option<&str>, state: &str| json!({"uuid": uuid, "name": uuid, "provision_state": state, "network_data": nd(ip)});
        let port = |uuid: &str, mac: &str, node: &str| json!({"uuid": uuid, "address": mac, "node_uuid": node});
        let inv = json!({
            "nodes": [
                node("a", Some("10.0.0.1"), "active"),
                node("b", Some("10.0.0.2"), "active"),
                node("c", None, "active"),
                node("d", None, "active"),
                node("e", None, "active"),
                node("f", None, "available"),
                node("g", Some("10.0.1.7"), "active"),
                node("h", Some("10.0.2.1"), "active"),
            ],
            "ports": [
                port("pa", "52:54:00:00:00:01", "a"),
                port("pb", "52:54:00:00:00:02", "b"),
                port("pc", "52:54:00:00:00:03", "c"),
                port("pd", "52:54:00:00:00:DD", "d"),
                port("pe", "52:54:00:00:00:dd", "e"),
                port("pf", "52:54:00:00:00:0f", "f"),
                port("pg", "52:54:00:00:00:07", "g"),
            ],
            "portgroups": [{"uuid": "gb", "address": "52:54:00:00:00:0b", "node_uuid": "b"}],
        });
        let served = DEFAULT_SERVED_STATES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let catalog = Catalog::new("test", served);
        catalog.publish(serde_json::from_value(inv).unwrap());
        catalog
    }

    fn policy() -> Policy {
        let text = r#"
[[zone]]
name = "l2"
cidrs = ["10.0.0.0/24"]
action = "allow"
verify_mac = true
identify_by_mac = true

[[zone]]
name = "verify"
cidrs = ["10.0.1.0/24"]
action = "allow"
verify_mac = true

[[zone]]
name = "plain"
cidrs = ["10.0.2.0/24"]
action = "allow"

[[zone]]
name = "proxy"
cidrs = ["10.0.3.0/24"]
action = "allow"
trusted_proxies = ["10.0.3.1"]
"#;
        Policy::build(parse_files([(Path::new("p.toml"), text)]).unwrap(), None)
    }

    fn mac(last: u8) -> L2 {
        L2::Mac(MacAddr6::new(0x52, 0x54, 0, 0, 0, last))
    }

    struct Broken;
    impl Neighbours for Broken {
        fn resolve(&self, _: IpAddr) -> std::io::Result<L2> {
            Err(std::io::Error::other("netlink socket refused"))
        }
        fn resolve_scoped(&self, _: std::net::Ipv6Addr, _: u32) -> std::io::Result<L2> {
            Err(std::io::Error::other("netlink socket refused"))
        }
    }

    /// Asks `path` from `peer` (forwarding `xff` when given) with this neighbour table.
    fn ask(neighbours: &dyn Neighbours, peer: &str, xff: &[&str], path: &str) -> Outcome {
        let catalog = catalog();
        let policy = policy();
        let tokens = TokenKey::random();
        let passwords = PasswordStore::new(None).unwrap();
        let checkins = crate::metadata::checkin::CheckinStore::new(None).unwrap();
        let ctx = Context {
            catalog: &catalog,
            neighbours,
            policy: &policy,
            tokens: &tokens,
            passwords: &passwords,
            checkins: &checkins,
            tree: &Default::default(),
            now: SystemTime::now(),
            today: "2026-11-27",
            own_addresses: &[],
            identity: None,
        };
        let req = Request {
            method: "GET",
            path,
            peer: Some(peer.parse().unwrap()),
            x_forwarded_for: xff,
            ..Default::default()
        };
        handle_now(&ctx, &req)
    }

    fn table(entries: &[(&str, L2)]) -> Fixed {
        Fixed(
            entries
                .iter()
                .map(|(ip, l2)| (ip.parse().unwrap(), l2.clone()))
                .collect::<HashMap<_, _>>(),
        )
    }

    const MD: &str = "/openstack/latest/meta_data.json";

    fn served(out: &Outcome) -> (u16, Option<&str>) {
        (out.reply.status, out.record.node.as_deref())
    }

    fn refused(out: &Outcome) -> (u16, &[u8], Option<Refusal>) {
        (out.reply.status, &out.reply.body[..], out.record.refusal)
    }

    #[test]
    fn a_node_is_served_to_its_own_mac() {
        let t = table(&[("10.0.0.1", mac(1)), ("10.0.0.2", mac(0x0b))]);
        let out = ask(&t, "10.0.0.1", &[], MD);
        assert_eq!(served(&out), (200, Some("a")));
        assert!(std::str::from_utf8(&out.reply.body)
            .unwrap()
            .contains("\"uuid\": \"a\""));
        // A portgroup's (bond's) MAC is the node's too.
        assert_eq!(served(&ask(&t, "10.0.0.2", &[], MD)), (200, Some("b")));
    }

    #[test]
    fn another_nodes_address_with_a_foreign_mac_is_refused_and_named() {
        // 10.0.0.2 is b's; the neighbour table says the sender has a's MAC.
        let out = ask(&table(&[("10.0.0.2", mac(1))]), "10.0.0.2", &[], MD);
        assert_eq!(
            refused(&out),
            (
                404,
                &b"no metadata for this address\n"[..],
                Some(Refusal::MacMismatch)
            )
        );
        assert_eq!(out.record.node.as_deref(), Some("b"));
        assert_eq!(
            out.record.detail.as_deref(),
            Some("neighbour MAC 52:54:00:00:00:01 is not a port of node b (its ports: 52:54:00:00:00:02, 52:54:00:00:00:0b)")
        );
        // The same refusal on the EC2 tree: no route around the check.
        let ec2 = ask(
            &table(&[("10.0.0.2", mac(1))]),
            "10.0.0.2",
            &[],
            "/latest/meta-data/instance-id",
        );
        assert_eq!(ec2.record.refusal, Some(Refusal::MacMismatch));
    }

    #[test]
    fn an_unclaimed_address_is_identified_by_its_mac() {
        let t = table(&[
            ("10.0.0.50", mac(3)),
            ("10.0.0.51", mac(0xdd)),
            ("10.0.0.52", mac(0xee)),
            ("10.0.0.55", mac(0x0f)),
        ]);
        let out = ask(&t, "10.0.0.50", &[], "/latest/meta-data/local-ipv4");
        assert_eq!(served(&out), (200, Some("c")));
        assert_eq!(&out.reply.body[..], b"10.0.0.50");
        let out = ask(&t, "10.0.0.51", &[], MD);
        assert_eq!(out.record.refusal, Some(Refusal::ContestedAddress));
        assert_eq!(
            out.record.detail.as_deref(),
            Some("MAC 52:54:00:00:00:dd is a port of nodes d, e")
        );
        let out = ask(&t, "10.0.0.52", &[], MD);
        assert_eq!(out.record.refusal, Some(Refusal::UnknownAddress));
        assert_eq!(
            out.record.detail.as_deref(),
            Some("no node claims this address nor MAC 52:54:00:00:00:ee")
        );
        assert_eq!(
            ask(&t, "10.0.0.55", &[], MD).record.refusal,
            Some(Refusal::NodeNotServed)
        );
    }

    #[test]
    fn without_identify_by_mac_an_unclaimed_address_stays_unknown() {
        let out = ask(&table(&[("10.0.1.50", mac(3))]), "10.0.1.50", &[], MD);
        assert_eq!(out.record.refusal, Some(Refusal::UnknownAddress));
        // ... while the zone still verifies the nodes it knows by address.
        let out = ask(&table(&[("10.0.1.7", mac(3))]), "10.0.1.7", &[], MD);
        assert_eq!(out.record.refusal, Some(Refusal::MacMismatch));
        let out = ask(&table(&[("10.0.1.7", mac(7))]), "10.0.1.7", &[], MD);
        assert_eq!(served(&out), (200, Some("g")));
    }

    #[test]
    fn no_mac_to_verify_is_refused() {
        let t = table(&[
            ("10.0.0.1", L2::Routed("10.0.0.254".parse().unwrap())),
            ("10.0.0.50", L2::Local),
        ]);
        for (peer, detail) in [
            (
                "10.0.0.1",
                "the zone verifies MACs: routed via 10.0.0.254, not on a link of this host",
            ),
            (
                "10.0.0.50",
                "the zone verifies MACs: an address of this host",
            ),
            (
                "10.0.0.2",
                "the zone verifies MACs: no neighbour entry with a link-layer address",
            ),
        ] {
            let out = ask(&t, peer, &[], MD);
            assert_eq!(
                refused(&out),
                (
                    404,
                    &b"no metadata for this address\n"[..],
                    Some(Refusal::MacUnverifiable)
                ),
                "{peer}"
            );
            assert_eq!(out.record.detail.as_deref(), Some(detail), "{peer}");
        }
        // Through a trusted proxy the neighbour is the proxy, whatever the table says.
        let out = ask(
            &table(&[("10.0.0.1", mac(1))]),
            "10.0.3.1",
            &["10.0.0.1"],
            MD,
        );
        assert_eq!(out.record.refusal, Some(Refusal::MacUnverifiable));
        assert_eq!(
            out.record.detail.as_deref(),
            Some("the zone verifies MACs, but the request came through a proxy")
        );
    }

    #[test]
    fn a_broken_neighbour_table_refuses_with_503() {
        let out = ask(&Broken, "10.0.0.1", &[], MD);
        assert_eq!(
            refused(&out),
            (
                503,
                &b"metadata not available\n"[..],
                Some(Refusal::NeighbourLookupFailed)
            )
        );
        assert!(out
            .reply
            .headers
            .iter()
            .any(|(k, v)| *k == "Retry-After" && v == "5"));
    }

    #[test]
    fn zones_without_verify_mac_never_ask_the_link_layer() {
        // h's address with a MAC that is no port of h: not checked in a plain zone, and the
        // broken table is never touched.
        let out = ask(&Broken, "10.0.2.1", &[], MD);
        assert_eq!(served(&out), (200, Some("h")));
        // Version lists hold no node data and need no MAC.
        let out = ask(&Broken, "10.0.0.99", &[], "/openstack");
        assert_eq!(out.reply.status, 200);
    }

    #[test]
    fn the_cached_date_follows_the_day() {
        assert_eq!(&*date_of_day(0), "1970-01-01");
        assert_eq!(&*date_of_day(20_786), "2026-11-29");
        assert_eq!(&*date_of_day(20_787), "2026-11-30");
        assert_eq!(&*date_of_day(20_786), "2026-11-29");
    }
}
