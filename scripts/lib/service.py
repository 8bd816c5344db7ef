"""What the end-to-end suite, the benchmarks and the Ironic harness's self-test share:
free loopback ports, polling for a condition the servers make true, a GET from a chosen
source address, VmRSS, one ironic-metadata process on free ports (started, waited for, its
metrics, log and audit events read, stopped), and `Checks`, the one way a script asserts:
a line per check, "ok   - WHAT" or "FAIL - WHAT" (as scripts/netns-e2e.sh and
deploy/validate.sh print theirs), then "N passed, M failed".

The service writes a request's access or audit line and counts it in its metrics just
after the answer is written (pingora's logging phase): a script that reads either right
after a request waits for it (`audit_until`, `wait_for` on the metric), never sleeps.

Import it with this directory on sys.path (scripts/bench/common.py and
scripts/e2e/real_ironic.py do):

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
    import service

Python standard library only: it runs under python3 and under the Ironic venv's python.
"""

import http.client
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
# Every loopback client allowed, with a rate limit no test reaches.
OPEN_POLICY_DIR = TOP / "tests" / "fixtures" / "policies" / "open"
# The service's settings from the environment (the `env =` names of its flags, OS_* for
# clouds.yaml): none may reach it from the caller's environment, only from `env=`.
SETTINGS = ("OS_", "IRONIC_", "BIND_", "ADMIN_", "INVENTORY_", "POLICY_", "THREADS", "REFRESH_", "POLL_",
            "RECONCILE_", "LOG_",
            "TOKEN_KEY_FILE", "DNS_SERVERS", "STATE_DIR", "SERVED_STATES", "KEEPALIVE_SECONDS",
            "HEADER_TIMEOUT_SECONDS", "MAX_", "SHUTDOWN_GRACE_SECONDS", "IDENTITY_")


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(cond, timeout, interval=0.02):
    """Call `cond` until it returns something true or `timeout` seconds have passed; its last
    value either way."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


def wait_for(cond, what, timeout, interval=0.02):
    """`cond`'s first true value; SystemExit after `timeout` seconds without one."""
    value = poll(cond, timeout, interval)
    if not value:
        raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


def http_get(port, path, source="127.0.0.1", host="127.0.0.1", headers=None, timeout=15):
    """(status, body bytes) of one GET to host:port on a fresh connection from `source`."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def rss_bytes(pid):
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def stop_process(proc, timeout=30):
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_env(env=None):
    """This environment without the service's settings, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS)}
    return {**clean, **(env or {})}


