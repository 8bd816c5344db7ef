//! Ironic REST client: negotiates the microversion, lists nodes, ports and portgroups with
//! pagination, authenticates (none, HTTP basic, Keystone token reused until expiry and
//! renewed once on 401). Errors carry a reason label for metrics and never a credential.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Mutex;

use super::auth::{AuthConfig, KeystoneConfig};
use crate::ironic::model::{Inventory, Node, Port, Portgroup};

/// The newest microversion this client asks for; newer servers are asked for this one.
pub(crate) const MAX_MINOR: u32 = 115;
/// `network_data` on nodes appears at 1.66; older servers simply lack it.
pub(crate) const NETWORK_DATA_MINOR: u32 = 66;
/// `?detail=True` on collections needs 1.43; older servers use `/detail`.
const DETAIL_QUERY_MINOR: u32 = 43;
/// Portgroups exist from 1.23 (mode and properties from 1.26).
const PORTGROUPS_MINOR: u32 = 23;
/// Largest answer body read from Ironic.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Largest configdrive downloaded from a URL (base64 of Ironic's 64 MiB limit).
pub(crate) const MAX_CONFIGDRIVE: usize = 90 * 1024 * 1024;
/// Renew a Keystone token this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    /// Ironic endpoint, with or without `/v1`. `None`: take it from the Keystone catalog.
    pub(crate) url: Option<String>,
    pub(crate) auth: AuthConfig,
    pub(crate) cacert: Option<PathBuf>,
    /// PEM certificate and key for TLS client authentication.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    /// `limit` per page; `None` leaves it to Ironic (`[api]max_limit`, 1000 by default).
    pub(crate) page_size: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("invalid Ironic client settings: {0}")]
    Config(String),
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("{target} answered HTTP {status}: {message}")]
    Status {
        target: String,
        status: u16,
        message: String,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("invalid answer from {target}: {message}")]
    Invalid { target: String, message: String },
}

impl ClientError {
    /// Metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ClientError::Config(_) => "config",
            ClientError::Connect { .. } => "connect",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Status { status, .. } if *status >= 500 => "http_5xx",
            ClientError::Status { .. } => "http_4xx",
            ClientError::Auth(_) => "auth",
            ClientError::Invalid { .. } => "invalid_response",
        }
    }
}

struct Token {
    value: HeaderValue,
    expires: Option<Instant>,
    /// The baremetal endpoint from the token's catalog.
    endpoint: Option<String>,
}

pub(crate) struct IronicClient {
    http: reqwest::Client,
    config: ClientConfig,
    token: Mutex<Option<Token>>,
    /// Negotiated minor version, kept until a request fails.
    minor: Mutex<Option<u32>>,
    requests: std::sync::atomic::AtomicU64,
}

/// Takes a whole fleet as [`IronicClient::fetch_paged`] reads it.
pub(crate) trait FleetSink {
    /// Every port and portgroup; called once, before any node.
    fn links(&mut self, ports: Vec<Port>, portgroups: Vec<Portgroup>);
    /// One page of nodes.
    fn nodes(&mut self, nodes: Vec<Node>);
}

impl FleetSink for Inventory {
    fn links(&mut self, ports: Vec<Port>, portgroups: Vec<Portgroup>) {
        self.ports = ports;
        self.portgroups = portgroups;
    }

    fn nodes(&mut self, nodes: Vec<Node>) {
        self.nodes.extend(nodes);
    }
}

