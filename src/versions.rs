//! Metadata versions, by the names Nova gives them (`nova/api/metadata/base.py`). Each
//! version adds something; the code that gates on a version names it here once.

/// `meta_data.json`, `user_data`.
pub(crate) const FOLSOM: &str = "2012-08-10";
/// The `password` file; the `random_seed` key.
pub(crate) const GRIZZLY: &str = "2013-04-04";
/// `vendor_data.json`.
pub(crate) const HAVANA: &str = "2013-10-17";
/// `network_data.json`; the `project_id` key.
pub(crate) const LIBERTY: &str = "2015-10-15";
/// The `devices` key.
pub(crate) const NEWTON_ONE: &str = "2016-06-30";
/// `vendor_data2.json`.
pub(crate) const NEWTON_TWO: &str = "2016-10-06";
/// `vlan` inside `devices[]` entries.
pub(crate) const OCATA: &str = "2017-02-22";
/// `vf_trusted` inside `devices[]` entries.
pub(crate) const ROCKY: &str = "2018-08-27";
/// The `dedicated_cpus` key.
pub(crate) const VICTORIA: &str = "2020-10-14";
/// `share` entries in `devices[]`.
pub(crate) const EPOXY: &str = "2025-04-04";

/// OpenStack metadata versions, oldest first (`OPENSTACK_VERSIONS`); `latest` is the last.
/// They are dates, so string order is version order.
pub(crate) const OPENSTACK: &[&str] = &[
    FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY, VICTORIA, EPOXY,
];

/// EC2 metadata versions Nova serves (`VERSIONS`), oldest first; `latest` is the last.
pub(crate) const EC2: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// An OpenStack `version` has what `since` added.
pub(crate) fn has(version: &str, since: &str) -> bool {
    version >= since
}

/// An EC2 `version` has what `since` added (`1.0` sorts first, so by position, not text).
pub(crate) fn ec2_has(version: &str, since: &str) -> bool {
    let pos = |v: &str| EC2.iter().position(|x| *x == v).unwrap_or(0);
    pos(version) >= pos(since)
}

/// `latest` or one of `versions`, as the static string of that version.
pub(crate) fn resolve(versions: &'static [&'static str], v: &str) -> Option<&'static str> {
    if v == "latest" {
        return versions.last().copied();
    }
    versions.iter().find(|x| **x == v).copied()
}
