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
CLAM_TESTFILE=/usr/share/clamav-testfiles/clam.exe
PYTHON="${PYTHON:-python3}"

log() { printf '[test-services] %s\n' "$*"; }
die() { printf '[test-services] ERROR: %s\n' "$*" >&2; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Run a command as a service user when root, else as ourselves.
as_user() {
    local user="$1"; shift
    if [ "$IS_ROOT" -eq 1 ]; then
        # runuser/su: keep it simple and portable; quote the arguments for sh -c.
        local cmd
        printf -v cmd '%q ' "$@"
        su -s /bin/sh "$user" -c "$cmd"
    else
        "$@"
    fi
}

# chown only when root (a non-root developer runs every service as themselves).
own() {
    local owner="$1"; shift
    if [ "$IS_ROOT" -eq 1 ]; then chown -R "$owner" "$@"; fi
}

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

free_port() {
    # A port free for both TCP and UDP on 127.0.0.1 (rbldnsd is UDP, the rest TCP).
    "$PYTHON" - <<'PY'
import socket
for _ in range(50):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    u.close()
    t.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}

# --- protocol probes -----------------------------------------------------------------

# probe_stream <unix-socket-path|host:port> <request (python bytes literal)> <expected substring>
probe_stream() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import ast, socket, sys
target, request, expected = sys.argv[1], ast.literal_eval(sys.argv[2]), sys.argv[3]
try:
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(target)
    else:
        host, port = target.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=2)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        if expected.encode() in data:
            break
    s.close()
except OSError:
    sys.exit(1)
sys.exit(0 if expected.encode() in data else 1)
PY
}

probe_clamd() { probe_stream "$1" "b'zPING\\0'" PONG; }
probe_spamd() { probe_stream "$1" "b'PING SPAMC/1.5\\r\\n\\r\\n'" PONG; }
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

show_log() {
    # Error lines first (they scroll out of a plain tail), then the last lines.
    local logfile="$1"
    [ -r "$logfile" ] || { echo "(no log at $logfile)" >&2; return 0; }
    if grep -qiE 'error|fatal|cannot|failed' "$logfile"; then
        echo "--- error lines of $logfile:" >&2
        grep -iE 'error|fatal|cannot|failed' "$logfile" | tail -n 10 >&2
    fi
    echo "--- last lines of $logfile:" >&2
    tail -n 20 "$logfile" >&2
}

pid_alive() {
    # Alive = exists and is not a zombie: daemons outlive this script, get reparented to
    # PID 1, and some init processes (containers, CI VMs) reap them only every few seconds.
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local state=""
    if [ -r "/proc/$1/stat" ]; then
        state="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
    fi
    [ "$state" != "Z" ]
}
read_pid() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

# wait_ready <name> <pid (or empty)> <logfile> <probe cmd...>
wait_ready() {
    local name="$1" pid="$2" logfile="$3"; shift 3
    local deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            printf '[test-services] ERROR: %s exited during start-up; last log lines (%s):\n' \
                "$name" "$logfile" >&2
            show_log "$logfile"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf '[test-services] ERROR: %s not ready after %ss; last log lines (%s):\n' \
                "$name" "$READY_TIMEOUT" "$logfile" >&2
            show_log "$logfile"
            return 1
        fi
        sleep 0.05
    done
}

# --- configuration -------------------------------------------------------------------

prepare_clamd() {
    local d="$DIR/clamd"
    rm -rf "$d"
    mkdir -p "$d/db" "$d/tmp"
    # EICAR test string built from pieces so this script is not itself a signature match.
    "$PYTHON" - "$d/db/mailguard-test.ndb" <<'PY'
import sys
parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-", "TEST-FILE!$H+H*"]
eicar = "".join(parts).encode("ascii")
with open(sys.argv[1], "w") as f:
    f.write(f"Eicar-Test-Signature-Mailguard:0:*:{eicar.hex()}\n")
PY
    if [ -r "$CLAM_TESTFILE" ]; then
        sigtool --md5 "$CLAM_TESTFILE" | awk -F: '{ print $1 ":" $2 ":ClamAV-Test-File-Mailguard" }' \
            >"$d/db/mailguard-test.hdb"
    else
        log "warning: $CLAM_TESTFILE missing (package clamav-testfiles): no .hdb signature"
    fi
    {
        echo "Foreground yes"
        echo "LocalSocket $DIR/clamd.sock"
        echo "LocalSocketMode 666"
        echo "FixStaleSocket yes"
        echo "TCPSocket $CLAMD_PORT"
        echo "TCPAddr 127.0.0.1"
        echo "DatabaseDirectory $d/db"
        echo "TemporaryDirectory $d/tmp"
        echo "PidFile $d/clamd.pid"
        echo "LogFile $d/clamd.log"
        echo "LogTime yes"
        echo "StreamMaxLength 10M"
        echo "ScanMail yes"
        echo "ScanArchive yes"
        echo "SelfCheck 0"
        echo "Bytecode no"
        echo "MaxThreads 4"
        # No `User`: clamd keeps the invoking user. Debian's clamd drops to `User` *before*
        # binding LocalSocket, so as user clamav it could not create <dir>/clamd.sock, and
        # it could not read files that root-run tests hand it by path (zSCAN).
    } >"$d/clamd.conf"
}

