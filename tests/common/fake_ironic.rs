//! An in-process fake Ironic (and Keystone) for faults the real one cannot produce on
//! demand: 500s, garbage, hangs, odd pagination, token expiry. It speaks the same JSON
//! shapes and headers as Ironic and records every request it receives.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Every API call answers 500 with Ironic's error shape.
    Fail500,
    /// Every API call answers 200 with a body that is not JSON.
    Garbage,
    /// Every API call waits far longer than any client timeout.
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// Tokens from POST /v3/auth/tokens; `lifetime_secs` sets their expires_at.
    Keystone {
        lifetime_secs: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub version: Option<String>,
    pub token: Option<String>,
    pub authorization: Option<String>,
}

pub struct FakeState {
    pub nodes: Vec<Value>,
    pub ports: Vec<Value>,
    pub portgroups: Vec<Value>,
    pub mode: Mode,
    pub max_minor: u32,
    pub page_size: usize,
    pub auth: Auth,
    pub valid_tokens: Vec<String>,
    pub tokens_issued: usize,
    /// 401 answers given to collection requests.
    pub unauthorized: usize,
    pub requests: Vec<Recorded>,
    pub addr: Option<SocketAddr>,
    /// Bodies served at /configdrive/{name} (a stand-in for a Swift temp URL).
    pub configdrives: std::collections::HashMap<String, Vec<u8>>,
    /// Answer as an Ironic that ignores `sort_key` would.
    pub ignore_sort: bool,
    /// Sort missing timestamps first when descending, as PostgreSQL does.
    pub nulls_first: bool,
    /// Every `PATCH /v1/nodes/{uuid}`: the node and the JSON patch, as received.
    pub patches: Vec<(String, Value)>,
    /// Answer node PATCHes with this status (Ironic's error shape) instead of applying them.
    pub patch_status: Option<u16>,
}

#[derive(Clone)]
pub struct FakeIronic {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeIronic {
    pub async fn start() -> FakeIronic {
        let state = Arc::new(Mutex::new(FakeState {
            nodes: vec![],
            ports: vec![],
            portgroups: vec![],
            mode: Mode::Normal,
            max_minor: 99,
            page_size: 1000,
            auth: Auth::None,
            valid_tokens: vec![],
            tokens_issued: 0,
            unauthorized: 0,
            requests: vec![],
            addr: None,
            configdrives: Default::default(),
            ignore_sort: false,
            nulls_first: false,
            patches: vec![],
            patch_status: None,
        }));
        let app = router(state.clone());
        let addr = serve_on_own_thread(move |listener| async move {
            axum::serve(listener, app).await.unwrap();
        });
        state.lock().unwrap().addr = Some(addr);
        FakeIronic { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same fake behind TLS with `pki`'s server certificate; with `client_auth` it
    /// also demands a client certificate signed by the test CA.
    pub async fn start_tls(pki: &TestPki, client_auth: bool) -> FakeIronic {
        let plain = FakeIronic::start().await;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(vec![pki.server_der.clone()], pki.server_key_der.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let app = router(plain.state.clone());
        let addr = serve_on_own_thread(move |listener| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeIronic {
            addr,
            state: plain.state,
        }
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.with(|s| s.mode = mode);
    }

    /// Requests for collection pages (nodes, ports, portgroups) received so far.
    pub fn list_requests(&self) -> usize {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.path.starts_with("/v1/"))
                .count()
        })
    }

    /// Changes node `uuid` as an API PATCH would, bumping its `updated_at`.
    pub fn update_node(&self, uuid: &str, f: impl FnOnce(&mut Value)) {
        self.with(|s| {
            let n = s
                .nodes
                .iter_mut()
                .find(|n| n["uuid"] == uuid)
                .expect("a node of the fake");
            f(n);
            n["updated_at"] = json!(stamp());
        });
    }

    /// Adds a node as a deployment leaves it: created a while ago, updated just now.
    pub fn deploy(&self, mut node: Value) {
        node["created_at"] = json!(stamp());
        node["updated_at"] = json!(stamp());
        self.with(|s| s.nodes.push(node));
    }

    /// Deletes node `uuid` with its ports and portgroups.
    pub fn delete_node(&self, uuid: &str) {
        self.with(|s| {
            s.nodes.retain(|n| n["uuid"] != uuid);
            s.ports.retain(|p| p["node_uuid"] != uuid);
            s.portgroups.retain(|p| p["node_uuid"] != uuid);
        });
    }

    /// Every request Ironic has received so far.
    /// How often the configdrive `name` (served at `/configdrive/{name}`) was fetched.
    pub fn configdrive_fetches(&self, name: &str) -> usize {
        let path = format!("/configdrive/{name}");
        self.with(|s| s.requests.iter().filter(|r| r.path == path).count())
    }

    pub fn request_count(&self) -> usize {
        self.with(|s| s.requests.len())
    }

    /// Full sweeps started so far: node listings that neither sort nor filter.
    pub fn full_node_listings(&self) -> usize {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| {
                    r.path.starts_with("/v1/nodes?")
                        && !r.path.contains("sort_key")
                        && !r.path.contains("fields=")
                        && !r.path.contains("marker=")
                })
                .count()
        })
    }

    pub fn node_list_requests(&self) -> usize {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.path.starts_with("/v1/nodes"))
                .count()
        })
    }
}

