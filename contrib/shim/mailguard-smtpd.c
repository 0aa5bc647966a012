/*
 * mailguard-smtpd: the compiled drop-in for qmail-smtpd (docs/drop-in.md, "The compiled
 * shim"). It does what mailguard/lean/smtpd.py does on its common path — tcpserver's
 * fd 0 = fd 1 = the client's TCP socket, MAILGUARD_CONTROL set — without Python's
 * start-up: one request line {"v":1,"op":"smtp","env":{...}} on the control socket with
 * fd 0 as SCM_RIGHTS (docs/control-socket.md), `taken` within 5 s, then `done`.
 *
 * The environment is encoded byte for byte as protocol.encode(dict(os.environ)) in the
 * Python shim: Python's view of the environment (first of duplicate names, entries without
 * '=' skipped, the LC_CTYPE its C-locale coercion adds), UTF-8 with surrogate escapes
 * (\udcXX) for bytes that are not UTF-8, ensure_ascii escapes.
 *
 * Whenever it cannot be sure to behave identically it execs the Python shim itself
 * ($MAILGUARD_PYTHON -I -S -c ... $MAILGUARD_LIB, as qmail-hooks/qmail-smtpd does):
 * -h/--help, MAILGUARD_CONTROL unset or too long for a unix socket address, fd 0 / fd 1
 * not one socket (the pipes relay), a locale whose codeset is not UTF-8. On a failure
 * (421) it computes the host name itself only when no configuration file can be opened;
 * otherwise it execs a Python snippet that runs lean/smtpd.py's own _fail (and
 * _hang_up) — no second attempt at the daemon, no second 5 s wait.
 *
 * Build: contrib/shim/build.sh (C99, libc only). Exit status: 0 served; 1 unavailable.
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

extern char **environ;

#define ACK_TIMEOUT_MS 5000     /* protocol.ACK_TIMEOUT_S */
#define CONNECT_TIMEOUT_MS 5000 /* smtpd.CONNECT_TIMEOUT_S */
#define MAX_LINE (1 << 20)      /* protocol.MAX_LINE */
#define EXIT_SERVED 0
#define EXIT_UNAVAILABLE 1
#define DEFAULT_PYTHON "/usr/bin/python3"
#define DEFAULT_CONFIG_PATH "/etc/mailguard/mailguard.toml"
#define DEFAULT_QMAIL_ME "/var/qmail/control/me"
#define UNAVAILABLE " service temporarily unavailable (#4.3.0)\r\n"

/* The Python shim, exactly as qmail-hooks/qmail-smtpd runs it. */
static const char RUN_SNIPPET[] =
    "\nimport sys; sys.path.insert(0, sys.argv[1])\n"
    "from mailguard.lean.smtpd import main; sys.exit(main())";
static const char HELP_SNIPPET[] =
    "\nimport sys; sys.path.insert(0, sys.argv[1])\n"
    "import mailguard.lean.smtpd as m; sys.stdout.write(m.__doc__ or \"\")";
/* The failure path with lean/smtpd.py's own host-name logic: argv[2] the reason, argv[3]
 * "1" to hang up the client connection afterwards. */
static const char FAIL_SNIPPET[] =
    "\nimport os, sys; sys.path.insert(0, sys.argv[1])\n"
    "from mailguard.lean import smtpd\n"
    "code = smtpd._fail(dict(os.environ), sys.argv[2])\n"
    "if sys.argv[3] == \"1\": smtpd._hang_up()\n"
    "sys.exit(code)";

static const char *g_argv0 = "mailguard-smtpd";
static struct sigaction g_old_sigpipe;

/* ------------------------------------------------------------------ small helpers */

