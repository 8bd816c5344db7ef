#!/usr/bin/env bash
# Create or update the Python venv holding a pinned OpenStack Ironic for end-to-end tests.
#
# Usage: scripts/ironic/setup-venv.sh [VENV_DIR]
#   VENV_DIR defaults to .venv-ironic at the repository top.
#   PYTHON (default python3) must be Python >= 3.11 with the venv module.
# Idempotent: re-running re-checks the pins (pip is a no-op when satisfied) and
# verifies the install; any failure exits non-zero with a message.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
venv=${1:-$top/.venv-ironic}
python=${PYTHON:-python3}
start=$SECONDS

die() {
  echo "setup-venv: ERROR: $*" >&2
  exit 1
}

command -v "$python" >/dev/null || die "'$python' not found (set PYTHON)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$python" --version 2>&1) is too old: ironic needs Python >= 3.11"
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
  die "'$python' lacks venv/ensurepip (Debian: apt-get install python3-venv)"

if [[ -x $venv/bin/python ]]; then
  echo "setup-venv: reusing $venv"
else
  echo "setup-venv: creating $venv"
  "$python" -m venv "$venv" || die "could not create the venv at $venv"
fi

echo "setup-venv: pip install -r requirements.txt -c constraints.txt"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
  -r "$here/requirements.txt" -c "$here/constraints.txt" ||
  die "pip install failed"
"$venv/bin/python" -m pip check --disable-pip-version-check ||
  die "pip check found broken requirements"

for exe in ironic ironic-dbsync; do
  [[ -x $venv/bin/$exe ]] || die "$venv/bin/$exe is missing"
done
"$venv/bin/python" -W ignore - "$here/requirements.txt" <<'EOF' || die "verification of the venv failed"
import importlib.metadata as md
import sys

import bcrypt  # noqa: F401  (htpasswd hashes for auth_strategy=http_basic)
import openstack.baremetal.configdrive  # noqa: F401  (configdrive ISO building)
import ironic.command.singleprocess  # noqa: F401  (the all-in-one `ironic`)

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    have = md.version(name)
    if have != want:
        sys.exit(f"{name} is {have}, expected {want}")
    print(f"setup-venv: {name}=={have}")
EOF

echo "setup-venv: $venv ready in $((SECONDS - start))s"