/// Bind a free loopback port and run `serve` on it in a thread with its own runtime, so a
/// test that loads its own runtime cannot starve the fake.
fn serve_on_own_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            async move { serve(tokio::net::TcpListener::from_std(listener).unwrap()).await },
        );
    });
    addr
}

/// The Ironic and Keystone routes the fake answers.
fn router(state: Arc<Mutex<FakeState>>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1/{kind}", get(list))
        .route("/v1/nodes/{uuid}", get(one_node).patch(patch_node))
        .route("/v3/auth/tokens", post(issue_token))
        .route("/configdrive/{name}", get(configdrive))
        .with_state(state)
}

async fn configdrive(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&state, "GET", format!("/configdrive/{name}"), &headers);
    match state.lock().unwrap().configdrives.get(&name) {
        Some(body) => (StatusCode::OK, body.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such object").into_response(),
    }
}

fn record(state: &Mutex<FakeState>, method: &str, path: String, headers: &HeaderMap) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.lock().unwrap().requests.push(Recorded {
        method: method.into(),
        path,
        version: h("x-openstack-ironic-api-version"),
        token: h("x-auth-token"),
        authorization: h("authorization"),
    });
}

fn ironic_error(status: StatusCode, text: &str) -> Response {
    let inner = json!({"faultstring": text, "faultcode": "Server", "debuginfo": null}).to_string();
    (status, Json(json!({"error_message": inner}))).into_response()
}

async fn root(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap) -> Response {
    record(&state, "GET", "/".into(), &headers);
    let max = state.lock().unwrap().max_minor;
    let version = format!("1.{max}");
    (
        [("X-OpenStack-Ironic-API-Maximum-Version", version.clone()), ("X-OpenStack-Ironic-API-Minimum-Version", "1.1".to_string())],
        Json(json!({
            "name": "OpenStack Ironic API",
            "default_version": {"id": "v1", "status": "CURRENT", "min_version": "1.1", "version": version},
            "versions": [{"id": "v1", "status": "CURRENT", "min_version": "1.1", "version": version}]
        })),
    )
        .into_response()
}

async fn faults(mode: Mode) -> Option<Response> {
    match mode {
        Mode::Normal => None,
        Mode::Fail500 => Some(ironic_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database is locked",
        )),
        Mode::Garbage => Some((StatusCode::OK, "<html>proxy error</html>").into_response()),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
    }
}

fn authorized(s: &FakeState, headers: &HeaderMap) -> bool {
    match &s.auth {
        Auth::None => true,
        Auth::Basic { user, password } => {
            use base64::Engine;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
        }
        Auth::Keystone { .. } => headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| s.valid_tokens.iter().any(|v| v == t)),
    }
}

