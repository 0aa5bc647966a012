#!/usr/bin/env bash
# Install the system packages mailguard and its test suite need (Debian/Ubuntu).
# Idempotent: a machine that already has everything does no apt work at all.
set -euo pipefail

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

packages=(clamav-daemon clamav clamdscan clamav-testfiles
          spamassassin spamd spamc libdbd-sqlite3-perl libdbd-pg-perl
          rbldnsd bind9-dnsutils ucspi-tcp swaks python3-venv)

missing=()
for cmd in clamd clamdscan sigtool spamd spamc rbldnsd tcpserver swaks dig; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("command:$cmd")
done
[ -f /usr/share/clamav-testfiles/clam.exe ] || missing+=("file:clam.exe (clamav-testfiles)")
# Perl DBD drivers for spamd's SQL user preferences.
perl -MDBD::SQLite -e1 >/dev/null 2>&1 || missing+=("perl:DBD::SQLite")
perl -MDBD::Pg -e1 >/dev/null 2>&1 || missing+=("perl:DBD::Pg")
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("python3-venv")
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    log "PostgreSQL found: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
else
    packages+=(postgresql)
    missing+=("postgresql (initdb)")
fi

if [ "${#missing[@]}" -eq 0 ]; then
    log "all system dependencies present; nothing to do"
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
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y install \
    --no-install-recommends "${packages[@]}"

# With systemd the units may still be enabled/started (policy-rc.d is not honoured by
# every deb-systemd-invoke path): the tests run their own instances.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for unit in clamav-daemon clamav-freshclam spamd spamassassin rbldnsd postgresql; do
        if systemctl list-unit-files "${unit}.service" >/dev/null 2>&1 \
                && systemctl list-unit-files "${unit}.service" | grep -q "^${unit}.service"; then
            log "systemctl disable --now ${unit}"
            $SUDO systemctl disable --now "${unit}" >/dev/null 2>&1 || true
        fi
    done
else
    log "systemd not running: no units to disable"
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

log "done"