impl IronicClient {
    pub(crate) fn new(config: ClientConfig) -> Result<IronicClient, ClientError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .no_proxy()
            .user_agent(concat!("ironic-metadata/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.cacert {
            let pem = std::fs::read(ca).map_err(|e| {
                ClientError::Config(format!("cannot read CA bundle {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Config(format!("invalid CA bundle {}: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "CA bundle {} holds no certificate",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some((cert, key)) = &config.client_cert {
            let mut pem = std::fs::read(cert).map_err(|e| {
                ClientError::Config(format!(
                    "cannot read client certificate {}: {e}",
                    cert.display()
                ))
            })?;
            pem.extend(std::fs::read(key).map_err(|e| {
                ClientError::Config(format!("cannot read client key {}: {e}", key.display()))
            })?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Config(format!("invalid client certificate or key: {e}"))
            })?;
            b = b.identity(id);
        }
        if config.url.is_none() && !matches!(config.auth, AuthConfig::Keystone(_)) {
            return Err(ClientError::Config(
                "no Ironic URL given (IRONIC_URL) and no Keystone catalog to find it in".into(),
            ));
        }
        if let Some(u) = &config.url {
            parse_root(u)?;
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(IronicClient {
            http,
            config,
            token: Mutex::new(None),
            minor: Mutex::new(None),
            requests: Default::default(),
        })
    }

    /// HTTP requests sent to Ironic and Keystone so far.
    pub(crate) fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the client talks to, without credentials, for logs and `/readyz`.
    pub(crate) fn describe(&self) -> String {
        match &self.config.url {
            Some(u) => format!("ironic:{}", redact(u)),
            None => "ironic:keystone-catalog".into(),
        }
    }

    /// The Ironic this client reads, as a snapshot of its nodes records it: the URL, or
    /// the Keystone endpoint, region and interface its catalog is read from.
    pub(crate) fn origin(&self) -> String {
        match (&self.config.url, &self.config.auth) {
            // `http://h:6385` and `http://h:6385/v1/` are the same Ironic.
            (Some(u), _) => parse_root(u).map_or_else(|_| redact(u), |r| redact(r.as_str())),
            (None, AuthConfig::Keystone(ks)) => format!(
                "keystone-catalog:{} region={} interface={}",
                redact(&ks.auth_url),
                ks.region.as_deref().unwrap_or(""),
                ks.interface
            ),
            (None, _) => "keystone-catalog".into(),
        }
    }

    /// Download a configdrive Ironic stores as a URL (a Swift temp URL, say), without any
    /// Ironic credentials, within the client's timeouts and [`MAX_CONFIGDRIVE`] bytes.
    /// Returns the text form (base64), encoding a binary answer.
    pub(crate) async fn fetch_configdrive(&self, url: &str) -> Result<String, ClientError> {
        let parsed = Url::parse(url)
            .map_err(|e| ClientError::Config(format!("invalid configdrive URL: {e}")))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(ClientError::Config(
                "configdrive URL scheme must be http or https".into(),
            ));
        }
        let target = redact(url);
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let map = |e: reqwest::Error| ClientError::Connect {
            target: target.clone(),
            message: error_chain(&e),
        };
        let mut resp = self.http.get(parsed.clone()).send().await.map_err(map)?;
        if !resp.status().is_success() {
            return Err(ClientError::Status {
                target,
                status: resp.status().as_u16(),
                message: "configdrive download failed".into(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map)? {
            if body.len() + chunk.len() > MAX_CONFIGDRIVE {
                return Err(ClientError::Invalid {
                    target,
                    message: format!("configdrive larger than {MAX_CONFIGDRIVE} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        // Ironic uploads the base64 text; a binary image (gzip or ISO) is encoded here.
        let is_base64 = body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n ".contains(b));
        use base64::Engine;
        Ok(if is_base64 {
            String::from_utf8(body).unwrap_or_default()
        } else {
            base64::engine::general_purpose::STANDARD.encode(body)
        })
    }

    /// One full sweep: all nodes, ports and portgroups.
    pub(crate) async fn fetch_inventory(&self) -> Result<Inventory, ClientError> {
        let mut inventory = Inventory::default();
        self.fetch_paged(&mut inventory).await?;
        Ok(inventory)
    }

    /// Every node, port and portgroup, handed to `sink` as they are read: the links first,
    /// then the nodes page by page, so that the sink need never hold the whole answer.
    pub(crate) async fn fetch_paged(
        &self,
        sink: &mut (dyn FleetSink + Send),
    ) -> Result<(), ClientError> {
        let minor = self.negotiated().await?;
        let result = async {
            let ports: Vec<Port> = self.list("ports", minor).await?;
            let portgroups: Vec<Portgroup> = if minor >= PORTGROUPS_MINOR {
                self.list("portgroups", minor).await?
            } else {
                Vec::new()
            };
            sink.links(ports, portgroups);
            self.list_each("nodes", minor, &Query::detail(), usize::MAX, &mut |page| {
                sink.nodes(page);
            })
            .await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Ironic may have been upgraded or replaced: negotiate again next time.
            *self.minor.lock().await = None;
        }
        result
    }

    /// One page of the newest changes of `kind`: sorted by `sort_key` (`updated_at` or
    /// `created_at`), newest first, `limit` items; true when Ironic has more (it may clamp
    /// `limit` to its `max_limit`, silently).
    pub(crate) async fn newest<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        sort_key: &str,
        limit: u32,
    ) -> Result<(Vec<T>, bool), ClientError> {
        let minor = self.incremental_minor().await?;
        let query = Query {
            detail: true,
            params: vec![("sort_key", sort_key.into()), ("sort_dir", "desc".into())],
            limit: Some(limit),
        };
        self.list_pages(kind, minor, &query, 1).await
    }

    /// One node (`None`: Ironic no longer has it).
    pub(crate) async fn node(&self, uuid: &str) -> Result<Option<Node>, ClientError> {
        let minor = self.incremental_minor().await?;
        let root = self.root().await?;
        let url = root
            .join(&format!("v1/nodes/{uuid}"))
            .map_err(|e| ClientError::Config(format!("node {uuid}: {e}")))?;
        let version = HeaderValue::from_str(&format!("1.{minor}")).expect("ascii");
        let (status, _, body) = self
            .send(Method::GET, url.clone(), Some(version), true)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(url.as_str(), status, &body));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ClientError::Invalid {
                target: redact(url.as_str()),
                message: format!("node {uuid}: {e}"),
            })
    }

    /// Sets one key of node `uuid`'s `extra` to `value` with a JSON patch (`add`, which
    /// replaces the key when it exists) and leaves the node's other keys as they are.
    /// Needs Ironic's `baremetal:node:update_extra` permission.
    pub(crate) async fn set_node_extra(
        &self,
        uuid: &str,
        key: &str,
        value: &Value,
    ) -> Result<(), ClientError> {
        let minor = self.negotiated().await?;
        let root = self.root().await?;
        let url = root
            .join(&format!("v1/nodes/{uuid}"))
            .map_err(|e| ClientError::Config(format!("node {uuid}: {e}")))?;
        let patch =
            serde_json::json!([{"op": "add", "path": format!("/extra/{key}"), "value": value}]);
        let version = HeaderValue::from_str(&format!("1.{minor}")).expect("ascii");
        let body = serde_json::to_vec(&patch).unwrap_or_default();
        let (status, _, answer) = self
            .send_with(Method::PATCH, url.clone(), Some(version), Some(body))
            .await?;
        if !status.is_success() {
            return Err(status_error(url.as_str(), status, &answer));
        }
        Ok(())
    }

    /// The ports and portgroups of one node.
    pub(crate) async fn node_links(
        &self,
        uuid: &str,
    ) -> Result<(Vec<Port>, Vec<Portgroup>), ClientError> {
        let minor = self.incremental_minor().await?;
        let query = Query {
            detail: true,
            params: vec![("node", uuid.into())],
            limit: None,
        };
        let ports = self.list_with("ports", minor, &query, usize::MAX).await?;
        let groups = if minor >= PORTGROUPS_MINOR {
            self.list_with("portgroups", minor, &query, usize::MAX)
                .await?
        } else {
            Vec::new()
        };
        Ok((ports, groups))
    }

    /// Every node's UUID: the cheap listing that finds deleted nodes.
    pub(crate) async fn node_uuids(&self) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Uuid {
            uuid: String,
        }
        let minor = self.incremental_minor().await?;
        let query = Query {
            detail: false,
            params: vec![("fields", "uuid".into())],
            limit: None,
        };
        let items: Vec<Uuid> = self.list_with("nodes", minor, &query, usize::MAX).await?;
        Ok(items.into_iter().map(|u| u.uuid).collect())
    }

    /// One page of node UUIDs in UUID order, after `after` (from the first without it): at
    /// most `limit` (Ironic may cap it), and whether Ironic has more.
    pub(crate) async fn node_uuid_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, bool), ClientError> {
        #[derive(serde::Deserialize)]
        struct Uuid {
            uuid: String,
        }
        let minor = self.incremental_minor().await?;
        let mut params = vec![
            ("fields", "uuid".to_string()),
            ("sort_key", "uuid".to_string()),
            ("sort_dir", "asc".to_string()),
        ];
        params.extend(after.map(|m| ("marker", m.to_string())));
        let query = Query {
            detail: false,
            params,
            limit: Some(limit),
        };
        let (items, more) = self.list_pages::<Uuid>("nodes", minor, &query, 1).await?;
        Ok((items.into_iter().map(|u| u.uuid).collect(), more))
    }

    /// The negotiated microversion, when it is new enough for incremental refresh
    /// (`?detail=True` with sorting and filters).
    async fn incremental_minor(&self) -> Result<u32, ClientError> {
        let minor = self.negotiated().await?;
        if minor < DETAIL_QUERY_MINOR {
            return Err(ClientError::Config(format!(
                "Ironic API 1.{minor} is older than 1.{DETAIL_QUERY_MINOR}: only full sweeps"
            )));
        }
        Ok(minor)
    }

    async fn negotiated(&self) -> Result<u32, ClientError> {
        let mut guard = self.minor.lock().await;
        if let Some(m) = *guard {
            return Ok(m);
        }
        let root = self.root().await?;
        let (status, headers, body) = self.send(Method::GET, root.clone(), None, false).await?;
        if !status.is_success() {
            return Err(status_error(root.as_str(), status, &body));
        }
        let max = server_max_minor(&headers, &body).ok_or_else(|| ClientError::Invalid {
            target: redact(root.as_str()),
            message: "no API version in the root document".into(),
        })?;
        let minor = max.min(MAX_MINOR);
        if minor < NETWORK_DATA_MINOR {
            tracing::warn!(
                target: "ironic",
                version = %format!("1.{minor}"),
                "Ironic is older than API 1.66: node network_data is not available"
            );
        }
        tracing::info!(target: "ironic", version = %format!("1.{minor}"), "Ironic API version negotiated");
        *guard = Some(minor);
        Ok(minor)
    }

    /// The Ironic root URL (no `/v1`), ending with `/`.
    async fn root(&self) -> Result<Url, ClientError> {
        if let Some(u) = &self.config.url {
            return parse_root(u);
        }
        self.ensure_token().await?;
        let guard = self.token.lock().await;
        let endpoint = guard
            .as_ref()
            .and_then(|t| t.endpoint.clone())
            .ok_or_else(|| {
                ClientError::Auth("the Keystone catalog has no baremetal endpoint".into())
            })?;
        parse_root(&endpoint)
    }

    async fn list<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        minor: u32,
    ) -> Result<Vec<T>, ClientError> {
        self.list_with(kind, minor, &Query::detail(), usize::MAX)
            .await
    }

    /// Every item of `kind` answering `query`, following every `next` page.
    async fn list_with<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        minor: u32,
        query: &Query<'_>,
        max_pages: usize,
    ) -> Result<Vec<T>, ClientError> {
        Ok(self.list_pages(kind, minor, query, max_pages).await?.0)
    }

    /// The items of `kind` answering `query`, following `next` pages up to `max_pages`;
    /// true when a `next` page was left.
    async fn list_pages<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        minor: u32,
        query: &Query<'_>,
        max_pages: usize,
    ) -> Result<(Vec<T>, bool), ClientError> {
        let mut out: Vec<T> = Vec::new();
        let more = self
            .list_each(kind, minor, query, max_pages, &mut |page| out.extend(page))
            .await?;
        Ok((out, more))
    }

    /// [`Client::list_pages`], each page handed to `on_page` as it is read.
    async fn list_each<T: DeserializeOwned + Send>(
        &self,
        kind: &str,
        minor: u32,
        query: &Query<'_>,
        max_pages: usize,
        on_page: &mut (dyn FnMut(Vec<T>) + Send),
    ) -> Result<bool, ClientError> {
        let root = self.root().await?;
        let mut url = if query.detail && minor < DETAIL_QUERY_MINOR {
            root.join(&format!("v1/{kind}/detail"))
                .expect("static path")
        } else {
            let mut u = root.join(&format!("v1/{kind}")).expect("static path");
            if query.detail {
                u.query_pairs_mut().append_pair("detail", "True");
            }
            u
        };
        for (k, v) in &query.params {
            url.query_pairs_mut().append_pair(k, v);
        }
        let limit = query.limit.or(self.config.page_size);
        if let Some(limit) = limit {
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
        }
        let mut pages = 0;
        let mut read = 0;
        let mut seen_markers = std::collections::HashSet::new();
        let mut next = url.clone();
        loop {
            let version = HeaderValue::from_str(&format!("1.{minor}")).expect("ascii");
            let (status, _, body) = self
                .send(Method::GET, next.clone(), Some(version), true)
                .await?;
            if !status.is_success() {
                return Err(status_error(next.as_str(), status, &body));
            }
            let invalid = |message: String| ClientError::Invalid {
                target: redact(next.as_str()),
                message,
            };
            // Each item is parsed straight from the page's text: a page is never held as
            // a parsed tree.
            let doc: HashMap<String, &RawValue> = serde_json::from_slice(&body)
                .map_err(|e| invalid(format!("not a JSON object: {e}")))?;
            let items: Vec<&RawValue> = doc
                .get(kind)
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or_else(|| invalid(format!("no {kind:?} list in the answer")))?;
            let page_len = items.len();
            let mut page: Vec<T> = Vec::with_capacity(page_len);
            for (i, item) in items.into_iter().enumerate() {
                let v: T = serde_json::from_str(item.get())
                    .map_err(|e| invalid(format!("{kind}[{}]: {e}", read + i)))?;
                page.push(v);
            }
            read += page_len;
            on_page(page);
            // Follow the marker of `next`, not its host: Ironic builds `next` from its
            // public endpoint, which may not be the address we reach it at.
            let next_link = doc
                .get("next")
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
            pages += 1;
            let marker = match next_link {
                Some(_) if pages >= max_pages => return Ok(page_len > 0),
                Some(n) if page_len > 0 => marker_of(&n)
                    .ok_or_else(|| invalid(format!("next link without marker: {n}")))?,
                _ => return Ok(false),
            };
            if !seen_markers.insert(marker.clone()) {
                return Err(invalid(format!("pagination loops at marker {marker}")));
            }
            next = url.clone();
            next.query_pairs_mut().append_pair("marker", &marker);
        }
    }

    /// Send one request with auth; with Keystone, renew the token once on 401.
    async fn send(
        &self,
        method: Method,
        url: Url,
        version: Option<HeaderValue>,
        authenticated: bool,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ClientError> {
        if authenticated {
            return self.send_with(method, url, version, None).await;
        }
        let req = self
            .http
            .request(method, url.clone())
            .header("Accept", "application/json");
        let req = match version {
            Some(v) => req.header("X-OpenStack-Ironic-API-Version", v),
            None => req,
        };
        self.execute(req, url.as_str()).await
    }

    /// Send one authenticated request, with a JSON body when given; with Keystone, renew
    /// the token once on 401.
    async fn send_with(
        &self,
        method: Method,
        url: Url,
        version: Option<HeaderValue>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ClientError> {
        let mut retried = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header("Accept", "application/json");
            if let Some(v) = &version {
                req = req.header("X-OpenStack-Ironic-API-Version", v.clone());
            }
            if let Some(b) = &body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.clone());
            }
            match &self.config.auth {
                AuthConfig::None => {}
                AuthConfig::Basic { username, password } => {
                    req = req.basic_auth(username, Some(password.expose()));
                }
                AuthConfig::Keystone(_) => {
                    req = req.header("X-Auth-Token", self.ensure_token().await?);
                }
            }
            let (status, headers, body) = self.execute(req, url.as_str()).await?;
            if status == StatusCode::UNAUTHORIZED {
                if matches!(self.config.auth, AuthConfig::Keystone(_)) && !retried {
                    tracing::info!(target: "ironic", "Ironic refused the token; authenticating again");
                    *self.token.lock().await = None;
                    retried = true;
                    continue;
                }
                return Err(ClientError::Auth(format!(
                    "{} answered 401 with {} credentials",
                    redact(url.as_str()),
                    self.config.auth.kind()
                )));
            }
            return Ok((status, headers, body));
        }
    }

    async fn execute(
        &self,
        req: reqwest::RequestBuilder,
        target: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ClientError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = redact(target);
        let map = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout {
                    target: target.clone(),
                    timeout: self.config.timeout,
                }
            } else if e.is_connect() {
                ClientError::Connect {
                    target: target.clone(),
                    message: error_chain(&e),
                }
            } else {
                ClientError::Invalid {
                    target: target.clone(),
                    message: error_chain(&e),
                }
            }
        };
        let mut resp = req.send().await.map_err(map)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ClientError::Invalid {
                    target,
                    message: format!("answer larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    /// A valid Keystone token, fetching a new one when there is none or it is about to expire.
    async fn ensure_token(&self) -> Result<HeaderValue, ClientError> {
        let AuthConfig::Keystone(ks) = &self.config.auth else {
            return Err(ClientError::Config("no Keystone credentials".into()));
        };
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if t.expires.is_none_or(|e| Instant::now() + TOKEN_MARGIN < e) {
                return Ok(t.value.clone());
            }
        }
        let token = self.issue_token(ks).await?;
        let value = token.value.clone();
        *guard = Some(token);
        Ok(value)
    }

    async fn issue_token(&self, ks: &KeystoneConfig) -> Result<Token, ClientError> {
        let base = ks.auth_url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let url = Url::parse(&format!("{base}/v3/auth/tokens")).map_err(|e| {
            ClientError::Config(format!(
                "invalid Keystone URL {}: {e}",
                redact(&ks.auth_url)
            ))
        })?;
        let req = self.http.post(url.clone()).json(&ks.method.token_request());
        let (status, headers, body) = self.execute(req, url.as_str()).await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(ClientError::Auth(format!(
                "Keystone answered HTTP {} to the token request: {}",
                status.as_u16(),
                error_message(&body)
            )));
        }
        let value = headers
            .get("X-Subject-Token")
            .cloned()
            .ok_or_else(|| ClientError::Auth("Keystone answer has no X-Subject-Token".into()))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Auth(format!("Keystone token answer is not JSON: {e}")))?;
        let expires = doc["token"]["expires_at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| {
                let left = (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                Instant::now() + left
            });
        let endpoint = catalog_endpoint(&doc, "baremetal", &ks.interface, ks.region.as_deref());
        tracing::info!(target: "ironic", "Keystone token issued");
        Ok(Token {
            value,
            expires,
            endpoint,
        })
    }
}

/// What a listing asks for besides the collection.
struct Query<'a> {
    detail: bool,
    params: Vec<(&'a str, String)>,
    limit: Option<u32>,
}

impl Query<'_> {
    fn detail() -> Query<'static> {
        Query {
            detail: true,
            params: Vec::new(),
            limit: None,
        }
    }
}

