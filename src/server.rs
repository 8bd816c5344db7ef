//! Start-up: validate settings, load the inventory, check that both listeners can bind.
//! Every failure here is one clear message and a non-zero exit, before anything listens;
//! what it prepares is then run by [`crate::proxy::run`].

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{BindAddr, ServeArgs, SourceArgs};
use crate::identity::neighbour::interface_index;
use crate::identity_token::store::KeyStore;
use crate::identity_token::token::Subject;
use crate::identity_token::{Issuer, IssuerConfig};
use crate::inventory::refresh::{RefreshConfig, Refresher};
use crate::inventory::{file, Catalog};
use crate::ironic::{self, auth, ClientConfig, IronicClient};
use crate::metadata::checkin::{CheckinStore, WriteBack};
use crate::metadata::password::PasswordStore;
use crate::metrics::Metrics;
use crate::policy::file::PolicyError;
use crate::policy::store::PolicyStore;
use crate::policy::token::TokenKey;

/// Where the nodes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    File(PathBuf),
    Ironic(Box<ClientConfig>, RefreshConfig),
}

/// Validated static settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The metadata listeners' addresses (a link-local one with its interface's index).
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) admin: SocketAddr,
    pub(crate) source: Source,
    pub(crate) policy_dir: PathBuf,
    pub(crate) token_key_file: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    /// Check-ins written to (and read from) nodes' `extra` in Ironic.
    pub(crate) checkin_write_back: bool,
    /// Instance passwords written to (and read from) nodes' `extra` in Ironic.
    pub(crate) password_write_back: bool,
    pub(crate) dns_servers: Vec<std::net::IpAddr>,
    /// The EC2 region served; `None`: the availability zone's.
    pub(crate) ec2_region: Option<String>,
    pub(crate) served_states: Vec<String>,
    pub(crate) threads: usize,
    pub(crate) keepalive_seconds: u64,
    pub(crate) write_timeout_seconds: u64,
    pub(crate) audit_interval_seconds: u64,
    pub(crate) refusals_per_minute: u32,
    pub(crate) impostor_detection: bool,
    /// Longest a request waits for an on-demand refresh of the inventory.
    pub(crate) on_demand_wait: Duration,
    pub(crate) max_header_count: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) header_timeout_seconds: u64,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_client: usize,
    pub(crate) max_waiting: usize,
    pub(crate) max_waiting_per_client: usize,
    pub(crate) shutdown_grace_seconds: u64,
    /// Signed identity tokens: the key directory and what tokens state.
    pub(crate) identity: Option<(PathBuf, IssuerConfig)>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("no inventory given: set IRONIC_URL (or --ironic-url), or pass --inventory FILE")]
    NoInventory,
    #[error("both an inventory file and an Ironic URL are given: choose one")]
    TwoInventories,
    #[error("Ironic credentials: {0}")]
    Credentials(#[from] auth::AuthConfigError),
    #[error(transparent)]
    Ironic(#[from] ironic::ClientError),
    #[error("the admin listener {admin} must not share the metadata address {bind}")]
    AdminOnMetadataAddress {
        admin: SocketAddr,
        bind: std::net::IpAddr,
    },
    #[error("--bind: {0}")]
    BindList(String),
    #[error("the admin listener {0} would answer on the metadata address too: give it an address of its own (e.g. 127.0.0.1:9180), or pass --admin-on-all-addresses where nodes cannot reach this host's other ports")]
    AdminOnAllAddresses(SocketAddr),
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error("--served-states lists no state")]
    NoServedStates,
    #[error(transparent)]
    Inventory(#[from] file::FileError),
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr} ({role}): {reason}")]
    Bind {
        addr: SocketAddr,
        role: &'static str,
        reason: String,
    },
}

impl Settings {
    /// Settings from parsed arguments and the process environment (credentials).
    pub(crate) fn from_args(a: &ServeArgs) -> Result<Settings, StartError> {
        Settings::from_args_and_env(a, &std::env::vars().collect())
    }