static void log_line(const char *a, const char *b, const char *c)
{
    /* stderr goes to the tcpserver service's log, as lean/smtpd.py's _log */
    const char *parts[4] = {"mailguard smtpd: ", a, b ? b : "", c ? c : ""};
    char buf[4096];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        size_t len = strlen(parts[i]);
        if (len > sizeof buf - 1 - n)
            len = sizeof buf - 1 - n;
        memcpy(buf + n, parts[i], len);
        n += len;
    }
    buf[n++] = '\n';
    ssize_t ignored = write(2, buf, n);
    (void)ignored;
}

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_put(buf_t *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

/* One UTF-8 sequence at s (n > 0 bytes) as Python's decoder reads it: > 0 the length of a
 * valid sequence (*cp its code point); < 0 minus the length of the maximal invalid
 * subpart (what one U+FFFD replaces; surrogateescape replaces each of its bytes). */
static int utf8_next(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], v, lo = 0x80, hi = 0xbf;
    int need;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        v = c & 0x0f;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f; /* no encoded surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return -1;
    }
    size_t i = 1;
    for (int k = 0; k < need; k++, i++) {
        if (i >= n || s[i] < lo || s[i] > hi)
            return -(int)i;
        v = (v << 6) | (s[i] & 0x3f);
        lo = 0x80;
        hi = 0xbf;
    }
    *cp = v;
    return (int)i;
}

static const char HEX[] = "0123456789abcdef";

static int put_u(buf_t *b, unsigned u)
{
    char e[6] = {'\\', 'u', HEX[(u >> 12) & 15], HEX[(u >> 8) & 15], HEX[(u >> 4) & 15],
                 HEX[u & 15]};
    return buf_put(b, e, 6);
}

/* A JSON string as _json.encode_basestring_ascii writes the str that os.environ makes of
 * these bytes (UTF-8, surrogateescape). */
static int put_json_string(buf_t *b, const unsigned char *s, size_t n)
{
    if (buf_reserve(b, n * 6 + 2) < 0) /* the longest escape: 6 bytes per input byte */
        return -1;
    b->data[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], cp;
        if (c < 0x80) {
            i++;
            if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
                b->data[b->len++] = (char)c;
                continue;
            }
            const char *esc = NULL;
            switch (c) {
            case '\\': esc = "\\\\"; break;
            case '"': esc = "\\\""; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            default: break;
            }
            if (esc != NULL)
                buf_put(b, esc, 2);
            else
                put_u(b, c);
            continue;
        }
        int len = utf8_next(s + i, n - i, &cp);
        if (len > 0) {
            if (cp >= 0x10000) {
                cp -= 0x10000;
                put_u(b, 0xd800 | (cp >> 10));
                put_u(b, 0xdc00 | (cp & 0x3ff));
            } else {
                put_u(b, cp);
            }
            i += (size_t)len;
        } else { /* surrogateescape: each byte of the invalid part is U+DC80 + byte */
            put_u(b, 0xdc00 | c);
            i++;
        }
    }
    b->data[b->len++] = '"';
    return 0;
}

/* ---------------------------------------------------------- the Python fallbacks */

static const char *python_path(void)
{
    const char *p = getenv("MAILGUARD_PYTHON"); /* sh's ${MAILGUARD_PYTHON:-...} */
    return p != NULL && *p ? p : DEFAULT_PYTHON;
}

/* MAILGUARD_LIB, else the directory above qmail-hooks/: this binary is
 * qmail-hooks/bin/mailguard-smtpd, the sh shim's default is qmail-hooks/.. */
static char *lib_path(void)
{
    const char *lib = getenv("MAILGUARD_LIB");
    if (lib != NULL && *lib)
        return strdup(lib);
    char self[4096];
    const char *me = g_argv0;
    if (strchr(me, '/') == NULL) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            return strdup("..");
        self[n] = '\0';
        me = self;
    }
    size_t dir = (size_t)(strrchr(me, '/') - me);
    char *out = malloc(dir + 7);
    if (out == NULL)
        return NULL;
    memcpy(out, me, dir);
    memcpy(out + dir, "/../..", 7);
    return out;
}

