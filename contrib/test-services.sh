#!/usr/bin/env bash
# Start/stop the REAL services the mailguard test suite talks to:
#   PostgreSQL, clamd, spamd (SQL user prefs on SQLite) and rbldnsd (test DNS zones).
#
#   contrib/test-services.sh start|stop|restart|status|env
#
# State lives in ${MAILGUARD_TEST_DIR:-/tmp/mailguard-test} (under /tmp because Debian's
# AppArmor profile for clamd allows /tmp/**). Ports are picked free at start time unless
# set with MAILGUARD_TEST_{PG,CLAMD,SPAMD,DNS}_PORT. `start` writes <dir>/services.env
# (`export VAR=value` lines) that tests/services.py reads when the variables are not set.
# Everything binds to 127.0.0.1 only.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${MAILGUARD_TEST_DIR:-/tmp/mailguard-test}"
ENV_FILE="$DIR/services.env"
READY_TIMEOUT="${MAILGUARD_TEST_READY_TIMEOUT:-60}"
ZONES_SRC="$REPO_ROOT/tests/data/dns"
PYTHON="${PYTHON:-python3}"

LOG_PREFIX=test-services
# shellcheck source=contrib/service-lib.sh
. "$REPO_ROOT/contrib/service-lib.sh"
# clamd and spamd: contrib/scanners.sh (shared with the quickstart)
SCANNERS="$REPO_ROOT/contrib/scanners.sh"

pg_bindir() {
    local d
    # Highest installed major version.
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        die "PostgreSQL (initdb) not found: run contrib/install-deps.sh"
    fi
}

# --- protocol probes -----------------------------------------------------------------

probe_dns() {
    local port="$1" out
    out="$(dig @127.0.0.1 -p "$port" 2.0.0.127.bl.test A +short +time=1 +tries=1 2>/dev/null)" \
        || return 1
    [ "$out" = "127.0.0.2" ]
}
probe_pg() {
    local port="$1"
    "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d mailguard_test -t 2
}

# --- configuration -------------------------------------------------------------------

