# Sourced by install.sh and uninstall.sh: every change goes through `run`, which prints it
# ("+ command") and does it unless --dry-run; `note` says what was found and left alone.
# Needs DRY (0/1) and SCRIPT (the caller's name) set.

run() {
    printf '+ %s\n' "$*"
    [ "$DRY" -eq 1 ] || "$@"
}

note() { printf '= %s\n' "$*"; }

require_root() {
    if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        echo "$SCRIPT: run as root (sudo), or with --dry-run to see what it would do" >&2
        exit 1
    fi
}