async fn list(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(kind): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/{kind}?{}", query.clone().unwrap_or_default());
    record(&state, "GET", path, &headers);
    let mode = state.lock().unwrap().mode;
    if let Some(r) = faults(mode).await {
        return r;
    }
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        s.unauthorized += 1;
        return (
            StatusCode::UNAUTHORIZED,
            [("WWW-Authenticate", "Basic realm=\"Baremetal API\"")],
            "unauthorized",
        )
            .into_response();
    }
    stamp_new(&mut s);
    let minor: u32 = headers
        .get("x-openstack-ironic-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if minor > s.max_minor {
        return ironic_error(StatusCode::NOT_ACCEPTABLE, "version not supported");
    }
    let all = match kind.as_str() {
        "nodes" => &s.nodes,
        "ports" => &s.ports,
        "portgroups" => &s.portgroups,
        _ => return ironic_error(StatusCode::NOT_FOUND, "not found"),
    };
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let sort_key = param("sort_key").filter(|_| !s.ignore_sort);
    let items = sorted_and_filtered(
        all,
        sort_key,
        param("sort_dir"),
        param("node"),
        s.nulls_first,
    );
    let items = &items;
    let limit = param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(s.page_size)
        .min(s.page_size);
    let start = match param("marker") {
        Some(m) => match items.iter().position(|i| i["uuid"] == m.as_str()) {
            Some(p) => p + 1,
            None => return ironic_error(StatusCode::BAD_REQUEST, &format!("Marker {m} not found")),
        },
        None => 0,
    };
    let page: Vec<Value> = items
        .iter()
        .skip(start)
        .take(limit)
        .map(|i| {
            let mut i = i.clone();
            // Below 1.66 Ironic does not return network_data at all.
            if minor < 66 {
                i.as_object_mut().unwrap().remove("network_data");
            }
            if let Some(fields) = param("fields") {
                let keep: Vec<&str> = fields.split(',').collect();
                i.as_object_mut()
                    .unwrap()
                    .retain(|k, _| keep.contains(&k.as_str()));
            }
            i
        })
        .collect();
    let mut body = json!({ kind.as_str(): page });
    // Like Ironic: a full page carries `next`, built from the public endpoint (a host the
    // client must not use), even when nothing follows.
    if page.len() == limit {
        let last = page.last().unwrap()["uuid"].as_str().unwrap().to_string();
        body["next"] = json!(format!(
            "http://public-endpoint.invalid:6385/v1/{kind}?detail=True&limit={limit}&marker={last}"
        ));
    }
    Json(body).into_response()
}

/// `GET /v1/nodes/{uuid}`.
async fn one_node(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&state, "GET", format!("/v1/nodes/{uuid}"), &headers);
    let mode = state.lock().unwrap().mode;
    if let Some(r) = faults(mode).await {
        return r;
    }
    let mut s = state.lock().unwrap();
    stamp_new(&mut s);
    match s.nodes.iter().find(|n| n["uuid"] == uuid.as_str()) {
        Some(n) => Json(n.clone()).into_response(),
        None => ironic_error(
            StatusCode::NOT_FOUND,
            &format!("Node {uuid} could not be found."),
        ),
    }
}

/// `PATCH /v1/nodes/{uuid}`: a JSON patch (RFC 6902 `add`, `replace`, `remove` of a field
/// or of one key of an object field such as `/extra/<key>`), as Ironic applies it; the
/// node's `updated_at` moves.
async fn patch_node(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    record(&state, "PATCH", format!("/v1/nodes/{uuid}"), &headers);
    let mode = state.lock().unwrap().mode;
    if let Some(r) = faults(mode).await {
        return r;
    }
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return ironic_error(StatusCode::BAD_REQUEST, "Invalid JSON patch");
    };
    s.patches.push((uuid.clone(), patch.clone()));
    if let Some(status) = s.patch_status {
        return ironic_error(
            StatusCode::from_u16(status).unwrap(),
            "Access was denied to the following resource: baremetal:node:update_extra",
        );
    }
    let Some(node) = s.nodes.iter_mut().find(|n| n["uuid"] == uuid.as_str()) else {
        return ironic_error(
            StatusCode::NOT_FOUND,
            &format!("Node {uuid} could not be found."),
        );
    };
    let mut patched = node.clone();
    for op in patch.as_array().into_iter().flatten() {
        let path: Vec<&str> = op["path"]
            .as_str()
            .unwrap_or("")
            .split('/')
            .skip(1)
            .collect();
        let (field, key) = match path.as_slice() {
            [f] => (*f, None),
            [f, k] => (*f, Some(*k)),
            _ => return ironic_error(StatusCode::BAD_REQUEST, "unsupported patch path"),
        };
        let parent = match key {
            None => patched.as_object_mut().unwrap(),
            Some(_) => match patched[field].as_object_mut() {
                Some(o) => o,
                None => return ironic_error(StatusCode::BAD_REQUEST, "no such object"),
            },
        };
        let name = key.unwrap_or(field).to_string();
        match op["op"].as_str() {
            Some("add" | "replace") => {
                parent.insert(name, op["value"].clone());
            }
            Some("remove") => {
                parent.remove(&name);
            }
            _ => return ironic_error(StatusCode::BAD_REQUEST, "unsupported patch op"),
        }
    }
    patched["updated_at"] = json!(stamp());
    *node = patched.clone();
    Json(patched).into_response()
}