    pub(crate) fn from_args_and_env(
        a: &ServeArgs,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Settings, StartError> {
        let source = source_of(a, env)?;
        let listen = listen_addresses(&a.bind, a.port)?;
        // On loopback both listeners are local-only anyway; anywhere else the admin
        // endpoints must not be reachable on an address every node can reach.
        if let Some(bind) = listen
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| *ip == a.admin.ip() && !ip.is_loopback())
        {
            return Err(StartError::AdminOnMetadataAddress {
                admin: a.admin,
                bind,
            });
        }
        // Every local address includes the metadata one, where every node asks.
        if a.admin.ip().is_unspecified() && !a.admin_on_all_addresses {
            return Err(StartError::AdminOnAllAddresses(a.admin));
        }
        let threads = threads(a.threads)?;
        let served_states: Vec<String> = a
            .served_states
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if served_states.is_empty() {
            return Err(StartError::NoServedStates);
        }
        for (on, flag) in [
            (a.checkin_write_back, "--checkin-write-back"),
            (a.password_write_back, "--password-write-back"),
        ] {
            if on && matches!(source, Source::File(_)) {
                return Err(StartError::Setup(format!(
                    "{flag} needs Ironic as the source (IRONIC_URL), not an inventory file"
                )));
            }
        }
        let on_demand_wait = match &source {
            Source::Ironic(_, r) => r.on_demand_wait,
            Source::File(_) => Duration::ZERO,
        };
        Ok(Settings {
            listen,
            admin: a.admin,
            source,
            policy_dir: a.policy_dir.clone(),
            token_key_file: a.token_key_file.clone(),
            state_dir: a.state_dir.clone(),
            checkin_write_back: a.checkin_write_back,
            password_write_back: a.password_write_back,
            dns_servers: a.dns_servers.clone(),
            ec2_region: a.ec2_region.clone().filter(|r| !r.trim().is_empty()),
            served_states,
            threads,
            keepalive_seconds: a.keepalive_seconds,
            write_timeout_seconds: a.write_timeout_seconds,
            audit_interval_seconds: a.audit_interval_seconds,
            refusals_per_minute: a.refusals_per_minute,
            impostor_detection: a.impostor_detection == crate::cli::ImpostorDetection::Auto,
            on_demand_wait,
            max_header_count: a.max_header_count,
            max_header_bytes: a.max_header_bytes,
            header_timeout_seconds: a.header_timeout_seconds,
            max_connections: a.max_connections,
            max_connections_per_client: a.max_connections_per_client,
            max_waiting: a.max_waiting,
            max_waiting_per_client: a.max_waiting_per_client,
            shutdown_grace_seconds: a.shutdown_grace_seconds,
            identity: identity_settings(a)?,
        })
    }
}

/// The identity token settings: none without a key directory; with one, an issuer URL.
fn identity_settings(a: &ServeArgs) -> Result<Option<(PathBuf, IssuerConfig)>, StartError> {
    let setup = |m: String| Err(StartError::Setup(m));
    let (dir, issuer) = match (&a.identity_key_dir, &a.identity_issuer) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return setup("--identity-issuer needs --identity-key-dir".into()),
        (Some(_), None) => {
            return setup("--identity-key-dir needs --identity-issuer: the URL verifiers fetch /.well-known/openid-configuration from".into())
        }
        (Some(d), Some(i)) => (d, i),
    };
    let uri = issuer.parse::<http::Uri>().ok().filter(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some()
            && u.query().is_none()
            && !issuer.ends_with('/')
    });
    if uri.is_none() {
        return setup(format!("--identity-issuer {issuer:?}: expected an http(s) URL without a query or a trailing '/', e.g. https://metadata.example.com"));
    }
    let subject = Subject::parse(&a.identity_subject)
        .map_err(|e| StartError::Setup(format!("--identity-subject {e}")))?;
    Ok(Some((
        dir.clone(),
        IssuerConfig {
            issuer: issuer.clone(),
            ttl: a.identity_ttl_seconds,
            subject,
            per_second: a.identity_tokens_per_second,
            burst: a.identity_tokens_burst,
            publish_on_metadata: a.identity_publish_on_metadata,
        },
    )))
}

