"""Shared pieces of the benchmark scenarios: scaling, policies, a many-source-address load
engine, statistics and the description of the machine. The service under test, free ports
and polling come from scripts/lib/service.py.

Python standard library only. Every server listens on a free 127.0.0.1 port; every client
address is in 127.0.0.0/8.
"""

import errno
import os
import platform
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import service  # noqa: E402
from service import TOP  # noqa: E402

# Zone for the scenarios that must never be rate limited: every loopback client, at the
# highest rate and burst the policy accepts.
OPEN_POLICY = """\
[[zone]]
name = "bench"
cidrs = ["127.0.0.0/8", "::1/128"]
action = "allow"
rate_limit = { per_second = 100000, burst = 1000000 }
"""


def log(msg):
    print(f"bench: {msg}", flush=True)


def scale():
    """BENCH_SCALE (default 1) shrinks durations and counts for quick checks."""
    value = float(os.environ.get("BENCH_SCALE", "1") or "1")
    if not 0 < value <= 1:
        raise SystemExit("BENCH_SCALE must be in (0, 1]")
    return value


def scaled(n, minimum=1):
    return max(minimum, int(round(n * scale())))


def write_policy(directory, text=OPEN_POLICY):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.toml").write_text(text)
    return directory


class Service(service.Service):
    """The service as every scenario runs it: warnings only in its log (no audit lines)."""

    def __init__(self, *args, log_level="warn", **kw):
        super().__init__(*args, log_level=log_level, **kw)


def client_address(base, i):
    """The i-th client address of a /16-aligned block: 127.<base>.0.1 onwards (i < 2**24)."""
    n = (base << 16) + i + 1
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def run_clients(port, clients, concurrency, timeout=60.0):
    """Loopback load from many source addresses, on one thread with non-blocking sockets.

    clients: list of (source address, [request bytes, ...]); each request goes on a fresh
    connection from that source (as cloud-init's readurl does), after the previous one
    finished. At most `concurrency` connections are open at once (all clients at once when
    it is at least their number). Returns a list per client of (seconds, response bytes or
    an error string) per request.
    """
    sel = selectors.DefaultSelector()
    results = [[] for _ in clients]
    pending = list(range(len(clients)))[::-1]  # clients not started yet (popped from the end)
    state = {}  # socket -> [client, request index, start, response bytearray, sent]
    open_count = 0
    deadline = time.monotonic() + timeout

    def start(c, k):
        nonlocal open_count
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((clients[c][0], 0))
            err = s.connect_ex(("127.0.0.1", port))
        except OSError as e:
            s.close()
            finish_error(c, k, time.monotonic(), f"connect: {e}")
            return
        if err not in (0, errno.EINPROGRESS):
            s.close()
            finish_error(c, k, time.monotonic(), f"connect: {os.strerror(err)}")
            return
        state[s] = [c, k, time.monotonic(), bytearray(), False]
        sel.register(s, selectors.EVENT_WRITE)
        open_count += 1

    def finish_error(c, k, t0, error):
        results[c].append((time.monotonic() - t0, error))
        advance(c, k)

    def advance(c, k):
        if k + 1 < len(clients[c][1]):
            start(c, k + 1)
        elif pending:
            start(pending.pop(), 0)

    while pending and open_count < concurrency:
        start(pending.pop(), 0)
    while state:
        if time.monotonic() > deadline:
            for s, (c, k, t0, _, _) in list(state.items()):
                results[c].append((time.monotonic() - t0, "timeout"))
                sel.unregister(s)
                s.close()
            break
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            c, k, t0, buf, sent = state[s]
            try:
                if events & selectors.EVENT_WRITE and not sent:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    s.sendall(clients[c][1][k])
                    state[s][4] = True
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
                if data:
                    buf += data
                    continue
                outcome = bytes(buf)
            except OSError as e:
                outcome = f"{type(e).__name__}: {e}"
            elapsed = time.monotonic() - t0
            sel.unregister(s)
            s.close()
            del state[s]
            open_count -= 1
            results[c].append((elapsed, outcome))
            advance(c, k)
    sel.close()
    return results


def get_request(path):
    return f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".encode()


def split_response(raw):
    """(status, body) of a raw HTTP/1.1 response read to the end (Connection: close)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = bytes(out)
    return status, body


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median(values):
    return statistics.median(values) if values else None


def machine():
    """CPU, cores, memory, kernel and OS of this machine, and whether it was busy."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem_kib * 1024,
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def source_commit():
    """The checked-out commit, read from .git without running git (no index refresh)."""
    git = TOP / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = (TOP / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        common = git
        if (git / "commondir").exists():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return "unknown"


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    if not text:
        return None
    # "nginx version: nginx/1.22.1", "wrk debian/4.1.0-3+b2 [epoll] ...", "curl 7.88.1 (...) ..."
    words = text[0].replace("nginx version: ", "").split()
    return " ".join(words[:2])
