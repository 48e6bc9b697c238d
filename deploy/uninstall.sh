#!/usr/bin/env bash
# Remove the edgegw service installed by deploy/install.sh. The config (/etc/edgegw) and the
# data (/var/lib/edgegw: the store-and-forward queue, the PKI) are kept unless --purge is given,
# so a reinstall picks up where the gateway stopped, with nothing unsent lost.
#
#   sudo deploy/uninstall.sh            # service, unit and venv removed; config and data kept
#   sudo deploy/uninstall.sh --purge    # also config, data and the edgegw user
#   deploy/uninstall.sh --dry-run       # print the actions, change nothing
set -euo pipefail

PREFIX=/opt/edgegw
CONF=/etc/edgegw
DATA=/var/lib/edgegw
UNIT=/etc/systemd/system/edgegw.service
USER_NAME=edgegw
DRY=0
PURGE=0
ROOT=""

while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1; shift ;;
        --dry-run) DRY=1; shift ;;
        --root) ROOT="${2%/}"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

SCRIPT=uninstall.sh
# shellcheck source=deploy/actions.sh
. "$(dirname "${BASH_SOURCE[0]}")/actions.sh"
require_root
R="$ROOT"

if [ -z "$ROOT" ] && command -v systemctl >/dev/null; then
    # stopping flushes the buffers and publishes the offline status
    run systemctl disable --now edgegw.service || true
fi
[ -e "$R$UNIT" ] && run rm -f "$R$UNIT"
[ -z "$ROOT" ] && command -v systemctl >/dev/null && run systemctl daemon-reload
[ -e "$R$PREFIX" ] && run rm -rf "$R$PREFIX"

if [ "$PURGE" -eq 1 ]; then
    [ -e "$R$CONF" ] && run rm -rf "$R$CONF"
    [ -e "$R$DATA" ] && run rm -rf "$R$DATA"
    root_args=()
    [ -n "$ROOT" ] && root_args=(--root "$ROOT")
    if grep -q "^$USER_NAME:" "$R/etc/passwd" 2>/dev/null; then
        run userdel "${root_args[@]}" "$USER_NAME"
    fi
else
    note "kept $CONF (config, secrets) and $DATA (queue, PKI): remove them with --purge"
fi
note "uninstalled"