/* exec `python -I -S -c snippet LIB extra...`; returns only when exec failed. */
static int exec_python(const char *snippet, const char *extra1, const char *extra2)
{
    const char *python = python_path();
    char *lib = lib_path();
    if (lib == NULL)
        return 126;
    char *argv[] = {(char *)python, "-I", "-S", "-c", (char *)snippet, lib,
                    (char *)extra1, (char *)extra2, NULL};
    sigaction(SIGPIPE, &g_old_sigpipe, NULL);
    execvp(python, argv); /* sh's exec searches PATH too */
    int err = errno;
    log_line("cannot run ", python, err == ENOENT ? ": not found" : ": cannot execute");
    free(lib);
    return err == ENOENT ? 127 : 126;
}

/* --------------------------------------------------------------- the 421 line */

/* Append text as settings._safe does: characters other than '!'..'~' become '?'; a valid
 * non-ASCII character is one '?', and so is each maximal invalid part (`replace`) or each
 * invalid byte (`surrogateescape`). */
static int put_safe(buf_t *b, const unsigned char *s, size_t n, int surrogateescape)
{
    size_t i = 0;
    while (i < n) {
        unsigned cp;
        int len = utf8_next(s + i, n - i, &cp);
        char ch = (len == 1 && cp > ' ' && cp < 0x7f) ? (char)cp : '?';
        if (buf_put(b, &ch, 1) < 0)
            return -1;
        i += len > 0 ? (size_t)len : (surrogateescape ? 1 : (size_t)-len);
    }
    return 0;
}

/* settings.hostname() when no configuration file can be opened (then `[server] hostname`
 * and `qmail_control_dir` are None): the first line of /var/qmail/control/me, else
 * TCPLOCALHOST, else localhost. NULL: a configuration file is there — Python decides. */
static char *native_hostname(void)
{
    const char *cfg = getenv("MAILGUARD_CONFIG");
    if (cfg == NULL || !*cfg)
        cfg = DEFAULT_CONFIG_PATH;
    int fd = open(cfg, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd >= 0) {
        struct stat st;
        int dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode); /* Python: IsADirectoryError */
        close(fd);
        if (!dir)
            return NULL;
    }
    buf_t host = {0};
    char line[8192];
    size_t n = 0;
    fd = open(DEFAULT_QMAIL_ME, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        for (;;) { /* readline(): up to and with the first \n */
            if (n == sizeof line) {
                close(fd);
                return NULL; /* a first line this long: leave it to Python */
            }
            ssize_t r = read(fd, line + n, sizeof line - n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                n = 0; /* OSError: "" */
                break;
            }
            if (r == 0)
                break;
            char *nl = memchr(line + n, '\n', (size_t)r);
            n += (size_t)r;
            if (nl != NULL) {
                n = (size_t)(nl - line) + 1;
                break;
            }
        }
        close(fd);
        while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\n'))
            n--;
    }
    if (put_safe(&host, (const unsigned char *)line, n, 0) < 0)
        return NULL;
    if (host.len == 0) {
        const char *local = getenv("TCPLOCALHOST");
        if (local != NULL && put_safe(&host, (const unsigned char *)local, strlen(local), 1) < 0)
            return NULL;
    }
    if (host.len == 0 && buf_put(&host, "localhost", 9) < 0)
        return NULL;
    if (buf_put(&host, "", 1) < 0)
        return NULL;
    return host.data;
}

