# Shell helpers shared by contrib/test-services.sh and contrib/scanners.sh (sourced, not
# run): probes, readiness waits, starting and stopping daemons by recorded pid.
# The sourcing script sets LOG_PREFIX, and DIR (where <name>.pid files live) before
# calling launch / stop_pid; READY_TIMEOUT and PYTHON have defaults.
# shellcheck shell=bash

READY_TIMEOUT="${READY_TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"
LOG_PREFIX="${LOG_PREFIX:-service}"

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$LOG_PREFIX" "$*" >&2; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# Run a command as a service user when root, else as ourselves.
as_user() {
    local user="$1"; shift
    if [ "$IS_ROOT" -eq 1 ]; then
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
    # Alive = exists and is not a zombie: daemons outlive the starting script, get
    # reparented to PID 1, and some init processes (containers, CI VMs) reap them only
    # every few seconds.
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
            printf '[%s] ERROR: %s exited during start-up; last log lines (%s):\n' \
                "$LOG_PREFIX" "$name" "$logfile" >&2
            show_log "$logfile"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf '[%s] ERROR: %s not ready after %ss; last log lines (%s):\n' \
                "$LOG_PREFIX" "$name" "$READY_TIMEOUT" "$logfile" >&2
            show_log "$logfile"
            return 1
        fi
        sleep 0.05
    done
}

launch() {
    # launch <name> <logfile> <cmd...>: background, detached from our stdio, pid recorded
    # in $DIR/<name>.pid.
    local name="$1" logfile="$2"; shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

stop_pid() {
    # stop_pid <name>: SIGTERM the pid recorded in $DIR/<name>.pid, wait up to 15 s, then
    # SIGKILL.
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
