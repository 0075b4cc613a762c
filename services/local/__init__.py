"""`delinkcious up` and the servers it shares with the test suite.

`runtime` runs one `up` (`LocalRuntime`, and `up(argv)`, the command); `options` is its command line;
`secrets` the secret files in the data directory; `wiring` the command and environment of each service;
`supervisor` the service processes; `status` the status table; `processes` child processes and pid
files; and `servers` PostgreSQL, NATS, Redis and the local identity provider, one module each.
"""
