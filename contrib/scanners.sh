#!/usr/bin/env bash
# Start/stop a private clamd and spamd (not the system's services), for the quickstart
# (contrib/quickstart.sh) and the test services (contrib/test-services.sh).
#
#   contrib/scanners.sh start|stop|status DIR
#
# Everything lives in DIR: clamd.sock, spamd.sock, clamd.pid / spamd.pid (the processes
# this script started), clamd/ (config, test signatures, log), spamd/ (site config, log),
# and scanners.env (`NAME=value` lines: the sockets, the signatures in use). Keep DIR under
# /tmp on machines where AppArmor confines clamd (Debian's profile allows /tmp/**).
#
# Environment:
#   SCANNERS_SIGNATURES  test (default): a test database that detects only the EICAR test
#                        string and ClamAV's clam.exe test file; auto: the official
#                        database of SCANNERS_OFFICIAL_DB when it is there, else test
#   SCANNERS_OFFICIAL_DB where freshclam keeps the official database (/var/lib/clamav)
#   SCANNERS_CLAMD_TCP, SCANNERS_SPAMD_TCP   127.0.0.1:PORT to listen on TCP as well
#                        (default: unix sockets only)
#   SCANNERS_PREFS_DB    SQLite file spamd reads SQL user preferences from (user_scores_dsn;
#                        default DIR/spamd-prefs.sqlite): created with mailguard's schema
#                        when missing; spamd's user gets access to it and its directory
#   SCANNERS_SPAMD_USER  spamd's user when run as root (default debian-spamd, else nobody)
#   READY_TIMEOUT        seconds to wait for each (default 60; 300 with the official db)
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
LOG_PREFIX=scanners
# shellcheck source=contrib/service-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/service-lib.sh"

CLAM_TESTFILE=/usr/share/clamav-testfiles/clam.exe
SIGNATURES="${SCANNERS_SIGNATURES:-test}"
OFFICIAL_DB="${SCANNERS_OFFICIAL_DB:-/var/lib/clamav}"
CLAMD_TCP="${SCANNERS_CLAMD_TCP:-}"
SPAMD_TCP="${SCANNERS_SPAMD_TCP:-}"

official_present() {
    { [ -s "$OFFICIAL_DB/main.cvd" ] || [ -s "$OFFICIAL_DB/main.cld" ]; } \
        && { [ -s "$OFFICIAL_DB/daily.cvd" ] || [ -s "$OFFICIAL_DB/daily.cld" ]; }
}

write_test_signatures() {
    local db="$1"
    mkdir -p "$db"
    # EICAR test string built from pieces so this script is not itself a signature match.
    "$PYTHON" - "$db/mailguard-test.ndb" <<'PY'
import sys
parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-", "TEST-FILE!$H+H*"]
eicar = "".join(parts).encode("ascii")
with open(sys.argv[1], "w") as f:
    f.write(f"Eicar-Test-Signature-Mailguard:0:*:{eicar.hex()}\n")
PY
    if [ -r "$CLAM_TESTFILE" ]; then
        sigtool --md5 "$CLAM_TESTFILE" | awk -F: '{ print $1 ":" $2 ":ClamAV-Test-File-Mailguard" }' \
            >"$db/mailguard-test.hdb"
    else
        log "warning: $CLAM_TESTFILE missing (package clamav-testfiles): no .hdb signature"
    fi
}

