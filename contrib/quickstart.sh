#!/usr/bin/env bash
# THE run command: set up mailguard on a fresh Debian/Ubuntu machine and run the daemon
# in the foreground, on a local port, with virus and spam scanning by its own clamd and
# spamd.
#   contrib/quickstart.sh            (Ctrl-C / SIGTERM stops it, and the scanners)
# Environment: MAILGUARD_HOME (state dir, default ./.mailguard), MAILGUARD_LISTEN
# (default 127.0.0.1:2525), MAILGUARD_FRESHCLAM=no (don't try to download the official
# ClamAV signatures when /var/lib/clamav has none).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
HOME_DIR="${MAILGUARD_HOME:-$REPO_ROOT/.mailguard}"
LISTEN="${MAILGUARD_LISTEN:-127.0.0.1:2525}"
WEB_LISTEN="${MAILGUARD_WEB_LISTEN:-127.0.0.1:8025}"
say() { printf '[quickstart] %s\n' "$*"; }
IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
SUDO=""
[ "$IS_ROOT" -eq 1 ] || SUDO="sudo"

# --- 1. system packages: Python, swaks, clamd, spamd (contrib/install-deps.sh run) -----
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "installing python3 (3.11 or later is needed)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq \
        install --no-install-recommends python3
fi
bash contrib/install-deps.sh run

# --- 2. mailguard in .venv, the store ----------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv .venv"
    python3 -m venv .venv
fi
say "installing mailguard into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

mkdir -p "$HOME_DIR/spool"
HOME_DIR="$(cd "$HOME_DIR" && pwd)"
# clamd and spamd run from here: under /tmp where AppArmor confines clamd (Debian's
# profile allows /tmp/**), or where the socket paths would be too long.
SCAN_DIR="$HOME_DIR/scanners"
if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] \
        || [ "${#SCAN_DIR}" -gt 90 ]; then
    SCAN_DIR="/tmp/mailguard-scanners-$(printf '%s' "$HOME_DIR" | md5sum | cut -c1-10)"
fi
CONTROL="$HOME_DIR/control.sock"
[ "${#CONTROL}" -le 100 ] || CONTROL="$SCAN_DIR/control.sock"
# spamd reads its SQL user preferences from the daemon's own store. As root, spamd runs
# as debian-spamd, which must reach the database: a checkout in /root is out of its reach.
STORE_DB="$HOME_DIR/mailguard.db"
SPAMD_USER=debian-spamd
id "$SPAMD_USER" >/dev/null 2>&1 || SPAMD_USER=nobody
if [ "$IS_ROOT" -eq 1 ] && ! su -s /bin/sh "$SPAMD_USER" -c "test -x '$HOME_DIR'" 2>/dev/null
then
    mkdir -p "$SCAN_DIR"
    STORE_DB="$SCAN_DIR/mailguard.db"
    say "note: spamd's user $SPAMD_USER cannot enter $HOME_DIR: the store is $STORE_DB"
fi
STORE="sqlite+aiosqlite:///$STORE_DB"
say "initialising the store $STORE_DB"
.venv/bin/mailguard db upgrade --store "$STORE"

# --- 3. ClamAV signatures: the official ones, else a test database -----------------------
official_present() {
    { [ -s /var/lib/clamav/main.cvd ] || [ -s /var/lib/clamav/main.cld ]; } \
        && { [ -s /var/lib/clamav/daily.cvd ] || [ -s /var/lib/clamav/daily.cld ]; }
}
if ! official_present && [ "${MAILGUARD_FRESHCLAM:-yes}" != no ] && [ "$IS_ROOT" -eq 1 ] \
        && command -v freshclam >/dev/null && [ ! -e "$HOME_DIR/freshclam.failed" ]; then
    say "no official ClamAV signatures in /var/lib/clamav: trying freshclam (at most 2 min)"
    if ! timeout 120 freshclam --quiet >"$HOME_DIR/freshclam.log" 2>&1 || ! official_present
    then
        touch "$HOME_DIR/freshclam.failed"  # don't wait for it on every start
        say "freshclam could not download them (offline?): $HOME_DIR/freshclam.log"
    fi
fi

