//! Credentials for Ironic: none, HTTP basic, or a Keystone token (application credential
//! or password) taken from clouds.yaml or the usual `OS_*` variables. Secrets never appear
//! in `Debug` output or log lines.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret string; prints as `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

// Built once at start-up; the size of the Keystone variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AuthConfig {
    /// Ironic's `auth_strategy = noauth`.
    None,
    /// Ironic's `auth_strategy = http_basic`.
    Basic {
        username: String,
        password: Secret,
    },
    Keystone(KeystoneConfig),
}

impl AuthConfig {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Basic { .. } => "http_basic",
            AuthConfig::Keystone(k) => match k.method {
                KeystoneMethod::ApplicationCredential { .. } => "keystone application credential",
                KeystoneMethod::Password { .. } => "keystone password",
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeystoneConfig {
    /// Identity endpoint, with or without `/v3`.
    pub(crate) auth_url: String,
    pub(crate) method: KeystoneMethod,
    /// Catalog lookup of the `baremetal` endpoint when no Ironic URL is given.
    pub(crate) region: Option<String>,
    pub(crate) interface: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeystoneMethod {
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        /// Owner of a credential given by name.
        user: Option<UserRef>,
        secret: Secret,
    },
    Password {
        user: UserRef,
        password: Secret,
        project: Option<ProjectRef>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UserRef {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) domain_id: Option<String>,
    pub(crate) domain_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProjectRef {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) domain_id: Option<String>,
    pub(crate) domain_name: Option<String>,
}

impl KeystoneMethod {
    /// The body of `POST /v3/auth/tokens`. Application credentials must not carry a scope
    /// (Keystone refuses it); password auth is scoped to the project when one is given.
    pub(crate) fn token_request(&self) -> serde_json::Value {
        use serde_json::json;
        fn domain(id: &Option<String>, name: &Option<String>) -> Option<serde_json::Value> {
            match (id, name) {
                (Some(id), _) => Some(json!({"id": id})),
                (None, Some(name)) => Some(json!({"name": name})),
                _ => None,
            }
        }
        fn user(u: &UserRef) -> serde_json::Value {
            let mut m = serde_json::Map::new();
            if let Some(id) = &u.id {
                m.insert("id".into(), json!(id));
            }
            if let Some(name) = &u.name {
                m.insert("name".into(), json!(name));
            }
            if let Some(d) = domain(&u.domain_id, &u.domain_name) {
                m.insert("domain".into(), d);
            }
            serde_json::Value::Object(m)
        }
        match self {
            KeystoneMethod::ApplicationCredential {
                id,
                name,
                user: owner,
                secret,
            } => {
                let mut cred = serde_json::Map::new();
                if let Some(id) = id {
                    cred.insert("id".into(), json!(id));
                } else if let Some(name) = name {
                    cred.insert("name".into(), json!(name));
                    if let Some(u) = owner {
                        cred.insert("user".into(), user(u));
                    }
                }
                cred.insert("secret".into(), json!(secret.expose()));
                json!({"auth": {"identity": {"methods": ["application_credential"],
                                             "application_credential": cred}}})
            }
            KeystoneMethod::Password {
                user: u,
                password,
                project,
            } => {
                let mut pw_user = user(u);
                pw_user["password"] = json!(password.expose());
                let mut auth = json!({"identity": {"methods": ["password"],
                                                   "password": {"user": pw_user}}});
                if let Some(p) = project {
                    let mut proj = serde_json::Map::new();
                    if let Some(id) = &p.id {
                        proj.insert("id".into(), json!(id));
                    } else if let Some(name) = &p.name {
                        proj.insert("name".into(), json!(name));
                        if let Some(d) = domain(&p.domain_id, &p.domain_name) {
                            proj.insert("domain".into(), d);
                        }
                    }
                    auth["scope"] = json!({"project": proj});
                }
                json!({"auth": auth})
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum AuthConfigError {
    #[error("{0}")]
    Missing(String),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("invalid clouds.yaml {path}: {message}")]
    Yaml { path: PathBuf, message: String },
}

/// What clouds.yaml adds besides credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CloudExtras {
    pub(crate) endpoint: Option<String>,
    pub(crate) cacert: Option<PathBuf>,
}

/// Credentials from the environment, in this order: `OS_CLOUD` (clouds.yaml),
/// `IRONIC_USERNAME` (HTTP basic), `OS_AUTH_URL` (Keystone), else none.
pub(crate) fn from_env(
    env: &HashMap<String, String>,
) -> Result<(AuthConfig, CloudExtras), AuthConfigError> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(cloud) = get("OS_CLOUD") {
        return from_clouds_yaml(&cloud, env);
    }
    if let Some(username) = get("IRONIC_USERNAME") {
        let password =
            match (get("IRONIC_PASSWORD"), get("IRONIC_PASSWORD_FILE")) {
                (Some(p), _) => p,
                (None, Some(file)) => read_secret_file(Path::new(&file))?,
                (None, None) => return Err(AuthConfigError::Missing(
                    "IRONIC_USERNAME is set but neither IRONIC_PASSWORD nor IRONIC_PASSWORD_FILE"
                        .into(),
                )),
            };
        return Ok((
            AuthConfig::Basic {
                username,
                password: Secret::new(password),
            },
            CloudExtras::default(),
        ));
    }
    if let Some(auth_url) = get("OS_AUTH_URL") {
        return Ok((
            AuthConfig::Keystone(KeystoneConfig {
                auth_url,
                method: keystone_method(&get)?,
                region: get("OS_REGION_NAME"),
                interface: get("OS_INTERFACE").unwrap_or_else(|| "public".into()),
            }),
            CloudExtras {
                endpoint: None,
                cacert: get("OS_CACERT").map(PathBuf::from),
            },
        ));
    }
    Ok((AuthConfig::None, CloudExtras::default()))
}

/// The Keystone method the `OS_*` variables describe: an application credential, else a
/// user's password.
fn keystone_method(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<KeystoneMethod, AuthConfigError> {
    let user = || {
        user_ref(
            get("OS_USER_ID"),
            get("OS_USERNAME"),
            get("OS_USER_DOMAIN_ID"),
            get("OS_USER_DOMAIN_NAME"),
        )
    };
    if get("OS_APPLICATION_CREDENTIAL_ID").is_some()
        || get("OS_APPLICATION_CREDENTIAL_NAME").is_some()
    {
        return Ok(KeystoneMethod::ApplicationCredential {
            id: get("OS_APPLICATION_CREDENTIAL_ID"),
            name: get("OS_APPLICATION_CREDENTIAL_NAME"),
            user: user(),
            secret: Secret::new(get("OS_APPLICATION_CREDENTIAL_SECRET").ok_or_else(|| {
                AuthConfigError::Missing("OS_APPLICATION_CREDENTIAL_SECRET is not set".into())
            })?),
        });
    }
    let user = user().ok_or_else(|| {
        AuthConfigError::Missing(
            "OS_AUTH_URL is set but neither OS_USERNAME nor OS_APPLICATION_CREDENTIAL_ID".into(),
        )
    })?;
    Ok(KeystoneMethod::Password {
        user,
        password: Secret::new(get("OS_PASSWORD").ok_or_else(|| {
            AuthConfigError::Missing("OS_USERNAME is set but OS_PASSWORD is not".into())
        })?),
        project: project_ref(
            get("OS_PROJECT_ID"),
            get("OS_PROJECT_NAME"),
            get("OS_PROJECT_DOMAIN_ID"),
            get("OS_PROJECT_DOMAIN_NAME"),
        ),
    })
}

fn user_ref(
    id: Option<String>,
    name: Option<String>,
    domain_id: Option<String>,
    domain_name: Option<String>,
) -> Option<UserRef> {
    if id.is_none() && name.is_none() {
        return None;
    }
    Some(UserRef {
        id,
        name,
        domain_id,
        domain_name,
    })
}

fn project_ref(
    id: Option<String>,
    name: Option<String>,
    domain_id: Option<String>,
    domain_name: Option<String>,
) -> Option<ProjectRef> {
    if id.is_none() && name.is_none() {
        return None;
    }
    Some(ProjectRef {
        id,
        name,
        domain_id,
        domain_name,
    })
}

/// First line of a secret file, without the trailing newline.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthConfigError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    clouds: HashMap<String, Cloud>,
}

#[derive(Debug, Deserialize, Default)]
struct Cloud {
    #[serde(default)]
    auth_type: Option<String>,
    #[serde(default)]
    auth: CloudAuth,
    #[serde(default)]
    region_name: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    cacert: Option<PathBuf>,
    #[serde(default)]
    baremetal_endpoint_override: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct CloudAuth {
    auth_url: Option<String>,
    endpoint: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<String>,
}

/// Where openstacksdk looks for clouds.yaml, in its order.
fn clouds_yaml_paths(env: &HashMap<String, String>) -> Vec<PathBuf> {
    if let Some(p) = env.get("OS_CLIENT_CONFIG_FILE").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![PathBuf::from("clouds.yaml")];
    if let Some(home) = env.get("HOME") {
        out.push(Path::new(home).join(".config/openstack/clouds.yaml"));
    }
    out.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    out
}

fn from_clouds_yaml(
    name: &str,
    env: &HashMap<String, String>,
) -> Result<(AuthConfig, CloudExtras), AuthConfigError> {
    let paths = clouds_yaml_paths(env);
    let path = paths.iter().find(|p| p.is_file()).ok_or_else(|| {
        AuthConfigError::Missing(format!(
            "OS_CLOUD={name} but no clouds.yaml found (looked at {})",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| AuthConfigError::Read {
        path: path.clone(),
        message: e.to_string(),
    })?;
    parse_clouds_yaml(path, &text, name)
}

pub(crate) fn parse_clouds_yaml(
    path: &Path,
    text: &str,
    name: &str,
) -> Result<(AuthConfig, CloudExtras), AuthConfigError> {
    let yaml_err = |message: String| AuthConfigError::Yaml {
        path: path.to_owned(),
        message,
    };
    let mut file: CloudsFile =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_err(e.to_string()))?;
    let cloud = file
        .clouds
        .remove(name)
        .ok_or_else(|| yaml_err(format!("no cloud named {name:?}")))?;
    let a = cloud.auth;
    let extras = CloudExtras {
        endpoint: cloud.baremetal_endpoint_override.or(a.endpoint.clone()),
        cacert: cloud.cacert,
    };
    let auth_type = cloud.auth_type.unwrap_or_else(|| {
        if a.application_credential_id.is_some() || a.application_credential_name.is_some() {
            "v3applicationcredential".into()
        } else {
            "password".into()
        }
    });
    let field = |what: &str| {
        yaml_err(format!(
            "cloud {name:?}: auth.{what} is required for auth_type {auth_type}"
        ))
    };
    let auth = match auth_type.as_str() {
        "none" | "noauth" => AuthConfig::None,
        "http_basic" => AuthConfig::Basic {
            username: a.username.clone().ok_or_else(|| field("username"))?,
            password: Secret::new(a.password.clone().ok_or_else(|| field("password"))?),
        },
        "v3applicationcredential" | "applicationcredential" => AuthConfig::Keystone(KeystoneConfig {
            auth_url: a.auth_url.clone().ok_or_else(|| field("auth_url"))?,
            method: KeystoneMethod::ApplicationCredential {
                id: a.application_credential_id.clone(),
                name: a.application_credential_name.clone(),
                user: user_ref(a.user_id.clone(), a.username.clone(), a.user_domain_id.clone(), a.user_domain_name.clone()),
                secret: Secret::new(a.application_credential_secret.clone().ok_or_else(|| field("application_credential_secret"))?),
            },
            region: cloud.region_name,
            interface: cloud.interface.unwrap_or_else(|| "public".into()),
        }),
        "password" | "v3password" => AuthConfig::Keystone(KeystoneConfig {
            auth_url: a.auth_url.clone().ok_or_else(|| field("auth_url"))?,
            method: KeystoneMethod::Password {
                user: user_ref(a.user_id.clone(), a.username.clone(), a.user_domain_id.clone(), a.user_domain_name.clone())
                    .ok_or_else(|| field("username"))?,
                password: Secret::new(a.password.clone().ok_or_else(|| field("password"))?),
                project: project_ref(a.project_id.clone(), a.project_name.clone(), a.project_domain_id.clone(), a.project_domain_name.clone()),
            },
            region: cloud.region_name,
            interface: cloud.interface.unwrap_or_else(|| "public".into()),
        }),
        other => return Err(yaml_err(format!("cloud {name:?}: auth_type {other:?} is not supported (none, http_basic, password, v3applicationcredential)"))),
    };
    Ok((auth, extras))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_do_not_print() {
        let (auth, _) = from_env(&env(&[
            ("IRONIC_USERNAME", "u"),
            ("IRONIC_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn application_credential_token_request_has_no_scope() {
        let (auth, _) = from_env(&env(&[
            ("OS_AUTH_URL", "http://ks/v3"),
            ("OS_APPLICATION_CREDENTIAL_ID", "abc"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s3"),
            ("OS_PROJECT_NAME", "ignored"),
        ]))
        .unwrap();
        let AuthConfig::Keystone(k) = auth else {
            panic!("keystone expected")
        };
        assert_eq!(
            k.method.token_request(),
            json!({"auth": {"identity": {"methods": ["application_credential"],
                   "application_credential": {"id": "abc", "secret": "s3"}}}})
        );
    }

    #[test]
    fn password_token_request_is_project_scoped() {
        let (auth, _) = from_env(&env(&[
            ("OS_AUTH_URL", "http://ks"),
            ("OS_USERNAME", "ironic-md"),
            ("OS_PASSWORD", "pw"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_NAME", "service"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ]))
        .unwrap();
        let AuthConfig::Keystone(k) = auth else {
            panic!("keystone expected")
        };
        assert_eq!(
            k.method.token_request(),
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
                {"name": "ironic-md", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
        );
    }

    #[test]
    fn clouds_yaml_forms() {
        let text = r#"
clouds:
  bifrost:
    auth_type: http_basic
    auth:
      username: admin
      password: secret
    baremetal_endpoint_override: http://192.0.2.1:6385
  ks:
    auth:
      auth_url: https://keystone.example.com/v3
      application_credential_id: id1
      application_credential_secret: s1
    region_name: RegionOne
    cacert: /etc/ssl/ca.pem
"#;
        let p = Path::new("clouds.yaml");
        let (auth, extras) = parse_clouds_yaml(p, text, "bifrost").unwrap();
        assert_eq!(
            auth,
            AuthConfig::Basic {
                username: "admin".into(),
                password: Secret::new("secret")
            }
        );
        assert_eq!(extras.endpoint.as_deref(), Some("http://192.0.2.1:6385"));
        let (auth, extras) = parse_clouds_yaml(p, text, "ks").unwrap();
        assert_eq!(auth.kind(), "keystone application credential");
        assert_eq!(extras.cacert, Some(PathBuf::from("/etc/ssl/ca.pem")));
        assert_eq!(
            parse_clouds_yaml(p, text, "nope").unwrap_err().to_string(),
            "invalid clouds.yaml clouds.yaml: no cloud named \"nope\""
        );
    }
}
