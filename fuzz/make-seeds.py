#!/usr/bin/env python3
"""Writes the ISO-based seeds of the iso, configdrive and node targets.

    fuzz/make-seeds.py                 # the minimal Joliet image and the seeds built on it
    fuzz/make-seeds.py --from DIR      # also convert crafted images (form byte + gzip) in DIR

The iso target takes an image from sector 16 on (it adds the 32 KiB system area itself),
so its seeds are images without the system area and without trailing zero sectors. The
configdrive target takes a form byte, then the image as Ironic stores it (form 0: the bytes
are base64-encoded by the target, here a gzip stream). Needs genisoimage.
"""
import argparse
import base64
import gzip
import json
import os
import subprocess
import tempfile

SECTOR = 2048
SYSTEM_AREA = 16 * SECTOR
HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")

# A tiny configdrive tree, nested as Nova and Ironic's builder write it, with a non-ASCII
# name so Joliet and the primary tree differ.
TREE = {
    "openstack/latest/meta_data.json": json.dumps(
        {"uuid": "u1", "name": "n", "hostname": "h\u00e9",
         "public_keys": {"k": "ssh-ed25519 A"}}),
    "openstack/latest/user_data": "#cloud-config\n",
    "openstack/latest/network_data.json": json.dumps(
        {"links": [{"id": "p", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:01"}],
         "networks": [{"id": "n", "type": "ipv4", "link": "p", "ip_address": "192.0.2.5"}],
         "services": []}),
    "openstack/latest/vendor_data.json": json.dumps({"a": 1}),
    "openstack/latest/vendor_data2.json": json.dumps({"cloud-init": "x"}),
    "openstack/2012-08-10/meta_data.json": json.dumps({"uuid": "old"}),
    "ec2/latest/meta-data.json": json.dumps(
        {"instance-id": "i-1", "public-keys": {"0": {"_name": "0=k"}}}),
    "openstack/content/caf\u00e9": "x",
}


def genisoimage(tree):
    with tempfile.TemporaryDirectory() as d:
        for path, text in tree.items():
            full = os.path.join(d, "tree", path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(text)
        out = os.path.join(d, "image.iso")
        subprocess.run(["genisoimage", "-quiet", "-o", out, "-J", "-r", "-V", "config-2",
                        "-no-pad", "-input-charset", "utf-8", os.path.join(d, "tree")],
                       check=True)
        with open(out, "rb") as f:
            return f.read()


def trimmed(image):
    """The image from sector 16 on, without trailing zero sectors."""
    body = image[SYSTEM_AREA:]
    end = len(body) // SECTOR * SECTOR
    while end > 0 and not any(body[end - SECTOR:end]):
        end -= SECTOR
    return body[:max(end, SECTOR)]


def full(body):
    return bytes(SYSTEM_AREA) + body


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def from_stored(path):
    """An image from a configdrive seed: a form byte, then gzip or raw bytes."""
    with open(path, "rb") as f:
        data = f.read()[1:]
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", help="directory of crafted images to convert")
    p.add_argument("--max-sectors", type=int, default=15,
                   help="cut a converted image of over 64 sectors to this many")
    args = p.parse_args()

    body = trimmed(genisoimage(TREE))
    write("iso", "joliet-min", body)
    write("configdrive", "gzip-joliet-min", b"\x00" + gz(full(body)))
    # The same image line-wrapped at 76 columns (form 4), as base64(1) writes it.
    write("configdrive", "gzip-joliet-min-wrapped", b"\x04" + gz(full(body)))

    # The wrappers alone: gzip streams Ironic could be handed.
    small = b"#cloud-config\n" * 4
    stream = gz(small)
    write("configdrive", "gzip-small", b"\x00" + stream)
    write("configdrive", "gzip-truncated", b"\x00" + stream[:-6])
    write("configdrive", "gzip-bad-crc", b"\x00" + stream[:-8] + b"\0\0\0\0" + stream[-4:])
    write("configdrive", "gzip-two-members", b"\x00" + stream + gz(b"more"))
    write("configdrive", "gzip-trailing-garbage", b"\x00" + stream + b"garbage")
    # Inflates past the limit (1 MiB of zeros in about 1 KiB).
    write("configdrive", "gzip-bomb", b"\x00" + gzip.compress(bytes(1 << 20), 9, mtime=0))
    # Form 1: the target gzips the rest itself; form 13: base64 wrapped with CRLF.
    write("configdrive", "harness-gzip", b"\x01" + small)
    write("configdrive", "raw-wrapped-crlf", b"\x0c" + small * 4)
    # Form 2: stored text with whitespace, padding and URL-safe characters.
    text = base64.encodebytes(stream).decode()
    write("configdrive", "text-lines", b"\x02" + text.encode())
    write("configdrive", "text-urlsafe", b"\x02" + base64.urlsafe_b64encode(b"\xfb\xff" * 8))
    write("configdrive", "text-unpadded", b"\x02" + base64.b64encode(stream).rstrip(b"="))

    if args.source:
        for name in sorted(os.listdir(args.source)):
            image = from_stored(os.path.join(args.source, name))
            if len(image) < SYSTEM_AREA + SECTOR:
                continue
            body = trimmed(image)
            if len(body) > 64 * SECTOR:
                # The crafted part of a large image is in its first sectors.
                body = body[: args.max_sectors * SECTOR]
            write("iso", name.removesuffix("-gzip"), body)
            write("configdrive", name, b"\x00" + gz(full(body)))


if __name__ == "__main__":
    main()