# --- 4. our own clamd and spamd (contrib/scanners.sh), stopped when we stop ---------------
DAEMON_PID=""
WEB_PID=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$WEB_PID" ] && kill -0 "$WEB_PID" 2>/dev/null; then
        kill -TERM "$WEB_PID" 2>/dev/null || true
        wait "$WEB_PID" 2>/dev/null || true
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true  # transactions in flight still need scanners
    fi
    say "stopping clamd and spamd"
    bash contrib/scanners.sh stop "$SCAN_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say "starting clamd and spamd in $SCAN_DIR"
SCANNERS_SIGNATURES=auto SCANNERS_PREFS_DB="$STORE_DB" PYTHON=.venv/bin/python \
    bash contrib/scanners.sh start "$SCAN_DIR"
# shellcheck disable=SC1091
. "$SCAN_DIR/scanners.env"

# --- 5. the configuration: the example + our listener, spool, store, scanners, socket ----
CONFIG="$HOME_DIR/mailguard.toml"
{
    echo "# Written by contrib/quickstart.sh on every start, from contrib/mailguard.example.toml"
    echo "# (edit that, or copy this file and run: mailguard serve --config COPY)."
} >"$CONFIG"
.venv/bin/python contrib/toml_set.py contrib/mailguard.example.toml "$CONFIG.tmp" \
    "server.listen=[\"$LISTEN\"]" \
    "delivery.spool=\"$HOME_DIR/spool\"" \
    "store.url=\"$STORE\"" \
    "clamd.enabled=true" \
    "clamd.servers=[\"unix:$SCANNERS_CLAMD_SOCKET\"]" \
    "spamd.servers=[\"unix:$SCANNERS_SPAMD_SOCKET\"]" \
    "control.socket=\"$CONTROL\"" \
    "web.listen=\"$WEB_LISTEN\"" \
    "web.cookie_secure=false" \
    "quarantine.directory=\"$HOME_DIR/quarantine\"" \
    "alerts.to=\"postmaster@example.com\"" \
    "alerts.scanner_down_s=60" \
    "delivery.qmail_queue=\"$REPO_ROOT/tests/tools/recording_qmail_queue.py\""
cat "$CONFIG.tmp" >>"$CONFIG" && rm -f "$CONFIG.tmp"
.venv/bin/mailguard config check --config "$CONFIG" >/dev/null 2>&1 \
    || .venv/bin/mailguard config check --config "$CONFIG"  # shows why, and stops us
# QMAILQUEUE mail (qmail-hooks/qmail-queue) goes, once scanned, to the daemon's
# qmail-queue: here a stand-in (no qmail on this machine is touched) that stores each
# message as <n>.msg + <n>.env in $HOME_DIR/queue.
mkdir -p "$HOME_DIR/queue"
export RECORD_DIR="$HOME_DIR/queue"
cat >"$HOME_DIR/env" <<EOF
# . $HOME_DIR/env   — the mailguard commands for this quickstart in your shell
export PATH="$REPO_ROOT/.venv/bin:\$PATH"
export MAILGUARD_CONFIG="$CONFIG"
EOF
# Test material, built from pieces so that no file in the tree is itself a match; and a
# message + envelope to feed the QMAILQUEUE wrapper as qmail-smtpd would.
printf '%s%s%s%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$' 'EICAR-STANDARD-' 'ANTIVIRUS-' \
    'TEST-FILE!$H+H*' >"$HOME_DIR/eicar.com"
printf '%s%s\n' 'XJS*C4JDBQADN1.NSBN3*2IDNEN*' 'GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X' \
    >"$HOME_DIR/gtube.txt"
{ printf 'From: alice@example.org\nTo: joe@example.com\nSubject: invoice\n\n'
  cat "$HOME_DIR/eicar.com"; echo; } >"$HOME_DIR/virus.msg"
printf 'Falice@example.org\0Tjoe@example.com\0Tann@example.com\0\0' >"$HOME_DIR/virus.env"

H="$HOME_DIR"
S="$H/spool"
if [ "$SCANNERS_SIGNATURES_USED" = official ]; then
    say "clamd uses the official ClamAV signatures ($SCANNERS_CLAMD_DB)."
else
    say "clamd uses a TEST signature database: it detects only the EICAR test file and"
    say "  ClamAV's clam.exe test file, NOT real viruses (no official signatures in"
    say "  /var/lib/clamav: run freshclam when online, then restart the quickstart)."
