#!/usr/bin/env python3
"""cloud-init's own code (Debian's package, on CLOUD_INIT_PATH) run as a node runs it, from
the node's address, against the service; prints what it read as JSON.

Usage: cloud_init_client.py SOURCE_IP URL nocloud

nocloud: the NoCloud datasource (DataSourceNoCloudNet) found through the kernel command
line `ds=nocloud;s=URL` (URL ends in /nocloud/): instance id, hostname, SSH keys, user and
vendor data as it read them; then network-config read and parsed as cloud-init 24.3+ reads
it from the seed (read_file_or_url, load_yaml), turned into its network state and rendered
by its netplan and ENI renderers.

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


def nocloud(url):
    from cloudinit import distros, helpers, url_helper, util
    from cloudinit.net import eni, netplan, network_state
    from cloudinit.sources import DataSourceNoCloud

    util.get_cmdline = lambda: f"ro quiet ds=nocloud;s={url}"
    tmp = tempfile.mkdtemp()
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
    distro = distros.fetch("ubuntu")("ubuntu", {}, paths)
    # No seed devices on this machine: only the command line's URL seed.
    sys_cfg = {"datasource": {"NoCloud": {"fs_label": None}}}
    ds = DataSourceNoCloud.DataSourceNoCloudNet(sys_cfg, distro, paths)
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


def main():
    ip, url, what = sys.argv[1:4]
    sys.path.insert(0, os.environ["CLOUD_INIT_PATH"])
    bind_source(ip)
    result = {"nocloud": nocloud}[what](url)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
