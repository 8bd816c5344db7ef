#!/usr/bin/env python3
"""cloud-init's own code (Debian's package, on CLOUD_INIT_PATH) run as a node runs it, from
the node's address, against the service; prints what it read as JSON.

Usage: cloud_init_client.py SOURCE_IP URL nocloud|phone_home|reporting [KEY_DIR]

URL is the service's root (http://HOST:PORT/).

nocloud: the NoCloud datasource (DataSourceNoCloudNet) found through the kernel command
line `ds=nocloud;s=URL` (URL ends in /nocloud/): instance id, hostname, SSH keys, user and
vendor data as it read them; then network-config read and parsed as cloud-init 24.3+ reads
it from the seed (read_file_or_url, load_yaml), turned into its network state and rendered
by its netplan and ENI renderers.

phone_home: its phone_home module (cc_phone_home.handle, `post: all`) with the NoCloud
datasource's instance id and hostname, posting to URL/openstack/latest/phone_home the host
keys in KEY_DIR (ssh_host_*_key.pub, read where the module reads /etc/ssh).

reporting: its webhook reporting handler (endpoint URL/openstack/latest/reporting) given the
events of a boot as cloud-init's stages report them (init-local, init-network,
modules-config, modules-final, a module in each; one module of modules-final fails).

The only change to cloud-init's code is the source address of its sockets (every
connection leaves from SOURCE_IP, as the node's would), since one machine poses as many
nodes on loopback.
"""

import json
import os
import sys
import tempfile


def bind_source(ip):
    import urllib3.connection
    import urllib3.util.connection as conn

    create = conn.create_connection

    def bound(address, timeout=None, source_address=None, socket_options=None):
        return create(address, timeout, source_address=(ip, 0), socket_options=socket_options)

    urllib3.connection.connection.create_connection = bound


def datasource(url):
    """The NoCloud datasource, found through the kernel command line."""
    from cloudinit import distros, helpers, util
    from cloudinit.sources import DataSourceNoCloud

    util.get_cmdline = lambda: f"ro quiet ds=nocloud;s={url}"
    tmp = tempfile.mkdtemp()
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
    distro = distros.fetch("ubuntu")("ubuntu", {}, paths)
    # No seed devices on this machine: only the command line's URL seed.
    sys_cfg = {"datasource": {"NoCloud": {"fs_label": None}}}
    return DataSourceNoCloud.DataSourceNoCloudNet(sys_cfg, distro, paths), paths, distro


def nocloud(root, _keys):
    from cloudinit import url_helper, util
    from cloudinit.net import eni, netplan, network_state

    url = root + "nocloud/"
    ds, _, _ = datasource(url)
    out = {"found": ds.get_data()}
    if not out["found"]:
        return out
    out.update(
        seed=ds.seed,
        instance_id=ds.get_instance_id(),
        hostname=ds.get_hostname().hostname,
        keys=ds.get_public_ssh_keys(),
        user_data=ds.userdata_raw.decode(),
        vendor_data=ds.vendordata_raw.decode(),
    )
    resp = url_helper.read_file_or_url(url + "network-config")
    cfg = util.load_yaml(util.decode_binary(resp.contents))
    state = network_state.parse_net_config_data(cfg)
    out["netplan"] = netplan.Renderer({"postcmds": False})._render_content(state)
    out["eni"] = eni.Renderer({})._render_interfaces(state)
    out["interfaces"] = sorted((i["name"], i["type"]) for i in state.iter_interfaces())
    out["addresses"] = sorted(
        s["address"] for i in state.iter_interfaces() for s in i.get("subnets", []) if s.get("address")
    )
    return out


def phone_home(root, keys):
    import logging

    from cloudinit import cloud, util
    from cloudinit.config import cc_phone_home

    ds, paths, distro = datasource(root + "nocloud/")
    if not ds.get_data():
        return {"found": False}
    load = util.load_file

    def host_keys_from_dir(path, *args, **kwargs):
        if path.startswith("/etc/ssh/"):
            path = os.path.join(keys, os.path.basename(path))
        return load(path, *args, **kwargs)

    cc_phone_home.util.load_file = host_keys_from_dir
    cfg = {"phone_home": {"url": root + "openstack/latest/phone_home", "post": "all", "tries": 1}}
    node = cloud.Cloud(ds, paths, cfg, distro, None)
    cc_phone_home.handle("phone_home", cfg, node, logging.getLogger("phone_home"), [])
    return {"found": True, "instance_id": node.get_instance_id(), "hostname": node.get_hostname().hostname,
            "fqdn": node.get_hostname(fqdn=True).hostname}


def reporting(root, _keys):
    from cloudinit import reporting as ci_reporting
    from cloudinit.reporting import events

    ci_reporting.update_configuration(
        {"webhook": {"type": "webhook", "endpoint": root + "openstack/latest/reporting"}})
    stages = {"init-local": "search-NoCloud", "init-network": "config-ssh",
              "modules-config": "config-locale", "modules-final": "config-phone_home"}
    for stage, module in stages.items():
        with events.ReportEventStack(stage, f"running {stage}", reporting_enabled=True) as parent:
            with events.ReportEventStack(module, f"running {module}", parent=parent):
                pass
            if stage == "modules-final":
                try:
                    with events.ReportEventStack("config-scripts_user", "running scripts_user", parent=parent):
                        raise RuntimeError("a user script failed")
                except RuntimeError:
                    pass
    ci_reporting.flush_events()
    return {"stages": list(stages)}


def main():
    ip, url, what = sys.argv[1:4]
    keys = sys.argv[4] if len(sys.argv) > 4 else None
    sys.path.insert(0, os.environ["CLOUD_INIT_PATH"])
    bind_source(ip)
    result = {"nocloud": nocloud, "phone_home": phone_home, "reporting": reporting}[what](url, keys)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