fi
# A mail user for the web page: joe@example.com with a password made up here, once.
if [ ! -s "$HOME_DIR/joe.password" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' \
        >"$HOME_DIR/joe.password")
fi
.venv/bin/mailguard account passwd joe@example.com --store "$STORE" \
    <"$HOME_DIR/joe.password" >/dev/null
# ... and the server admin, admin@example.com (the web page's admin pages: domains,
# users, overrides, greylisting, panic switch), made the same way.
if [ ! -s "$HOME_DIR/admin.password" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' \
        >"$HOME_DIR/admin.password")
fi
.venv/bin/mailguard account passwd admin@example.com --store "$STORE" \
    <"$HOME_DIR/admin.password" >/dev/null
.venv/bin/mailguard role grant admin@example.com '*' --store "$STORE" >/dev/null
cat <<MSG
[quickstart] the web page for mail users: http://$WEB_LISTEN/  (plain HTTP: this machine only)
[quickstart]   log in as joe@example.com, password: $(cat "$HOME_DIR/joe.password")
[quickstart]   the server admin: admin@example.com, password: $(cat "$HOME_DIR/admin.password")
[quickstart] spamd reads per-user SpamAssassin preferences from the store ($STORE_DB).
[quickstart] starting: mailguard serve --config $CONFIG   (listening on $LISTEN)
[quickstart] Try it from another terminal, in $REPO_ROOT:
[quickstart]   . $H/env                    # PATH (mailguard) and MAILGUARD_CONFIG
[quickstart] ordinary mail -> 250, in $S/example.com/postmaster/new:
[quickstart]   swaks --server $LISTEN --from you@example.net --to postmaster@example.com
[quickstart] a virus -> "554 5.7.1 message refused: virus ... found", delivered to nobody; three
[quickstart] warnings: recipient joe, sender alice (local), admin ($S/<domain>/<user>/new):
[quickstart]   swaks --server $LISTEN --from alice@example.org --to joe@example.com --attach @$H/eicar.com
[quickstart] spam filtering is off until enabled for a domain (or a user); then GTUBE is
[quickstart] tagged [SPAM] for joe, goes to ann's box ann-spam@, and bob's threshold lets it pass:
[quickstart]   qmail-hooks/spamfilter enable example.com
[quickstart]   qmail-hooks/spamfilter enable ann@example.com --action user-box
[quickstart]   mailguard spampref set bob@example.com required_score 2000
[quickstart]   swaks --server $LISTEN --from you@example.net --to joe@example.com,ann@example.com,bob@example.com --body @$H/gtube.txt
[quickstart]   grep -H '^Subject\|^X-Spam-Flag' $S/example.com/*/new/*
[quickstart] through QMAILQUEUE (as qmail-smtpd runs it: message on fd 0, envelope on fd 1):
[quickstart]   qmail-hooks/qmail-queue <$H/virus.msg 1<$H/virus.env; echo "exit \$?"   -> exit 31
[quickstart]   accepted mail lands in the stand-in qmail queue $H/queue (<n>.msg, <n>.env)
[quickstart] relaying: 127.0.0.1 may relay in this config, 127.0.0.2 is a stranger:
[quickstart]   swaks --server $LISTEN --to someone@foreign.test                              -> 250
[quickstart]   swaks --server $LISTEN --to someone@foreign.test --local-interface 127.0.0.2  -> 553
[quickstart] a scanner down -> 451, nothing accepted; a minute later one alert mail to
[quickstart] postmaster ($S/example.com/postmaster/new; the admin page lists it), then restart this:
[quickstart]   bash contrib/scanners.sh stop $SCAN_DIR
[quickstart] the mail flow: log in as admin@example.com, "Mail flow" (/stats); spam kept in
[quickstart] quarantine: joe picks "keep in my quarantine" on his settings page
[quickstart] stop with Ctrl-C (SIGTERM): transactions in flight finish, then clamd and spamd stop.
MSG
.venv/bin/mailguard web --config "$CONFIG" &
WEB_PID=$!
.venv/bin/mailguard serve --config "$CONFIG" &
DAEMON_PID=$!
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=""
exit "$rc"
