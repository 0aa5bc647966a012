#!/bin/sh
# Build the compiled drop-in for qmail-smtpd (contrib/shim/mailguard-smtpd.c: C99, libc
# only) into qmail-hooks/bin/mailguard-smtpd, which qmail-hooks/qmail-smtpd then execs
# instead of Python (docs/drop-in.md, "The compiled shim").
#   contrib/shim/build.sh [OUTPUT]
# Uses $CC, else cc, else gcc (and $CFLAGS after ours); exit status 3 (and a message)
# when there is no compiler.
# Idempotent: nothing is done when OUTPUT is newer than the source. The binary is
# replaced by a rename, so a tcpserver starting it meanwhile never sees half a file.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$HERE/mailguard-smtpd.c"
OUT="${1:-$(cd "$HERE/../.." && pwd)/qmail-hooks/bin/mailguard-smtpd}"
CC="${CC:-}"
if [ -z "$CC" ]; then
    for c in cc gcc; do
        if command -v "$c" >/dev/null 2>&1; then CC="$c"; break; fi
    done
fi
if [ -z "$CC" ]; then
    echo "build.sh: no C compiler (cc, gcc): the Python shim stays in use" >&2
    exit 3
fi
if [ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "$0" ]; then
    echo "build.sh: $OUT is up to date"
    exit 0
fi
mkdir -p "$(dirname "$OUT")"
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
# shellcheck disable=SC2086 # $CC and $CFLAGS may carry several words, as with make
$CC -std=c99 -O2 -Wall -Wextra -Werror ${CFLAGS:-} -o "$TMP" "$SRC"
mv -f "$TMP" "$OUT"
echo "build.sh: built $OUT with $CC"