/* lean/smtpd.py's _fail (+ _hang_up when `hang`): log, our 421 on fd 1, exit status 1. */
static int fail(const char *why, const char *detail, int hang)
{
    char reason[4096];
    snprintf(reason, sizeof reason, "%s%s", why, detail ? detail : "");
    char *host = native_hostname();
    if (host == NULL) {
        exec_python(FAIL_SNIPPET, reason, hang ? "1" : "0");
        host = strdup("localhost"); /* no Python to ask: still never serve unfiltered */
    }
    log_line(reason, NULL, NULL);
    buf_t line = {0};
    if (host != NULL && buf_put(&line, "421 ", 4) == 0 && buf_put(&line, host, strlen(host)) == 0
        && buf_put(&line, UNAVAILABLE, strlen(UNAVAILABLE)) == 0) {
        ssize_t ignored = write(1, line.data, line.len); /* one write, as os.write */
        (void)ignored;
    }
    if (hang)
        shutdown(0, SHUT_RDWR); /* not a socket: nothing to do, as _hang_up */
    return EXIT_UNAVAILABLE;
}

/* ------------------------------------------------------------- the environment */

/* Python's file-system encoding for os.environ is UTF-8 here: the LC_CTYPE locale of
 * the environment has a UTF-8 codeset, or is C/POSIX (UTF-8 mode, and PEP 538's
 * coercion, which sets LC_CTYPE in the environment: done here the same way, so the
 * request carries it as Python's would). 0: another codeset — Python decides. */
static int python_locale_is_utf8(void)
{
    setlocale(LC_CTYPE, ""); /* Python's pre-configuration does this; failure leaves C */
    const char *loc = setlocale(LC_CTYPE, NULL);
    const char *all = getenv("LC_ALL");
    if (loc != NULL && strcmp(loc, "C") == 0 && (all == NULL || !*all)) {
        static const char *targets[] = {"C.UTF-8", "C.utf8", "UTF-8"};
        for (size_t i = 0; i < 3; i++) {
            if (setlocale(LC_CTYPE, targets[i]) == NULL)
                continue;
            const char *codeset = nl_langinfo(CODESET);
            if (codeset == NULL || !*codeset) {
                setlocale(LC_CTYPE, "");
                continue;
            }
            if (setenv("LC_CTYPE", targets[i], 1) != 0)
                return 0;
            return 1;
        }
        setlocale(LC_CTYPE, "C");
        return 1; /* C locale: UTF-8 mode */
    }
    if (loc != NULL && (strcmp(loc, "C") == 0 || strcmp(loc, "POSIX") == 0))
        return 1;
    const char *codeset = nl_langinfo(CODESET);
    return codeset != NULL && (strcasecmp(codeset, "UTF-8") == 0 || strcasecmp(codeset, "UTF8") == 0);
}

/* {"v":1,"op":"smtp","env":{...}}\n, as protocol.encode of lean/smtpd.py's request. */
static int build_request(buf_t *b)
{
    if (buf_put(b, "{\"v\":1,\"op\":\"smtp\",\"env\":{", 26) < 0)
        return -1;
    size_t count = 0;
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue; /* os.environ skips it */
        size_t klen = (size_t)(eq - *e);
        int seen = 0; /* the first of duplicate names wins, as in os.environ */
        for (char **p = environ; p != e; p++)
            if (strncmp(*p, *e, klen) == 0 && (*p)[klen] == '=') {
                seen = 1;
                break;
            }
        if (seen)
            continue;
        if ((count++ && buf_put(b, ",", 1) < 0)
            || put_json_string(b, (const unsigned char *)*e, klen) < 0
            || buf_put(b, ":", 1) < 0
            || put_json_string(b, (const unsigned char *)eq + 1, strlen(eq + 1)) < 0)
            return -1;
    }
    return buf_put(b, "}}\n", 3);
}