prepare_spamd() {
    local d="$DIR/spamd"
    rm -rf "$d" "$DIR/spamd-prefs.sqlite"
    mkdir -p "$d/siteconfig" "$d/home"
    cp /etc/spamassassin/*.pre "$d/siteconfig/"
    cat >"$d/siteconfig/local.cf" <<EOF
# mailguard test instance: offline, deterministic
report_safe 0
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
use_razor2 0
use_pyzor 0
user_scores_dsn DBI:SQLite:dbname=$DIR/spamd-prefs.sqlite
# user_scores_sql_username / user_scores_sql_password are left at their (empty) defaults:
# written without a value SpamAssassin logs "missing value" config errors (fails --lint).
# As contrib/spamd-sql.cf: @GLOBAL, then the domain's @~domain rows, then the user's (wins).
user_scores_sql_custom_query SELECT preference, value FROM _TABLE_ WHERE username = _USERNAME_ OR username = '@GLOBAL' OR username = '@~' || _DOMAIN_ ORDER BY CASE WHEN username = '@GLOBAL' THEN 0 WHEN username LIKE '@~%' THEN 1 ELSE 2 END, prefid
EOF
    # The prefs database has mailguard's schema (its userpref table is SpamAssassin's), so
    # tests prove that spamd reads what mailguard writes. mailguard keeps SQLite in WAL
    # mode: spamd's user must be able to create the -wal/-shm files next to it.
    if "$PYTHON" -c 'import mailguard.store.migrate' >/dev/null 2>&1; then
        # = `mailguard db upgrade --store sqlite:///...`, without loading any configuration
        "$PYTHON" -c 'import asyncio, sys; from mailguard.store.migrate import upgrade
asyncio.run(upgrade(sys.argv[1]))' "sqlite:///$DIR/spamd-prefs.sqlite" \
            || die "creating the mailguard schema in $DIR/spamd-prefs.sqlite failed"
        if [ "$IS_ROOT" -eq 1 ]; then
            chgrp "$(id -g "$SPAMD_USER")" "$DIR"
            chmod 775 "$DIR"
        fi
    else
    # SpamAssassin's userpref table (sql/userpref_sqlite.sql semantics).
    "$PYTHON" - "$DIR/spamd-prefs.sqlite" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.executescript(
    """
    CREATE TABLE userpref (
        prefid INTEGER PRIMARY KEY,
        username varchar(100) NOT NULL DEFAULT '',
        preference varchar(50) NOT NULL DEFAULT '',
        value varchar(100) NOT NULL DEFAULT ''
    );
    CREATE INDEX userpref_username ON userpref (username);
    """
)
con.commit()
con.close()
PY
    fi
    chmod 0666 "$DIR/spamd-prefs.sqlite"
    own "$SPAMD_USER:" "$d" "$DIR/spamd-prefs.sqlite"
}

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

launch() {
    # launch <name> <logfile> <cmd...>: background, detached from our stdio, pid recorded.
    local name="$1" logfile="$2"; shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

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
    if [ "$IS_ROOT" -eq 1 ]; then
        SPAMD_USER="${MAILGUARD_TEST_SPAMD_USER:-debian-spamd}"
        id "$SPAMD_USER" >/dev/null 2>&1 || SPAMD_USER=nobody
    else
        SPAMD_USER="$(id -un)"
    fi
    local t0 t_clamd t_spamd t_dns t_pg
    t0="$(now)"
    # A failed start leaves nothing running.
    trap 'rc=$?; if [ "$rc" -ne 0 ]; then log "start failed: stopping what was started"; cmd_stop >/dev/null 2>&1 || true; fi' EXIT
    prepare_clamd
    prepare_spamd
    prepare_zones
    prepare_pg
    log "prepared configs in $(elapsed "$t0")s"

    # Start everything in parallel, then wait for each.
    t_clamd="$(now)"
    launch clamd "$DIR/clamd/clamd.stderr" clamd -c "$DIR/clamd/clamd.conf"
    t_spamd="$(now)"
    launch spamd "$DIR/spamd/spamd.log" spamd -u "$SPAMD_USER" -x -q -L -H "$DIR/spamd/home" \
        --siteconfigpath="$DIR/spamd/siteconfig" --listen="127.0.0.1:$SPAMD_PORT" \
        --socketpath="$DIR/spamd.sock" --pidfile="$DIR/spamd/spamd.pid" --syslog=stderr \
        --max-children=2 --min-children=1
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

    wait_ready clamd "$(read_pid "$DIR/clamd.pid")" "$DIR/clamd/clamd.log" \
        probe_clamd "$DIR/clamd.sock" || die "clamd not ready"
    if ! probe_clamd "127.0.0.1:$CLAMD_PORT"; then
        show_log "$DIR/clamd/clamd.log"
        die "clamd does not answer on 127.0.0.1:$CLAMD_PORT"
    fi
    log "clamd ready on $DIR/clamd.sock and 127.0.0.1:$CLAMD_PORT in $(elapsed "$t_clamd")s"

    wait_ready spamd "$(read_pid "$DIR/spamd.pid")" "$DIR/spamd/spamd.log" \
        probe_spamd "127.0.0.1:$SPAMD_PORT" || die "spamd not ready"
    if ! probe_spamd "$DIR/spamd.sock"; then
        show_log "$DIR/spamd/spamd.log"
        die "spamd does not answer on $DIR/spamd.sock"
    fi
    log "spamd ready on 127.0.0.1:$SPAMD_PORT and $DIR/spamd.sock in $(elapsed "$t_spamd")s"

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

stop_pid() {
    # stop_pid <name>: SIGTERM the recorded pid, wait up to 15 s, then SIGKILL.
    local name="$1" pidfile="$DIR/$1.pid" pid i
    pid="$(read_pid "$pidfile")"
    if pid_alive "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 300); do
            pid_alive "$pid" || break
            sleep 0.05
        done
        if pid_alive "$pid"; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    stop_pid spamd
    stop_pid clamd
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