fn parse_root(u: &str) -> Result<Url, ClientError> {
    let trimmed = u.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    let url = Url::parse(&format!("{trimmed}/"))
        .map_err(|e| ClientError::Config(format!("invalid Ironic URL {}: {e}", redact(u))))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ClientError::Config(format!(
            "invalid Ironic URL {}: scheme must be http or https",
            redact(u)
        )));
    }
    Ok(url)
}

/// A URL without user info or query, for logs.
pub(crate) fn redact(u: &str) -> String {
    match Url::parse(u) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

fn marker_of(next: &str) -> Option<String> {
    let url = Url::parse(next).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "marker")
        .map(|(_, v)| v.into_owned())
        .filter(|m| !m.is_empty())
}

/// Highest minor version from the root document (`default_version.version`) or headers.
fn server_max_minor(headers: &HeaderMap, body: &[u8]) -> Option<u32> {
    let from_body = serde_json::from_slice::<Value>(body).ok().and_then(|doc| {
        doc["default_version"]["version"]
            .as_str()
            .and_then(parse_minor)
    });
    from_body.or_else(|| {
        headers
            .get("X-OpenStack-Ironic-API-Maximum-Version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_minor)
    })
}

fn parse_minor(v: &str) -> Option<u32> {
    let (major, minor) = v.trim().split_once('.')?;
    (major == "1").then_some(())?;
    minor.parse().ok()
}

fn catalog_endpoint(
    doc: &Value,
    service: &str,
    interface: &str,
    region: Option<&str>,
) -> Option<String> {
    doc["token"]["catalog"]
        .as_array()?
        .iter()
        .find(|s| s["type"] == service)
        .and_then(|s| {
            s["endpoints"].as_array()?.iter().find_map(|e| {
                let iface_ok = e["interface"] == interface;
                let region_ok = region.is_none_or(|r| e["region_id"] == r || e["region"] == r);
                (iface_ok && region_ok)
                    .then(|| e["url"].as_str().map(str::to_string))
                    .flatten()
            })
        })
}

fn status_error(target: &str, status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Status {
        target: redact(target),
        status: status.as_u16(),
        message: error_message(body),
    }
}

/// Ironic wraps errors as `{"error_message": "<JSON string with faultstring>"}`.
fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|doc| {
            let em = doc.get("error_message")?;
            let inner = match em {
                Value::String(s) => {
                    serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.clone()))
                }
                other => other.clone(),
            };
            inner
                .get("faultstring")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| inner.as_str().map(str::to_string))
        })
        .or_else(|| {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|d| d["error"]["message"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let mut t: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if t.is_empty() {
        t = "(empty body)".into();
    }
    t
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_url_forms() {
        for u in [
            "http://ironic:6385",
            "http://ironic:6385/",
            "http://ironic:6385/v1",
            "http://ironic:6385/v1/",
        ] {
            assert_eq!(parse_root(u).unwrap().as_str(), "http://ironic:6385/");
        }
        assert_eq!(
            parse_root("https://h/baremetal/v1").unwrap().as_str(),
            "https://h/baremetal/"
        );
        assert!(parse_root("ftp://h").is_err());
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("http://admin:pw@ironic:6385/v1/nodes?x=1"),
            "http://ironic:6385/v1/nodes"
        );
    }

    #[test]
    fn error_message_unwraps_ironic_double_encoding() {
        let body = br#"{"error_message": "{\"faultstring\": \"Node x could not be found.\", \"faultcode\": \"Client\", \"debuginfo\": null}"}"#;
        assert_eq!(error_message(body), "Node x could not be found.");
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
    }

    #[test]
    fn marker_comes_from_next_query() {
        assert_eq!(
            marker_of("http://public.example/v1/nodes?detail=True&limit=2&marker=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(marker_of("http://x/v1/nodes?limit=2"), None);
    }
}
