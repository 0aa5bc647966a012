// bench/compare.py's glue for Haraka, loaded first (config/plugins). It changes where
// Haraka's work goes, not how much of it there is:
//  - DNS: dns-list creates its own node:dns Resolver when it is loaded, from
//    /etc/resolv.conf; here every Resolver (and node's default one) asks the bench's
//    rbldnsd instead (MAILGUARD_BENCH_DNS = "127.0.0.1:PORT", a non-53 port is fine).
//  - smtp-source connects from 127.0.0.1, which Haraka marks private and dns-list and
//    greylist then skip: the client is treated as a remote one, like the other servers do.
//  - the core's per-connection rDNS lookup is skipped: no other server in the comparison
//    does one (Haraka does less work than by default, not more).
const dns = require('node:dns')

const servers = [process.env.MAILGUARD_BENCH_DNS]
if (!servers[0]) throw new Error('MAILGUARD_BENCH_DNS is not set')
dns.setServers(servers)
const BaseResolver = dns.promises.Resolver
dns.promises.Resolver = class extends BaseResolver {
    constructor(options) {
        super(options)
        this.setServers(servers)
    }
}

exports.hook_connect_init = function (next, connection) {
    connection.remote.is_private = false
    connection.remote.is_local = false
    next()
}

exports.hook_lookup_rdns = function (next) {
    next(OK) // remote.host = 'Unknown': greylist keys on the IP, like the others
}