/* ----------------------------------------------------------- the control socket */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` on fd until deadline (< 0: forever). 0 ready, -1 timed out. */
static int wait_fd(int fd, short events, long deadline)
{
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            long left = deadline - now_ms();
            if (left <= 0)
                return -1;
            timeout = (int)left;
        }
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, timeout);
        if (r > 0)
            return 0;
        if (r == 0)
            return -1;
        if (errno != EINTR)
            return 0; /* let the call itself report the error */
    }
}

/* Python's socket-with-timeout calls: each call waits up to timeout_ms (< 0: forever).
 * >= 0 bytes; -1 an error (errno); -2 timed out. */
static ssize_t timed_send(int s, struct msghdr *msg, int timeout_ms)
{
    long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        ssize_t r = sendmsg(s, msg, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_fd(s, POLLOUT, deadline) < 0)
            return -2;
    }
}

static ssize_t timed_recv(int s, char *buf, size_t n, int timeout_ms)
{
    long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        ssize_t r = recv(s, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_fd(s, POLLIN, deadline) < 0)
            return -2;
    }
}

/* str(OSError) / str(TimeoutError) as Python writes them into the log line. */
static const char *exc_text(ssize_t r, int err)
{
    static char text[256];
    if (r == -2)
        return "timed out";
    snprintf(text, sizeof text, "[Errno %d] %s", err, strerror(err));
    return text;
}

/* ------------------------------------------------------------------ the replies */

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    size_t error_at, error_end; /* the raw text of the "error" value, for the log */
} parser_t;

enum { V_FALSY, V_TRUTHY };

/* A JSON string at p->i (after the opening quote), as _json.scanstring(strict=True):
 * *empty whether it decodes to "", key (when not NULL) its ASCII text for comparison
 * (up to 15 characters; longer or non-ASCII: not one of ours). 0 ok, -1 malformed. */
static int parse_string(parser_t *p, int *empty, char *key)
{
    size_t klen = 0, chars = 0;
    int key_ok = key != NULL;
    for (;;) {
        if (p->i >= p->n)
            return -1;
        unsigned char c = (unsigned char)p->s[p->i++];
        unsigned ch = c;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (p->i >= p->n)
                return -1;
            char e = p->s[p->i++];
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u':
                ch = 0;
                for (int k = 0; k < 4; k++) {
                    if (p->i >= p->n)
                        return -1;
                    char h = p->s[p->i++];
                    const char *d = strchr(HEX, h >= 'A' && h <= 'F' ? h + 32 : h);
                    if (h == '\0' || d == NULL)
                        return -1;
                    ch = ch * 16 + (unsigned)(d - HEX);
                }
                break;
            default:
                return -1;
            }
        }
        chars++;
        if (key_ok) {
            if (ch == 0 || ch >= 0x80 || klen >= 15)
                key_ok = 0;
            else
                key[klen++] = (char)ch;
        }
    }
    if (key != NULL && key_ok)
        key[klen] = '\0';
    else if (key != NULL)
        strcpy(key, "\x01"); /* matches none of ours */
    *empty = chars == 0;
    return 0;
}

/* One value of protocol._parse; *truth its Python truth value. top: record the values
 * of "error" and "taken" in the object. */
static int parse_value(parser_t *p, int *truth, int *error, int *taken, int top)
{
    if (p->i >= p->n)
        return -1;
    char c = p->s[p->i];
    if (c == '"') {
        int empty;
        p->i++;
        if (parse_string(p, &empty, NULL) < 0)
            return -1;
        *truth = !empty;
        return 0;
    }
    if (c == '{') {
        if (++p->depth > 900) /* RecursionError, in Python */
            return -1;
        p->i++;
        if (p->i >= p->n)
            return -1;
        if (p->s[p->i] == '}') {
            p->i++;
            *truth = V_FALSY;
            p->depth--;
            return 0;
        }
        for (;;) {
            char key[16];
            int empty, value;
            if (p->i >= p->n || p->s[p->i] != '"')
                return -1;
            p->i++;
            if (parse_string(p, &empty, key) < 0)
                return -1;
            if (p->i >= p->n || p->s[p->i] != ':')
                return -1;
            p->i++;
            size_t at = p->i;
            if (parse_value(p, &value, NULL, NULL, 0) < 0)
                return -1;
            if (top && strcmp(key, "error") == 0) {
                *error = value; /* a repeated key: the last one counts, as in a dict */
                p->error_at = at;
                p->error_end = p->i;
            }
            if (top && strcmp(key, "taken") == 0)
                *taken = value;
            if (p->i >= p->n)
                return -1;
            if (p->s[p->i] == '}') {
                p->i++;
                *truth = V_TRUTHY;
                p->depth--;
                return 0;
            }
            if (p->s[p->i] != ',')
                return -1;
            p->i++;
        }
    }
    static const char *words[] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (p->n - p->i >= len && memcmp(p->s + p->i, words[w], len) == 0) {
            p->i += len;
            *truth = w == 0;
            return 0;
        }
    }
    size_t j = c == '-' ? p->i + 1 : p->i;
    int nonzero = 0;
    while (j < p->n && p->s[j] >= '0' && p->s[j] <= '9')
        nonzero |= p->s[j++] != '0';
    if (j == p->i || (j == p->i + 1 && c == '-'))
        return -1;
    p->i = j;
    *truth = nonzero;
    return 0;
}

static int py_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static char g_error_text[512]; /* the last "error" value, as JSON */

/* protocol.decode: 0 and the truth of reply["error"] / reply["taken"], or -1
 * (ProtocolError). */
static int decode_reply(const char *line, size_t n, int *error, int *taken)
{
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)line[k] >= 0x80)
            return -1; /* not ASCII */
    while (n > 0 && py_space(line[0])) {
        line++;
        n--;
    }
    while (n > 0 && py_space(line[n - 1]))
        n--;
    parser_t p = {line, n, 0, 0, 0, 0};
    int truth;
    *error = *taken = 0;
    if (n == 0 || line[0] != '{')
        return -1;
    if (parse_value(&p, &truth, error, taken, 1) < 0 || p.i != n)
        return -1;
    size_t at = p.error_at, len = p.error_end - p.error_at;
    if (len >= 2 && line[at] == '"' && memchr(line + at, '\\', len) == NULL) {
        at++; /* a plain string: its text, as Python logs it */
        len -= 2;
    }
    if (len > sizeof g_error_text - 1)
        len = sizeof g_error_text - 1;
    memcpy(g_error_text, line + at, len);
    g_error_text[len] = '\0';
    return 0;
}

typedef struct {
    int sock;
    char *buf;
    size_t len;
} reader_t;

/* protocol.LineReader.read: 1 a reply, 0 closed first (None), -1 OSError (errno),
 * -2 timed out, -3 ProtocolError. */
static int read_reply(reader_t *r, int timeout_ms, int *error, int *taken)
{
    char *nl;
    while ((nl = r->len ? memchr(r->buf, '\n', r->len) : NULL) == NULL) {
        char *grown = realloc(r->buf, r->len + 65536);
        if (grown == NULL)
            return -3;
        r->buf = grown;
        ssize_t got = timed_recv(r->sock, r->buf + r->len, 65536, timeout_ms);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return 0;
        r->len += (size_t)got;
        if (r->len > MAX_LINE)
            return -3;
    }
    size_t linelen = (size_t)(nl - r->buf);
    int rc = decode_reply(r->buf, linelen, error, taken);
    r->len -= linelen + 1;
    memmove(r->buf, nl + 1, r->len);
    return rc < 0 ? -3 : 1;
}

/* ------------------------------------------------------------------------ main */

static int one_socket(void)
{
    struct stat st0, st1;
    if (fstat(0, &st0) != 0 || fstat(1, &st1) != 0)
        return 0;
    return S_ISSOCK(st0.st_mode) && st0.st_dev == st1.st_dev && st0.st_ino == st1.st_ino;
}

static int fallback(void)
{
    return exec_python(RUN_SNIPPET, NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc > 0 && argv[0] != NULL)
        g_argv0 = argv[0];
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN; /* as Python: a write to a gone client is EPIPE, not death */
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &g_old_sigpipe);

    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
        return exec_python(HELP_SNIPPET, NULL, NULL);
    const char *path = getenv("MAILGUARD_CONTROL");
    struct sockaddr_un addr;
    if (path == NULL || !*path || strlen(path) >= sizeof addr.sun_path)
        return fallback(); /* the configuration file names the socket: Python reads it */
    if (!one_socket())
        return fallback(); /* pipes: lean/smtpd.py relays them */
    if (!python_locale_is_utf8())
        return fallback();
    buf_t req = {0};
    if (build_request(&req) < 0)
        return fallback();

    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        char msg[4096];
        snprintf(msg, sizeof msg, "cannot reach the daemon at %s: %s", path, strerror(errno));
        return fail(msg, NULL, 0);
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path));
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if (connect(s, (struct sockaddr *)&addr, alen) != 0) {
        int err = errno;
        const char *why = strerror(err);
        if (err == EINPROGRESS) { /* not for unix sockets on Linux; as Python if it were */
            socklen_t el = sizeof err;
            if (wait_fd(s, POLLOUT, now_ms() + CONNECT_TIMEOUT_MS) < 0)
                why = "timed out";
            else if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
                why = NULL;
            else
                why = strerror(err);
        }
        if (why != NULL) {
            close(s);
            char msg[4096];
            snprintf(msg, sizeof msg, "cannot reach the daemon at %s: %s", path, why);
            return fail(msg, NULL, 0);
        }
    }

    /* the request, fd 0 on its first bytes */
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } anc;
    memset(&anc, 0, sizeof anc);
    struct iovec iov = {req.data, req.len};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = anc.space;
    msg.msg_controllen = sizeof anc.space;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    int client = 0;
    memcpy(CMSG_DATA(cm), &client, sizeof client);
    size_t sent = 0;
    while (sent < req.len) {
        ssize_t r = timed_send(s, &msg, ACK_TIMEOUT_MS);
        if (r < 0) {
            int err = errno;
            close(s);
            return fail("control socket: ", exc_text(r, err), 0);
        }
        sent += (size_t)r;
        iov.iov_base = req.data + sent; /* the rest without descriptors, as sock.send */
        iov.iov_len = req.len - sent;
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
    }

    reader_t reader = {s, NULL, 0};
    int error = 0, taken = 0;
    int rc = read_reply(&reader, ACK_TIMEOUT_MS, &error, &taken);
    if (rc <= 0) { /* stopped or hung daemon, or closed before taking the connection */
        char why[512];
        if (rc == 0)
            snprintf(why, sizeof why, "closed without taking the connection");
        else
            snprintf(why, sizeof why, "no acknowledgement within 5 s (%s)",
                     rc == -3 ? "bad message" : exc_text(rc, errno));
        error = 1;
        close(s); /* first: a daemon waking up later cannot send `taken`, drops it */
        return fail("the daemon refused the connection: ", why, 1);
    }
    if (error) {
        close(s);
        return fail("the daemon refused the connection: ", g_error_text, 1);
    }
    if (!taken) { /* neither: lean/smtpd.py counts it served */
        close(s);
        return EXIT_SERVED;
    }
    /* the session lasts as long as the daemon's timeouts allow */
    rc = read_reply(&reader, -1, &error, &taken);
    int err = errno;
    close(s);
    if (rc == -3)
        return fail("control socket: ", "bad message", 0);
    if (rc < 0)
        return fail("control socket: ", exc_text(rc, err), 0);
    if (rc == 0) {
        /* The daemon closed without a word: it may have adopted the connection and died.
         * Whatever it wrote stands; we must not add to it. */
        log_line("the daemon closed the control connection during the session", NULL, NULL);
        return EXIT_UNAVAILABLE;
    }
    if (error)
        return fail("the daemon refused the connection: ", g_error_text, 0);
    return EXIT_SERVED;
}