prepare_clamd() {
    local d="$DIR/clamd" db
    rm -rf "$d"
    mkdir -p "$d/tmp"
    if [ "$SIGNATURES" = auto ] && official_present; then
        USED=official
        db="$OFFICIAL_DB"
    else
        USED=test
        db="$d/db"
        write_test_signatures "$db"
    fi
    CLAMD_DB="$db"
    {
        echo "Foreground yes"
        echo "LocalSocket $DIR/clamd.sock"
        echo "LocalSocketMode 666"
        echo "FixStaleSocket yes"
        if [ -n "$CLAMD_TCP" ]; then
            echo "TCPSocket ${CLAMD_TCP##*:}"
            echo "TCPAddr ${CLAMD_TCP%:*}"
        fi
        echo "DatabaseDirectory $db"
        echo "TemporaryDirectory $d/tmp"
        echo "PidFile $d/clamd.pid"
        echo "LogFile $d/clamd.log"
        echo "LogTime yes"
        echo "StreamMaxLength 25M"
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

create_prefs_db() {
    # The prefs database has mailguard's schema (its userpref table is SpamAssassin's), so
    # spamd reads what mailguard writes.
    local db="$1"
    if "$PYTHON" -c 'import mailguard.store.migrate' >/dev/null 2>&1; then
        # = `mailguard db upgrade --store sqlite:///...`, without loading any configuration
        "$PYTHON" -c 'import asyncio, sys; from mailguard.store.migrate import upgrade
asyncio.run(upgrade(sys.argv[1]))' "sqlite:///$db" \
            || die "creating the mailguard schema in $db failed"
        return 0
    fi
    # SpamAssassin's userpref table alone (sql/userpref_sqlite.sql semantics).
    "$PYTHON" - "$db" <<'PY'
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
}

prepare_spamd() {
    local d="$DIR/spamd" sql_cf
    rm -rf "$d"
    mkdir -p "$d/siteconfig" "$d/home"
    cp /etc/spamassassin/*.pre "$d/siteconfig/"
    # The lines contrib/spamd-sql.cf documents: @GLOBAL, then the domain's @~domain rows,
    # then the user's (wins).
    sql_cf="$(grep '^user_scores_sql_custom_query ' "$(dirname "${BASH_SOURCE[0]}")/spamd-sql.cf")"
    cat >"$d/siteconfig/local.cf" <<EOF
# mailguard's private spamd: offline, deterministic
report_safe 0
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
use_razor2 0
use_pyzor 0
user_scores_dsn DBI:SQLite:dbname=$PREFS_DB
# user_scores_sql_username / user_scores_sql_password are left at their (empty) defaults:
# written without a value SpamAssassin logs "missing value" config errors (fails --lint).
$sql_cf
EOF
    [ -e "$PREFS_DB" ] || create_prefs_db "$PREFS_DB"
    # mailguard keeps SQLite in WAL mode: spamd's user must be able to create the
    # -wal/-shm files next to the database, and to write them.
    if [ "$IS_ROOT" -eq 1 ]; then
        local group prefs_dir
        group="$(id -g "$SPAMD_USER")"
        prefs_dir="$(dirname "$PREFS_DB")"
        chgrp "$group" "$prefs_dir" "$PREFS_DB"
        chmod g+rwx "$prefs_dir"
        chmod g+rw "$PREFS_DB"
        for f in "$PREFS_DB-wal" "$PREFS_DB-shm"; do
            if [ -e "$f" ]; then chgrp "$group" "$f"; chmod g+rw "$f"; fi
        done
        if ! as_user "$SPAMD_USER" test -r "$PREFS_DB" -a -w "$prefs_dir"; then
            die "spamd's user $SPAMD_USER cannot reach $PREFS_DB (a parent directory is not" \
                "searchable by it): keep the database in a directory it can reach"
        fi
    fi
    own "$SPAMD_USER:" "$d"
}

cmd_start() {
    command -v clamd >/dev/null || die "clamd not found (package clamav-daemon)"
    command -v spamd >/dev/null || die "spamd not found (package spamd / spamassassin)"
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    cmd_stop >/dev/null 2>&1 || true
    if [ "$IS_ROOT" -eq 1 ]; then
        SPAMD_USER="${SCANNERS_SPAMD_USER:-debian-spamd}"
        id "$SPAMD_USER" >/dev/null 2>&1 || SPAMD_USER=nobody
    else
        SPAMD_USER="$(id -un)"
    fi
    PREFS_DB="${SCANNERS_PREFS_DB:-$DIR/spamd-prefs.sqlite}"
    trap 'rc=$?; if [ "$rc" -ne 0 ]; then cmd_stop >/dev/null 2>&1 || true; fi' EXIT
    prepare_clamd
    prepare_spamd
    if [ "$IS_ROOT" -eq 1 ]; then  # spamd (as SPAMD_USER) creates its socket in DIR
        chgrp "$(id -g "$SPAMD_USER")" "$DIR"
        chmod 775 "$DIR"
    fi
    if [ "$USED" = official ]; then READY_TIMEOUT=$((READY_TIMEOUT > 300 ? READY_TIMEOUT : 300)); fi

    local t_clamd t_spamd spamd_tcp=()
    t_clamd="$(now)"
    launch clamd "$DIR/clamd/clamd.stderr" clamd -c "$DIR/clamd/clamd.conf"
    t_spamd="$(now)"
    if [ -n "$SPAMD_TCP" ]; then spamd_tcp=(--listen="$SPAMD_TCP"); fi
    launch spamd "$DIR/spamd/spamd.log" spamd -u "$SPAMD_USER" -x -q -L -H "$DIR/spamd/home" \
        --siteconfigpath="$DIR/spamd/siteconfig" "${spamd_tcp[@]}" \
        --socketpath="$DIR/spamd.sock" --pidfile="$DIR/spamd/spamd.pid" \
        --syslog=stderr --max-children=2 --min-children=1

    wait_ready spamd "$(read_pid "$DIR/spamd.pid")" "$DIR/spamd/spamd.log" \
        probe_spamd "$DIR/spamd.sock" || die "spamd not ready"
    if [ -n "$SPAMD_TCP" ] && ! probe_spamd "$SPAMD_TCP"; then
        show_log "$DIR/spamd/spamd.log"
        die "spamd does not answer on $SPAMD_TCP"
    fi
    log "spamd ready on $DIR/spamd.sock${SPAMD_TCP:+ and $SPAMD_TCP} in $(elapsed "$t_spamd")s" \
        "(SQL preferences: $PREFS_DB)"
    if [ "$USED" = official ]; then log "clamd: loading the official signatures (slow)"; fi
    wait_ready clamd "$(read_pid "$DIR/clamd.pid")" "$DIR/clamd/clamd.log" \
        probe_clamd "$DIR/clamd.sock" || die "clamd not ready"
    if [ -n "$CLAMD_TCP" ] && ! probe_clamd "$CLAMD_TCP"; then
        show_log "$DIR/clamd/clamd.log"
        die "clamd does not answer on $CLAMD_TCP"
    fi
    log "clamd ready on $DIR/clamd.sock${CLAMD_TCP:+ and $CLAMD_TCP} in $(elapsed "$t_clamd")s" \
        "($USED signatures: $CLAMD_DB)"
    cat >"$DIR/scanners.env" <<EOF
SCANNERS_CLAMD_SOCKET=$DIR/clamd.sock
SCANNERS_SPAMD_SOCKET=$DIR/spamd.sock
SCANNERS_SIGNATURES_USED=$USED
SCANNERS_CLAMD_DB=$CLAMD_DB
SCANNERS_PREFS_DB=$PREFS_DB
EOF
    trap - EXIT
}

cmd_stop() {
    [ -d "$DIR" ] || return 0
    stop_pid spamd
    stop_pid clamd
    rm -f "$DIR/clamd.sock" "$DIR/spamd.sock" "$DIR/scanners.env"
}

cmd_status() {
    local rc=0
    if probe_clamd "$DIR/clamd.sock"; then log "clamd  OK    $DIR/clamd.sock"
    else log "clamd  DOWN  $DIR/clamd.sock"; rc=1; fi
    if probe_spamd "$DIR/spamd.sock"; then log "spamd  OK    $DIR/spamd.sock"
    else log "spamd  DOWN  $DIR/spamd.sock"; rc=1; fi
    return "$rc"
}

[ $# -eq 2 ] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