class Service:
    """One `ironic-metadata serve` on free ports: metadata on `bind` (127.0.0.1 unless given),
    admin on 127.0.0.1, JSON log (stdout and stderr) in a new file of `workdir` (default the
    system's temporary directory; the file stays after stop()).

    source_args: ["--inventory", FILE] or ["--ironic-url", URL, ...]; extra: more flags;
    cpus: a taskset CPU list; env: settings for the process (on a clean environment);
    admin: the admin listener's port (default a free one), for flags that name it;
    netns: a network namespace to run in (its admin listener is then asked through curl
    run in it). Started by the constructor; wait_ready() or wait_healthy() waits for it.
    """

    def __init__(self, binary, source_args, workdir=None, policy_dir=OPEN_POLICY_DIR, extra=(), cpus=None,
                 env=None, log_level="info", bind="127.0.0.1", netns=None, admin=None):
        self.port, self.admin, self.bind, self.netns = free_port(), admin or free_port(), bind, netns
        self.log_path = Path(tempfile.mkstemp(prefix="service-", suffix=".log", dir=workdir)[1])
        cmd = [str(binary), "serve", *source_args, "--bind", bind, "--port", str(self.port),
               "--admin", f"127.0.0.1:{self.admin}", "--policy-dir", str(policy_dir),
               "--log-format", "json", "--log-level", log_level, *extra]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]  # exec's the service: same pid
        self.started = time.monotonic()
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, env=service_env(env), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)

    # -- the admin listener ----------------------------------------------------------------

    def admin_get(self, path, timeout=5):
        """(status, body) of GET `path` on the admin listener; OSError when it does not answer."""
        if self.netns is None:
            return http_get(self.admin, path, timeout=timeout)
        out = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-sS", "-m", str(timeout),
                              "-w", "\n%{http_code}", f"http://127.0.0.1:{self.admin}{path}"], capture_output=True)
        if out.returncode:
            raise OSError(out.stderr.decode(errors="replace").strip())
        body, _, status = out.stdout.rpartition(b"\n")
        return int(status), body

    def readyz(self):
        """The /readyz document; {} while the admin listener does not answer."""
        try:
            return json.loads(self.admin_get("/readyz")[1])
        except (OSError, ValueError, http.client.HTTPException):
            return {}

    def healthy(self):
        """The admin listener answers /healthz and the metadata port accepts (the listeners
        start independently). Not for a service in `netns`: its port is not reachable here."""
        try:
            socket.create_connection((self.bind, self.port), timeout=1).close()
            return self.admin_get("/healthz")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def wait_ready(self, timeout=120, interval=0.01):
        """Seconds from process start until /readyz says ready (the first inventory indexed)."""
        return self._wait(lambda: self.readyz().get("ready") is True, "ready", timeout, interval)

    def wait_healthy(self, timeout=30, interval=0.05):
        """Seconds from process start until healthy()."""
        return self._wait(self.healthy, "listening", timeout, interval)

    def _wait(self, cond, what, timeout, interval):
        def up():
            if self.proc.poll() is not None:
                raise SystemExit(f"ironic-metadata exited with {self.proc.returncode}:\n{self.log_tail()}")
            return cond()
        if not poll(up, timeout, interval):
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for ironic-metadata to be {what}:\n"
                             + self.log_tail())
        return time.monotonic() - self.started

    def metrics(self):
        """Prometheus samples: {'name{labels}': value}."""
        out = {}
        for line in self.admin_get("/metrics", 10)[1].decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, name):
        """One sample, 'name' or 'name{labels}' as /metrics prints it; 0 when absent."""
        return self.metrics().get(name, 0.0)

    # -- the process -----------------------------------------------------------------------

    def rss(self):
        return rss_bytes(self.proc.pid)

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines=20):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def audit_events(self):
        """The audit lines logged so far (log level info or lower), as dicts: event, reason,
        client, peer, zone, node, path, detail..."""
        events = []
        for line in self.log_text().splitlines():
            if '"target":"audit"' in line:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
        return events

    def audit_until(self, pred, timeout=10.0):
        """The first audit event for which `pred` holds, waiting up to `timeout` seconds for it
        (requests are audited just after their answer); None if none came."""
        def found():
            return next((e for e in self.audit_events() if pred(e)), None)
        return poll(found, timeout, 0.05)

    def stop(self):
        stop_process(self.proc)


class Checks:
    """Assertions that count instead of stopping: one line each, a summary at the end."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what, detail=""):
        """Count and print one assertion; `detail` is printed under a failed one. Returns ok."""
        ok = bool(ok)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        line = f"{'ok  ' if ok else 'FAIL'} - {what}"
        if detail and not ok:
            line += "".join(f"\n       {d}" for d in str(detail).splitlines())
        print(line, flush=True)
        return ok

    def eq(self, got, want, what):
        return self.check(got == want, what, f"got  {got!r}\nwant {want!r}")

    def wait_for(self, cond, what, timeout=60.0, interval=0.05):
        """True once `cond` holds (printing nothing); after `timeout` seconds a failed check
        'timed out waiting for WHAT'."""
        return bool(poll(cond, timeout, interval)) or self.check(False, f"timed out waiting for {what}")

    def summary(self):
        """Print 'N passed, M failed'; the exit status: 1 on any failure."""
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0
