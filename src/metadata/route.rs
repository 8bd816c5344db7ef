//! Request path → [`Route`], a pure function. Paths are normalised the way Nova's handler
//! does (`posixpath.normpath`): `//`, `.` and trailing slashes vanish and `..` never climbs
//! above the root, so no path can name anything outside the two trees.

use percent_encoding::percent_decode_str;

use crate::versions::{self, resolve};

/// Longest path, in bytes after decoding, that is worth parsing.
pub(crate) const MAX_PATH_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/`: the EC2 version list.
    Ec2Versions,
    /// `/openstack`: the OpenStack version list.
    OpenStackVersions,
    /// `/openstack/<version>[/<file>]`; `file` is `None` for the directory listing.
    /// `version` is an entry of [`versions::OPENSTACK`] (`latest` resolved to the last).
    OpenStack {
        version: &'static str,
        file: Option<String>,
    },
    /// `[/ec2]/<version>[/<path>...]`; `path` is empty for the version's root.
    Ec2 {
        version: &'static str,
        path: Vec<String>,
    },
    /// `/nocloud[/<file>]`: cloud-init's NoCloud seed; `file` is `None` for the listing.
    NoCloud { file: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("path is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path is too long")]
    TooLong,
    #[error("no such metadata path")]
    NotFound,
}

/// Split a decoded path into normalised segments.
pub(crate) fn normalise(path: &str) -> Result<Vec<String>, RouteError> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| RouteError::BadEncoding)?;
    if decoded.len() > MAX_PATH_LEN {
        return Err(RouteError::TooLong);
    }
    if decoded.chars().any(char::is_control) {
        return Err(RouteError::ControlCharacter);
    }
    let mut out: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    Ok(out)
}

/// The files of the other trees, at their newest version, that hold what a NoCloud file
/// serves: a rule denying one of them denies the NoCloud file too, so a zone written before
/// the NoCloud tree existed keeps denying what it denied.
pub(crate) fn equivalents(route: &Route) -> Vec<[&'static str; 3]> {
    let Route::NoCloud { file: Some(file) } = route else {
        return Vec::new();
    };
    let os = versions::OPENSTACK[versions::OPENSTACK.len() - 1];
    let ec2 = versions::EC2[versions::EC2.len() - 1];
    match file.as_str() {
        "meta-data" => vec![
            ["openstack", os, "meta_data.json"],
            ["ec2", ec2, "meta-data"],
        ],
        "user-data" => vec![["openstack", os, "user_data"], ["ec2", ec2, "user-data"]],
        "vendor-data" => vec![["openstack", os, "vendor_data.json"]],
        "network-config" => vec![["openstack", os, "network_data.json"]],
        _ => Vec::new(),
    }
}

/// The route as path rules see it: `["openstack", version, file]`,
/// `["ec2", version, path...]` or `["nocloud", file]`, whichever way the request spelt it.
pub(crate) fn canonical(route: &Route) -> Vec<&str> {
    match route {
        Route::Ec2Versions => vec!["ec2"],
        Route::OpenStackVersions => vec!["openstack"],
        Route::OpenStack { version, file } => {
            let mut v = vec!["openstack", *version];
            v.extend(file.as_deref());
            v
        }
        Route::Ec2 { version, path } => {
            let mut v = vec!["ec2", *version];
            v.extend(path.iter().map(String::as_str));
            v
        }
        Route::NoCloud { file } => {
            let mut v = vec!["nocloud"];
            v.extend(file.as_deref());
            v
        }
    }
}

pub(crate) fn parse(path: &str) -> Result<Route, RouteError> {
    parse_normalised(normalise(path)?)
}

/// [`parse`] for segments that [`normalise`] produced.
pub(crate) fn parse_normalised(segs: Vec<String>) -> Result<Route, RouteError> {
    let mut it = segs.into_iter();
    let Some(first) = it.next() else {
        return Ok(Route::Ec2Versions);
    };
    if first == "openstack" {
        let Some(ver) = it.next() else {
            return Ok(Route::OpenStackVersions);
        };
        let version = resolve(versions::OPENSTACK, &ver).ok_or(RouteError::NotFound)?;
        let file = it.next();
        if it.next().is_some() {
            return Err(RouteError::NotFound);
        }
        return Ok(Route::OpenStack { version, file });
    }
    if first == "nocloud" {
        let file = it.next();
        if it.next().is_some() {
            return Err(RouteError::NotFound);
        }
        return Ok(Route::NoCloud { file });
    }
    let ver = if first == "ec2" {
        match it.next() {
            Some(v) => v,
            None => return Ok(Route::Ec2Versions),
        }
    } else {
        first
    };
    let version = resolve(versions::EC2, &ver).ok_or(RouteError::NotFound)?;
    Ok(Route::Ec2 {
        version,
        path: it.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(version: &'static str, file: Option<&str>) -> Route {
        Route::OpenStack {
            version,
            file: file.map(str::to_string),
        }
    }

    #[test]
    fn normalisation_matches_nova() {
        assert_eq!(parse("/").unwrap(), Route::Ec2Versions);
        assert_eq!(parse("").unwrap(), Route::Ec2Versions);
        assert_eq!(parse("/openstack/").unwrap(), Route::OpenStackVersions);
        assert_eq!(
            parse("//openstack//latest/./meta_data.json/").unwrap(),
            os("2025-04-04", Some("meta_data.json"))
        );
        assert_eq!(
            parse("/openstack/2012-08-10").unwrap(),
            os("2012-08-10", None)
        );
        assert_eq!(
            parse("/openstack/latest/meta_data.json?x=1").unwrap(),
            os("2025-04-04", Some("meta_data.json"))
        );
    }

    #[test]
    fn traversal_never_leaves_the_root() {
        assert_eq!(
            parse("/../../openstack/latest/../latest/user_data").unwrap(),
            os("2025-04-04", Some("user_data"))
        );
        assert_eq!(
            parse("/openstack/%2e%2e/%2E%2E/latest").unwrap(),
            Route::Ec2 {
                version: "2009-04-04",
                path: vec![]
            }
        );
        assert_eq!(
            parse("/latest/meta-data/../../..").unwrap(),
            Route::Ec2Versions
        );
    }

    #[test]
    fn ec2_paths() {
        assert_eq!(
            parse("/latest/meta-data/public-keys/0/openssh-key").unwrap(),
            Route::Ec2 {
                version: "2009-04-04",
                path: vec![
                    "meta-data".into(),
                    "public-keys".into(),
                    "0".into(),
                    "openssh-key".into()
                ]
            }
        );
        assert_eq!(
            parse("/ec2/1.0/user-data").unwrap(),
            Route::Ec2 {
                version: "1.0",
                path: vec!["user-data".into()]
            }
        );
        assert_eq!(parse("/ec2").unwrap(), Route::Ec2Versions);
    }

    #[test]
    fn nocloud_paths() {
        let nc = |f: Option<&str>| Route::NoCloud {
            file: f.map(str::to_string),
        };
        assert_eq!(parse("/nocloud/").unwrap(), nc(None));
        assert_eq!(parse("/nocloud//meta-data").unwrap(), nc(Some("meta-data")));
        assert_eq!(
            parse("/nocloud/../nocloud/network-config?x").unwrap(),
            nc(Some("network-config"))
        );
        assert_eq!(parse("/nocloud/a/b"), Err(RouteError::NotFound));
        assert_eq!(canonical(&nc(Some("user-data"))), ["nocloud", "user-data"]);
    }

    #[test]
    fn bad_paths() {
        assert_eq!(
            parse("/openstack/2099-01-01/meta_data.json"),
            Err(RouteError::NotFound)
        );
        assert_eq!(parse("/9999-99-99/meta-data"), Err(RouteError::NotFound));
        assert_eq!(parse("/openstack/latest/a/b"), Err(RouteError::NotFound));
        assert_eq!(parse("/openstack/%ff"), Err(RouteError::BadEncoding));
        assert_eq!(parse("/openstack/%00"), Err(RouteError::ControlCharacter));
        assert_eq!(
            parse(&format!("/{}", "a".repeat(2000))),
            Err(RouteError::TooLong)
        );
    }
}