/// Now, as Ironic writes timestamps.
pub fn stamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// Items added without `created_at` get one, as Ironic's database would have given them.
fn stamp_new(s: &mut FakeState) {
    for item in s
        .nodes
        .iter_mut()
        .chain(s.ports.iter_mut())
        .chain(s.portgroups.iter_mut())
    {
        if item.get("created_at").is_none_or(Value::is_null) {
            item["created_at"] = json!(stamp());
        }
    }
}

/// Ironic's ordering (`sort_key`, `sort_dir`, ties by insertion; NULLs first ascending, as
/// sqlite and MySQL, or first descending, as PostgreSQL) and its `node` filter.
fn sorted_and_filtered(
    items: &[Value],
    key: Option<String>,
    dir: Option<String>,
    node: Option<String>,
    nulls_first: bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = items
        .iter()
        .filter(|i| node.as_ref().is_none_or(|n| i["node_uuid"] == n.as_str()))
        .cloned()
        .collect();
    if let Some(key) = key {
        let k = |v: &Value| v[key.as_str()].as_str().map(str::to_string);
        out.sort_by_key(k);
        if dir.as_deref() == Some("desc") {
            out.reverse();
            if nulls_first {
                out.sort_by_key(|i| k(i).is_some());
            }
        }
    }
    out
}

async fn issue_token(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record(&state, "POST", "/v3/auth/tokens".into(), &headers);
    let mut s = state.lock().unwrap();
    let Auth::Keystone { lifetime_secs } = s.auth.clone() else {
        return (StatusCode::NOT_FOUND, "no keystone here").into_response();
    };
    let methods = &body["auth"]["identity"]["methods"];
    let identity = &body["auth"]["identity"];
    let app_cred = methods == &json!(["application_credential"])
        && identity["application_credential"]["secret"] == "s3cret"
        && body["auth"].get("scope").is_none();
    let password = methods == &json!(["password"])
        && identity["password"]["user"]["name"] == "metadata"
        && identity["password"]["user"]["password"] == "pw-from-yaml"
        && identity["password"]["user"]["domain"]["name"] == "Default"
        && body["auth"]["scope"]["project"]["name"] == "service";
    let ok = app_cred || password;
    if !ok {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": 401, "message": "The request you have made requires authentication."}}))).into_response();
    }
    s.tokens_issued += 1;
    let token = format!("tok-{}", s.tokens_issued);
    s.valid_tokens.push(token.clone());
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(lifetime_secs)).to_rfc3339();
    let url = format!("http://{}", s.addr.unwrap());
    (
        StatusCode::CREATED,
        [("X-Subject-Token", token)],
        Json(json!({"token": {"expires_at": expires, "catalog": [
            {"type": "identity", "endpoints": [{"interface": "public", "region_id": "RegionOne", "url": url}]},
            {"type": "baremetal", "endpoints": [
                {"interface": "internal", "region_id": "RegionOne", "url": "http://internal.invalid:6385"},
                {"interface": "public", "region_id": "RegionOne", "url": url}]}
        ]}})),
    )
        .into_response()
}

/// A node in Ironic's shape claiming `ip`, with a configdrive dict.
pub fn node(uuid: &str, name: &str, ip: &str) -> Value {
    json!({
        "uuid": uuid, "name": name, "provision_state": "active", "driver": "fake-hardware",
        "power_state": "power on", "maintenance": false,
        "instance_info": {"configdrive": {
            "meta_data": {"public_keys": {"k": "ssh-ed25519 AAAA k@example.com"}},
            "user_data": format!("#cloud-config\nhostname: {name}\n"),
            "network_data": {"links": [{"id": "p0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:01"}],
                             "networks": [{"id": "n0", "type": "ipv4", "link": "p0", "network_id": "x", "ip_address": ip, "netmask": "255.0.0.0"}],
                             "services": []}}},
        "properties": {}, "extra": {},
        "network_data": {},
        "links": []
    })
}

/// A test CA with a server certificate for 127.0.0.1 and a client certificate, as PEM
/// files in `dir` and DER for the fake's own TLS setup.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub server_der: rustls::pki_types::CertificateDer<'static>,
    pub server_key_der: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["ironic-metadata".to_string()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        TestPki {
            ca_der: ca.der().clone(),
            server_der: server.der().clone(),
            server_key_der: rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
                .unwrap(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}
