#!/usr/bin/env bash
# Install the system packages mailguard and its test suite need (Debian/Ubuntu).
#   contrib/install-deps.sh [all|run|bench]
# all (default): everything the test suite talks to; run: what the quickstart runs
# (python3-venv, swaks, clamd, spamd with SQLite preferences); bench: all, plus what
# bench/compare.py drives (postfix's smtp-source/smtp-sink, preseeded "No
# configuration" and never started; gcc for the qmail-queue stand-in; redis-server, never
# started as a service, for Haraka's greylist; and Haraka 3.3.4 from npm into
# build/haraka/, pinned by bench/haraka/package-lock.json, when Node.js >= 20 and npm are
# there: the script does not install Node). At the end, with a C compiler there, it
# builds the compiled qmail-smtpd drop-in (contrib/shim/build.sh ->
# qmail-hooks/bin/mailguard-smtpd; without one the Python shim stays). Idempotent: a machine that
# already has everything does no apt or npm work at all. Package scripts start no daemons, and
# services this install enabled are disabled again (mailguard runs its own instances).
set -euo pipefail
PROFILE="${1:-all}"
case "$PROFILE" in all|run|bench) ;; *) echo "usage: $0 [all|run|bench]" >&2; exit 2 ;; esac
BENCH=0
if [ "$PROFILE" = bench ]; then BENCH=1; PROFILE=all; fi

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '[install-deps] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        log "not root and no sudo available" >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found: this script supports Debian/Ubuntu only" >&2
    exit 1
fi

packages=(clamav-daemon clamav clamav-testfiles spamassassin spamd libdbd-sqlite3-perl
          swaks python3-venv)
commands=(clamd sigtool spamd swaks)
if [ "$PROFILE" = all ]; then
    packages+=(clamdscan spamc libdbd-pg-perl rbldnsd bind9-dnsutils ucspi-tcp socat stunnel4)
    commands+=(clamdscan spamc rbldnsd tcpserver dig socat stunnel4)
    # the compiled qmail-smtpd drop-in and its tests (tests/e2e/test_dropin_native_shim.py)
    packages+=(gcc libc6-dev)
    commands+=(gcc)
fi
if [ "$PROFILE" = all ]; then  # the web page's browser tests (Selenium drives them)
    packages+=(chromium chromium-driver)
    commands+=(chromium chromedriver)
fi
if [ "$BENCH" -eq 1 ]; then
    packages+=(postfix redis-server)  # gcc (the qmail-queue stand-in): in `all`
    commands+=(smtp-source smtp-sink redis-server)
fi

