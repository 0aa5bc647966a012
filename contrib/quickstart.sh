#!/usr/bin/env bash
# THE run command: set up mailguard on a fresh Debian/Ubuntu machine and run the daemon
# in the foreground with the example configuration, on a local port.
#   contrib/quickstart.sh            (Ctrl-C / SIGTERM stops it)
# Environment: MAILGUARD_HOME (state dir, default ./.mailguard), MAILGUARD_LISTEN
# (default 127.0.0.1:2525).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
HOME_DIR="${MAILGUARD_HOME:-$REPO_ROOT/.mailguard}"
LISTEN="${MAILGUARD_LISTEN:-127.0.0.1:2525}"
say() { printf '[quickstart] %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq \
        install --no-install-recommends "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv .venv"
    python3 -m venv .venv
fi
say "installing mailguard into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

mkdir -p "$HOME_DIR/spool"
STORE="sqlite+aiosqlite:///$HOME_DIR/mailguard.db"
CONFIG="$REPO_ROOT/contrib/mailguard.example.toml"
say "initialising the store $HOME_DIR/mailguard.db"
.venv/bin/mailguard db upgrade --store "$STORE"

cat <<MSG
[quickstart] starting: mailguard serve --config contrib/mailguard.example.toml --listen $LISTEN
[quickstart]   spool:   $HOME_DIR/spool/<domain>/<user>/new
[quickstart]   store:   $HOME_DIR/mailguard.db
[quickstart] send a test message from another terminal:
[quickstart]   swaks --server $LISTEN --from you@example.net --to postmaster@example.com
[quickstart]   ls $HOME_DIR/spool/example.com/postmaster/new
[quickstart] relaying: 127.0.0.1 is a relay network in this config, 127.0.0.2 is a stranger:
[quickstart]   swaks --server $LISTEN --to someone@foreign.test                              -> 250
[quickstart]   swaks --server $LISTEN --to someone@foreign.test --local-interface 127.0.0.2  -> 553
[quickstart] stop with Ctrl-C (SIGTERM): transactions in flight finish first.
MSG
exec .venv/bin/mailguard serve --config "$CONFIG" --listen "$LISTEN" \
    --spool "$HOME_DIR/spool" --store "$STORE"
