#!/usr/bin/env bash
# Install edgegw as a service on a Debian/Ubuntu industrial PC (x86-64 or ARM64). Idempotent:
# run it again to upgrade; an existing config, secrets file and data are never overwritten.
#
#   sudo deploy/install.sh                       # from this source tree, packages from the index
#   sudo deploy/install.sh --wheels /media/usb/wheels   # offline: wheels built by build-wheels.sh
#   deploy/install.sh --dry-run                  # print every action, change nothing
#
# Layout: venv /opt/edgegw/venv, config /etc/edgegw/ (edgegw.yaml, models/, edgegw.env for
# secrets), data /var/lib/edgegw/ (queue, PKI), system user "edgegw" in group "dialout",
# unit /etc/systemd/system/edgegw.service (enabled; started with --start).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/edgegw
CONF=/etc/edgegw
DATA=/var/lib/edgegw
UNIT_DIR=/etc/systemd/system
USER_NAME=edgegw
PYTHON=python3
WHEELS=""
DRY=0
START=0
ROOT=""

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --wheels DIR   install offline from DIR (pip --no-index --find-links DIR)
  --python PY    the Python 3.11+ that makes the venv (default: python3)
  --start        start (or restart) the service at the end
  --dry-run      print the actions, change nothing
  --root DIR     install into DIR as if it were / (an image or a test); no systemctl
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --start) START=1; shift ;;
        --dry-run) DRY=1; shift ;;
        --root) ROOT="${2%/}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

SCRIPT=install.sh
# shellcheck source=deploy/actions.sh
. "$(dirname "${BASH_SOURCE[0]}")/actions.sh"
require_root
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
    echo "install.sh: --wheels $WHEELS is not a directory" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: $PYTHON is not Python 3.11 or newer (apt-get install python3 python3-venv)" >&2
    exit 1
fi

R="$ROOT"  # every installed path below is "$R/..."
# ownership needs the user in this system's user database; a --root tree gets it from its own
# (useradd --root), so there the files are left to whoever unpacks the tree
OWN=(-o root -g "$USER_NAME")
OWN_DATA=(-o "$USER_NAME" -g "$USER_NAME")
if [ -n "$ROOT" ]; then OWN=(); OWN_DATA=(); fi

# 1. the service user, in dialout for serial ports
user_args=(--system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin)
root_args=()
[ -n "$ROOT" ] && root_args=(--root "$ROOT")
if id_line=$(grep "^$USER_NAME:" "$R/etc/passwd" 2>/dev/null) && [ -n "$id_line" ]; then
    note "user $USER_NAME exists"
else
    run useradd "${root_args[@]}" "${user_args[@]}" "$USER_NAME"
fi
if grep -q "^dialout:.*[:,]$USER_NAME\(,\|$\)" "$R/etc/group" 2>/dev/null; then
    note "$USER_NAME is in dialout"
else
    run usermod "${root_args[@]}" -a -G dialout "$USER_NAME"
fi

# 2. the venv and the package (an upgrade replaces the code, never the data)
if [ -x "$R$PREFIX/venv/bin/python" ]; then
    note "venv $PREFIX/venv exists"
else
    run install -d -m 0755 "$R$PREFIX"
    run "$PYTHON" -m venv "$R$PREFIX/venv"
fi
if [ -n "$WHEELS" ]; then
    run "$R$PREFIX/venv/bin/pip" install --no-index --find-links "$WHEELS" --upgrade edgegw
else
    run "$R$PREFIX/venv/bin/pip" install --upgrade "$SRC"
fi
run install -d -m 0755 "$R$PREFIX/share/docs"
run install -m 0644 "$SRC/docs/operations.md" "$R$PREFIX/share/docs/operations.md"

# 3. config (kept if present), models (refreshed), secrets file (kept; root:edgegw 0640)
run install -d -m 0750 "${OWN[@]}" "$R$CONF"
if [ -e "$R$CONF/edgegw.yaml" ]; then
    note "$CONF/edgegw.yaml kept"
else
    run install -m 0640 "${OWN[@]}" "$SRC/deploy/edgegw.yaml" "$R$CONF/edgegw.yaml"
fi
run install -d -m 0750 "${OWN[@]}" "$R$CONF/models"
for model in "$SRC"/configs/models/*.yaml; do
    run install -m 0640 "${OWN[@]}" "$model" "$R$CONF/models/$(basename "$model")"
done
if [ -e "$R$CONF/edgegw.env" ]; then
    note "$CONF/edgegw.env kept"
else
    run install -m 0640 "${OWN[@]}" "$SRC/deploy/edgegw.env" "$R$CONF/edgegw.env"
fi

# 4. data
run install -d -m 0750 "${OWN_DATA[@]}" "$R$DATA"

# 5. the unit
run install -d -m 0755 "$R$UNIT_DIR"
run install -m 0644 "$SRC/deploy/systemd/edgegw.service" "$R$UNIT_DIR/edgegw.service"
if [ -z "$ROOT" ]; then
    if command -v systemd-analyze >/dev/null; then
        run systemd-analyze verify "$UNIT_DIR/edgegw.service"
    fi
    run systemctl daemon-reload
    run systemctl enable edgegw.service
    if [ "$START" -eq 1 ]; then
        run systemctl restart edgegw.service
    else
        note "edit $CONF/edgegw.yaml and $CONF/edgegw.env, then: sudo systemctl start edgegw"
    fi
fi
note "installed"