prepare_zones() {
    local d="$DIR/zones"
    [ -d "$ZONES_SRC" ] || die "zone sources not found: $ZONES_SRC"
    rm -rf "$d"
    mkdir -p "$d"
    cp "$ZONES_SRC"/*.ip4set "$ZONES_SRC"/*.ip6trie "$ZONES_SRC"/*.dnset \
        "$ZONES_SRC"/*.generic "$d/"
    chmod 755 "$d"
    chmod 644 "$d"/*
}

prepare_pg() {
    local d="$DIR/pg"
    mkdir -p "$d"
    own postgres: "$d"
    chmod 700 "$d"
    if [ ! -s "$d/data/PG_VERSION" ]; then
        local t
        t="$(now)"
        rm -rf "$d/data"
        as_user postgres "$(pg_bindir)/initdb" -D "$d/data" -A trust -U postgres -E UTF8 \
            --no-locale -N >"$DIR/pg-initdb.log" 2>&1 \
            || { show_log "$DIR/pg-initdb.log"; die "initdb failed"; }
        log "postgresql initdb in $(elapsed "$t")s"
    else
        log "postgresql: reusing the cluster in $d/data"
    fi
}

# --- start / stop --------------------------------------------------------------------

all_running() {
    [ -s "$ENV_FILE" ] || return 1
    local name
    for name in clamd spamd rbldnsd; do
        pid_alive "$(read_pid "$DIR/$name.pid")" || return 1
    done
    [ -s "$DIR/pg/data/postmaster.pid" ] || return 1
    (cmd_status) >/dev/null 2>&1
}

pg_port_from_url() {
    # postgresql+asyncpg://postgres@127.0.0.1:PORT/mailguard_test -> PORT
    local url="$MAILGUARD_TEST_PG_URL"
    url="${url##*@127.0.0.1:}"
    echo "${url%%/*}"
}

cmd_start() {
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if all_running; then
        log "services already running in $DIR (reusing; use 'restart' for fresh ones)"
        cat "$ENV_FILE"
        return 0
    fi
    # Anything half-running from an earlier start is stopped first.
    cmd_stop >/dev/null 2>&1 || true
    rm -f "$ENV_FILE"

    command -v clamd >/dev/null || die "clamd not found: run contrib/install-deps.sh"
    command -v spamd >/dev/null || die "spamd not found: run contrib/install-deps.sh"
    command -v rbldnsd >/dev/null || die "rbldnsd not found: run contrib/install-deps.sh"
    command -v dig >/dev/null || die "dig not found: run contrib/install-deps.sh"

    PG_PORT="${MAILGUARD_TEST_PG_PORT:-$(free_port)}"
    CLAMD_PORT="${MAILGUARD_TEST_CLAMD_PORT:-$(free_port)}"
    SPAMD_PORT="${MAILGUARD_TEST_SPAMD_PORT:-$(free_port)}"
    DNS_PORT="${MAILGUARD_TEST_DNS_PORT:-$(free_port)}"
    # Ephemeral picks are independent: make sure no two services got the same port.
    local tries=0
    while [ "$(printf '%s\n' "$PG_PORT" "$CLAMD_PORT" "$SPAMD_PORT" "$DNS_PORT" | sort -u | wc -l)" -ne 4 ]; do
        tries=$((tries + 1))
        [ "$tries" -le 20 ] || die "could not pick 4 distinct ports (check MAILGUARD_TEST_*_PORT)"
        [ -n "${MAILGUARD_TEST_DNS_PORT:-}" ] || DNS_PORT="$(free_port)"
        [ -n "${MAILGUARD_TEST_SPAMD_PORT:-}" ] || SPAMD_PORT="$(free_port)"
        [ -n "${MAILGUARD_TEST_CLAMD_PORT:-}" ] || CLAMD_PORT="$(free_port)"
    done
    local t0 t_dns t_pg scanners_pid
    t0="$(now)"
    # A failed start leaves nothing running.
    trap 'rc=$?; if [ "$rc" -ne 0 ]; then log "start failed: stopping what was started"; cmd_stop >/dev/null 2>&1 || true; fi' EXIT
    prepare_zones
    prepare_pg
    log "prepared configs in $(elapsed "$t0")s"

    # Start everything in parallel, then wait for each. clamd (test signatures only) and
    # spamd (SQL prefs in a fresh database with mailguard's schema): contrib/scanners.sh.
    rm -f "$DIR/spamd-prefs.sqlite" "$DIR/spamd-prefs.sqlite-wal" "$DIR/spamd-prefs.sqlite-shm"
    SCANNERS_SIGNATURES=test SCANNERS_CLAMD_TCP="127.0.0.1:$CLAMD_PORT" \
        SCANNERS_SPAMD_TCP="127.0.0.1:$SPAMD_PORT" SCANNERS_PREFS_DB="$DIR/spamd-prefs.sqlite" \
        SCANNERS_SPAMD_USER="${MAILGUARD_TEST_SPAMD_USER:-}" \
        READY_TIMEOUT="$READY_TIMEOUT" PYTHON="$PYTHON" \
        bash "$SCANNERS" start "$DIR" &
    scanners_pid=$!
    t_dns="$(now)"
    local rbl_user=()
    [ "$IS_ROOT" -eq 1 ] && rbl_user=(-u rbldns)
    launch rbldnsd "$DIR/rbldnsd.log" rbldnsd -n "${rbl_user[@]}" -b "127.0.0.1/$DNS_PORT" \
        -w "$DIR/zones" -p "$DIR/rbldnsd.daemon.pid" -a \
        bl.test:ip4set:bl.test.ip4set bl.test:ip6trie:bl.test.ip6trie \
        bl2.test:ip4set:bl2.test.ip4set dbl.test:dnset:dbl.test.dnset \
        spf.test:generic:spf.test.generic
    t_pg="$(now)"
    as_user postgres "$(pg_bindir)/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" \
        -o "-k $DIR/pg -c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off" \
        -w -t "$READY_TIMEOUT" start >"$DIR/pg-ctl.log" 2>&1 \
        || { show_log "$DIR/pg/postgres.log"; show_log "$DIR/pg-ctl.log"; die "PostgreSQL did not start"; }
    as_user postgres "$(pg_bindir)/dropdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        --if-exists mailguard_test >/dev/null 2>&1 || true
    as_user postgres "$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres mailguard_test
    wait_ready postgresql "" "$DIR/pg/postgres.log" probe_pg "$PG_PORT" \
        || die "PostgreSQL not ready"
    log "postgresql ready on 127.0.0.1:$PG_PORT in $(elapsed "$t_pg")s (start + fresh database)"

    wait_ready rbldnsd "$(read_pid "$DIR/rbldnsd.pid")" "$DIR/rbldnsd.log" probe_dns "$DNS_PORT" \
        || die "rbldnsd not ready"
    log "rbldnsd ready on 127.0.0.1:$DNS_PORT/udp in $(elapsed "$t_dns")s"

    wait "$scanners_pid" || die "clamd/spamd did not start (contrib/scanners.sh, above)"

    cat >"$ENV_FILE.tmp" <<EOF
export MAILGUARD_TEST_DIR=$DIR
export MAILGUARD_TEST_PG_URL=postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/mailguard_test
export MAILGUARD_TEST_CLAMD_SOCKET=$DIR/clamd.sock
export MAILGUARD_TEST_CLAMD_TCP=127.0.0.1:$CLAMD_PORT
export MAILGUARD_TEST_SPAMD_TCP=127.0.0.1:$SPAMD_PORT
export MAILGUARD_TEST_SPAMD_SOCKET=$DIR/spamd.sock
export MAILGUARD_TEST_SPAMD_PREFS=$DIR/spamd-prefs.sqlite
export MAILGUARD_TEST_DNS=127.0.0.1:$DNS_PORT
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    trap - EXIT
    log "all services up in $(elapsed "$t0")s; environment in $ENV_FILE:"
    cat "$ENV_FILE"
}

cmd_stop() {
    [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    bash "$SCANNERS" stop "$DIR"
    stop_pid rbldnsd
    if [ -s "$DIR/pg/data/postmaster.pid" ]; then
        log "stopping postgresql (pg_ctl stop -m fast)"
        as_user postgres "$(pg_bindir)/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null 2>&1 \
            || log "pg_ctl stop failed (already stopped?)"
    fi
    rm -f "$ENV_FILE" "$DIR/clamd.sock" "$DIR/spamd.sock" "$DIR/rbldnsd.daemon.pid"
    log "stopped"
}

cmd_status() {
    [ -s "$ENV_FILE" ] || { log "not started ($ENV_FILE missing)"; return 1; }
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    local rc=0
    if probe_pg "$(pg_port_from_url)"; then
        log "postgresql  OK    $MAILGUARD_TEST_PG_URL"
    else
        log "postgresql  DOWN  $MAILGUARD_TEST_PG_URL"; rc=1
    fi
    if probe_clamd "$MAILGUARD_TEST_CLAMD_SOCKET" && probe_clamd "$MAILGUARD_TEST_CLAMD_TCP"; then
        log "clamd       OK    $MAILGUARD_TEST_CLAMD_SOCKET $MAILGUARD_TEST_CLAMD_TCP"
    else
        log "clamd       DOWN  $MAILGUARD_TEST_CLAMD_SOCKET $MAILGUARD_TEST_CLAMD_TCP"; rc=1
    fi
    if probe_spamd "$MAILGUARD_TEST_SPAMD_TCP" && probe_spamd "$MAILGUARD_TEST_SPAMD_SOCKET"; then
        log "spamd       OK    $MAILGUARD_TEST_SPAMD_TCP $MAILGUARD_TEST_SPAMD_SOCKET"
    else
        log "spamd       DOWN  $MAILGUARD_TEST_SPAMD_TCP $MAILGUARD_TEST_SPAMD_SOCKET"; rc=1
    fi
    if probe_dns "${MAILGUARD_TEST_DNS##*:}"; then
        log "rbldnsd     OK    $MAILGUARD_TEST_DNS (udp)"
    else
        log "rbldnsd     DOWN  $MAILGUARD_TEST_DNS (udp)"; rc=1
    fi
    return "$rc"
}

cmd_env() {
    [ -s "$ENV_FILE" ] || die "not started ($ENV_FILE missing): run $0 start"
    cat "$ENV_FILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|restart|status|env" >&2; exit 2 ;;
esac
