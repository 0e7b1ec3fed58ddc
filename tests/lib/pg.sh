# pg.sh - starts a throwaway PostgreSQL cluster for a test (sourced, bash).
# pg_start DIR: initdb + pg_ctl start in DIR (socket there, TCP off), creates database
# "triage" and sets PG_URL. pg_stop: stops it. Without the server binaries (Debian's
# postgresql package) pg_start prints why and exits 77, meson's "skipped".
# A build without the PostgreSQL engine (meson option postgresql, no libpq-dev) has
# TRIAGE_POSTGRESQL=disabled in the test environment: pg_start skips (77) too.
# As root, the server runs as the "postgres" user (initdb refuses root).

pg_bin() {
    local d
    for d in "${PG_BINDIR:-}" /usr/lib/postgresql/*/bin; do
        [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

pg_as() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    PG_DIR=$1
    if [ "${TRIAGE_POSTGRESQL:-}" = disabled ]; then
        echo "SKIP: this build has no PostgreSQL engine (-Dpostgresql=disabled, or no libpq-dev)"; exit 77
    fi
    PG_BIN=$(pg_bin) || { echo "SKIP: PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package"; exit 77; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "SKIP: running as root and there is no postgres user to run the server as"; exit 77
    fi
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U triage --auth=trust -E UTF8 --locale=C \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log"; return 1; }
    # A socket in the directory only (no TCP port to collide with other tests); kept in
    # the config so that a restart (pg_ctl start) finds it again.
    printf "listen_addresses = ''\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 100\n" \
        "$PG_DIR" | pg_as tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        >/dev/null || { cat "$PG_DIR/server.log"; return 1; }
    PG_URL="postgresql:///triage?host=$PG_DIR&user=triage"
    "$PG_BIN/psql" -q -h "$PG_DIR" -U triage -d postgres -c 'CREATE DATABASE triage' >/dev/null 2>&1 \
        || pg_as "$PG_BIN/createdb" -h "$PG_DIR" -U triage triage || return 1
    export PG_URL PG_DIR PG_BIN
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] && \
        pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
    return 0
}