/// The identity key directory loaded (a file that is not a usable key stops the start).
fn identity(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Issuer>>, StartError> {
    let Some((dir, config)) = &settings.identity else {
        return Ok(None);
    };
    let keys = KeyStore::load(dir, metrics.clone())
        .map_err(|e| StartError::Setup(format!("identity keys: {e}")))?;
    match keys.current().signing() {
        Some(k) => {
            tracing::info!(target: "identity", dir = %dir.display(), keys = keys.current().keys().len(), signing = %k.kid, "identity keys loaded")
        }
        None => {
            tracing::warn!(target: "identity", dir = %dir.display(), "no identity key: the identity paths answer 404 until one is added")
        }
    }
    Ok(Some(Arc::new(Issuer::new(
        config.clone(),
        Arc::new(keys),
        metrics.clone(),
    ))))
}

/// Everything loaded and checked; nothing listening yet.
pub(crate) struct Prepared {
    pub(crate) settings: Settings,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) metrics: Arc<Metrics>,
    /// The Ironic refresher, run as a background service and asked on index misses.
    pub(crate) refresher: Option<Arc<Refresher>>,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) tokens: Arc<TokenKey>,
    pub(crate) passwords: Arc<PasswordStore>,
    /// Check-ins of booted nodes, kept beside the passwords.
    pub(crate) checkins: Arc<CheckinStore>,
    /// Signed identity tokens, when configured.
    pub(crate) identity: Option<Arc<Issuer>>,
}

pub(crate) fn prepare(settings: Settings) -> Result<Prepared, StartError> {
    // Everything that can fail comes first, so a failed start prints one line only.
    let metrics = Arc::new(Metrics::new());
    let policy = Arc::new(PolicyStore::load(&settings.policy_dir, metrics.clone())?);
    let tokens = match &settings.token_key_file {
        Some(path) => Some(TokenKey::from_file(path).map_err(StartError::Setup)?),
        None => None,
    };
    let (checkins, passwords) = stores(&settings, &metrics)?;
    let identity = identity(&settings, &metrics)?;
    enum Loaded {
        File(String, crate::ironic::model::Inventory),
        Ironic(Box<IronicClient>, RefreshConfig),
    }
    let loaded = match &settings.source {
        Source::File(path) => Loaded::File(format!("file:{}", path.display()), file::load(path)?),
        Source::Ironic(config, refresh) => Loaded::Ironic(
            Box::new(IronicClient::new((**config).clone())?),
            refresh.clone(),
        ),
    };
    // pingora retries a failed bind for about 30 s and then runs on without a listener:
    // find out now, and say why.
    for addr in &settings.listen {
        check_bind(*addr, "metadata")?;
    }
    check_bind(settings.admin, "admin")?;

    let tokens = Arc::new(tokens.unwrap_or_else(|| {
        tracing::warn!(
            "no TOKEN_KEY_FILE: session tokens use a random key and do not survive a restart"
        );
        TokenKey::random()
    }));
    let (catalog, refresher) = match loaded {
        Loaded::File(source, inventory) => {
            let catalog = Arc::new(
                Catalog::new(source, settings.served_states.clone())
                    .with_dns(settings.dns_servers.clone()),
            );
            catalog.publish(inventory);
            (catalog, None)
        }
        Loaded::Ironic(client, refresh) => {
            let catalog = Arc::new(
                Catalog::new(client.describe(), settings.served_states.clone())
                    .with_dns(settings.dns_servers.clone()),
            );
            let refresher = Refresher::new(*client, catalog.clone(), metrics.clone(), refresh);
            (catalog, Some(Arc::new(refresher)))
        }
    };
    Ok(Prepared {
        settings,
        catalog,
        metrics,
        refresher,
        policy,
        tokens,
        passwords,
        checkins,
        identity,
    })
}