# Haraka for bench/compare.py: npm ci of the pinned bench/haraka/ into build/haraka/ (git
# ignores build/), as the invoking user, no install scripts (nothing it runs needs one).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARAKA_SRC="$ROOT/bench/haraka"
HARAKA_DIR="$ROOT/build/haraka"
install_haraka() {
    [ "$BENCH" -eq 1 ] || return 0
    local want
    want="$(sed -n 's/.*"Haraka": *"\([^"]*\)".*/\1/p' "$HARAKA_SRC/package.json")"
    if [ -f "$HARAKA_DIR/node_modules/Haraka/package.json" ] \
            && grep -q "\"version\": *\"$want\"" "$HARAKA_DIR/node_modules/Haraka/package.json" \
            && cmp -s "$HARAKA_SRC/package-lock.json" "$HARAKA_DIR/package-lock.json"; then
        log "Haraka $want present in $HARAKA_DIR"
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "Haraka skipped: needs Node.js >= 20 and npm (bench/compare.py then leaves it out)"
        return 0
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -lt 20 ]; then
        log "Haraka skipped: Node.js $(node --version) is older than 20 (Haraka $want needs 20)"
        return 0
    fi
    log "npm ci Haraka $want into $HARAKA_DIR"
    mkdir -p "$HARAKA_DIR"
    cp "$HARAKA_SRC/package.json" "$HARAKA_SRC/package-lock.json" "$HARAKA_DIR/"
    (cd "$HARAKA_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}

# The compiled qmail-smtpd drop-in, built as the invoking user when a compiler is there
# (build.sh does nothing when the binary is newer than its source).
build_shim() {
    if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
        log "no C compiler (cc, gcc): qmail-hooks/qmail-smtpd keeps using the Python shim"
        return 0
    fi
    "$ROOT/contrib/shim/build.sh" || log "building the compiled qmail-smtpd shim failed: the Python shim stays in use"
}

missing=()
for cmd in "${commands[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("command:$cmd")
done
[ -f /usr/share/clamav-testfiles/clam.exe ] || missing+=("file:clam.exe (clamav-testfiles)")
if [ "$PROFILE" = all ]; then
    [ -f /usr/include/stdio.h ] || missing+=("file:/usr/include/stdio.h (libc6-dev)")
fi
# Perl DBD drivers for spamd's SQL user preferences.
perl -MDBD::SQLite -e1 >/dev/null 2>&1 || missing+=("perl:DBD::SQLite")
if [ "$PROFILE" = all ]; then
    perl -MDBD::Pg -e1 >/dev/null 2>&1 || missing+=("perl:DBD::Pg")
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("python3-venv")
if [ "$PROFILE" = run ]; then
    :
elif compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    log "PostgreSQL found: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
else
    packages+=(postgresql)
    missing+=("postgresql (initdb)")
fi

if [ "${#missing[@]}" -eq 0 ]; then
    log "all system dependencies present; nothing to do"
    install_haraka
    build_shim
    exit 0
fi

log "missing: ${missing[*]}"

# Keep package postinst scripts from starting daemons (clamd, freshclam, spamd, rbldnsd,
# postgresql) on machines with systemd or sysvinit.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    log "creating /usr/sbin/policy-rc.d (exit 101) for the duration of the install"
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        log "removing /usr/sbin/policy-rc.d"
        $SUDO rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

# Units enabled before the install are the admin's: left alone afterwards.
UNITS=(clamav-daemon clamav-freshclam spamd spamassassin rbldnsd postgresql postfix
       redis-server)
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
enabled_before=()
if have_systemd; then
    for unit in "${UNITS[@]}"; do
        systemctl is-enabled --quiet "$unit" 2>/dev/null && enabled_before+=("$unit")
    done
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update
# Install only what this distribution has (e.g. Ubuntu 22.04 ships spamd inside spamassassin).
available=()
for pkg in "${packages[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        available+=("$pkg")
    else
        log "package $pkg not available here: skipped"
    fi
done
packages=("${available[@]}")
log "apt-get install ${packages[*]}"
if [ "$BENCH" -eq 1 ]; then  # postfix only for its load tools: no MTA configured
    echo "postfix postfix/main_mailer_type select No configuration" \
        | $SUDO debconf-set-selections
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y install \
    --no-install-recommends "${packages[@]}"

# With systemd the units may still be enabled/started (policy-rc.d is not honoured by
# every deb-systemd-invoke path): the tests run their own instances.
if have_systemd; then
    for unit in "${UNITS[@]}"; do
        if [[ " ${enabled_before[*]} " == *" $unit "* ]]; then
            log "$unit was enabled before: left as it is"
            continue
        fi
        if systemctl list-unit-files "${unit}.service" >/dev/null 2>&1 \
                && systemctl list-unit-files "${unit}.service" | grep -q "^${unit}.service"; then
            log "systemctl disable --now ${unit}"
            $SUDO systemctl disable --now "${unit}" >/dev/null 2>&1 || true
        fi
    done
else
    log "systemd not running: no units to disable"
    # ... but redis-server (bench) must not come up as a service at the next boot either:
    # bench/compare.py runs its own on a loopback port.
    if [ "$BENCH" -eq 1 ] && [[ " ${missing[*]} " == *" command:redis-server "* ]]; then
        log "disabling the redis-server service at boot (sysv and systemd links)"
        if command -v systemctl >/dev/null 2>&1; then  # works offline; runs update-rc.d too
            $SUDO systemctl disable redis-server >/dev/null 2>&1 || true
        else
            $SUDO update-rc.d redis-server disable >/dev/null 2>&1 || true
        fi
    fi
fi

# spamassassin's postinst imports its sa-update key and leaves a gpg-agent behind.
if id debian-spamd >/dev/null 2>&1 && [ -d /var/lib/spamassassin/sa-update-keys ] \
        && command -v gpgconf >/dev/null 2>&1; then
    log "stopping the gpg-agent left by spamassassin's postinst"
    if [ "$(id -u)" -eq 0 ]; then
        su -s /bin/sh debian-spamd -c \
            'gpgconf --homedir /var/lib/spamassassin/sa-update-keys --kill gpg-agent' || true
    else
        sudo -u debian-spamd \
            gpgconf --homedir /var/lib/spamassassin/sa-update-keys --kill gpg-agent || true
    fi
fi

install_haraka
build_shim
log "done"