/// The check-in and password stores, writing back to Ironic when told to (both through
/// one writer).
fn stores(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(Arc<CheckinStore>, Arc<PasswordStore>), StartError> {
    let passwords = PasswordStore::new(settings.state_dir.clone()).map_err(StartError::Setup)?;
    let checkins = CheckinStore::new(settings.state_dir.clone())
        .map_err(StartError::Setup)?
        .counting(metrics.checkins.clone());
    let write_back = match &settings.source {
        Source::Ironic(config, _)
            if settings.checkin_write_back || settings.password_write_back =>
        {
            // A client of its own: writes never wait behind a sweep.
            let client = IronicClient::new((**config).clone())?;
            Some(Arc::new(WriteBack::new(
                client,
                metrics.write_backs.clone(),
            )))
        }
        _ => None,
    };
    let (checkins, passwords) = match write_back {
        Some(w) => (
            if settings.checkin_write_back {
                checkins.writing_back(w.clone())
            } else {
                checkins
            },
            if settings.password_write_back {
                passwords.writing_back(w)
            } else {
                passwords
            },
        ),
        None => (checkins, passwords),
    };
    Ok((Arc::new(checkins), Arc::new(passwords)))
}

/// Worker threads: as asked, or one per CPU.
fn threads(asked: Option<usize>) -> Result<usize, StartError> {
    match asked {
        Some(0) => Err(StartError::NoThreads),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The listeners' socket addresses: each once, a link-local one with its interface index.
fn listen_addresses(binds: &[BindAddr], port: u16) -> Result<Vec<SocketAddr>, StartError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for b in binds {
        let addr = match (&b.interface, b.ip) {
            (Some(i), IpAddr::V6(v6)) => SocketAddr::V6(std::net::SocketAddrV6::new(
                v6,
                port,
                0,
                interface_index(i).map_err(StartError::BindList)?,
            )),
            _ => SocketAddr::new(b.ip, port),
        };
        if out.contains(&addr) {
            return Err(StartError::BindList(format!("{b} is listed twice")));
        }
        out.push(addr);
    }
    if out.is_empty() {
        return Err(StartError::BindList("no address to listen on".into()));
    }
    Ok(out)
}

fn check_bind(addr: SocketAddr, role: &'static str) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Bind {
            addr,
            role,
            reason: match e.kind() {
                io::ErrorKind::AddrInUse => "address already in use".into(),
                io::ErrorKind::AddrNotAvailable => {
                    "address not available on this host (configure it on an interface first)".into()
                }
                io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".into()
                }
                _ => e.to_string(),
            },
        })
}

/// Where the inventory comes from: a file, or Ironic with how it is followed.
fn source_of(
    a: &ServeArgs,
    env: &std::collections::HashMap<String, String>,
) -> Result<Source, StartError> {
    Ok(match origin_of(&a.source, env)? {
        Origin::File(path) => Source::File(path),
        Origin::Ironic(config) => {
            let refresh = RefreshConfig {
                poll_interval: Duration::from_secs(a.poll_interval),
                full_interval: Duration::from_secs(a.refresh_interval),
                reconcile_interval: Duration::from_secs(a.reconcile_interval),
                on_demand_wait: Duration::from_secs(a.source.ironic_timeout.min(10)),
                snapshot: a
                    .state_dir
                    .as_ref()
                    .map(|d| d.join(crate::inventory::snapshot::FILE_NAME)),
                ..RefreshConfig::default()
            };
            Source::Ironic(config, refresh)
        }
    })
}

/// Where the nodes are read from.
pub(crate) enum Origin {
    File(PathBuf),
    Ironic(Box<ClientConfig>),
}

/// Where the nodes are read from: a file, or Ironic (its URL given, or found by Keystone
/// settings in the catalog).
pub(crate) fn origin_of(
    a: &SourceArgs,
    env: &std::collections::HashMap<String, String>,
) -> Result<Origin, StartError> {
    // Ironic is the source when its URL is given, or when Keystone settings can find it
    // in the catalog.
    let set = |k: &str| env.get(k).is_some_and(|v| !v.is_empty());
    let ironic_wanted = a.ironic_url.is_some() || set("OS_CLOUD") || set("OS_AUTH_URL");
    Ok(match (&a.inventory, ironic_wanted) {
        (Some(_), true) => return Err(StartError::TwoInventories),
        (Some(path), false) => Origin::File(path.clone()),
        (None, false) => return Err(StartError::NoInventory),
        (None, true) => {
            let (auth, extras) = auth::from_env(env)?;
            let url = a.ironic_url.clone().or(extras.endpoint);
            Origin::Ironic(Box::new(ClientConfig {
                url,
                auth,
                cacert: a.ironic_cacert.clone().or(extras.cacert),
                client_cert: a
                    .ironic_client_cert
                    .clone()
                    .zip(a.ironic_client_key.clone()),
                connect_timeout: Duration::from_secs(a.ironic_connect_timeout),
                timeout: Duration::from_secs(a.ironic_timeout),
                page_size: a.ironic_page_size,
            }))
        }
    })
}
