# Sourced by .ci/run: makes a PostgreSQL server answer on 127.0.0.1:5432 and
# exports DOCDESK_TEST_POSTGRES for the tests.

postgres_url=${DOCDESK_TEST_POSTGRES:-postgresql://postgres@127.0.0.1:5432/postgres}

postgres_answers() {
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
    if command -v psql >/dev/null && postgres_answers "$postgres_url"; then
        export DOCDESK_TEST_POSTGRES=$postgres_url
        return
    fi

    if ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true

    # A fresh Debian cluster lets only the postgres system user in, through
    # the socket: give the test role a password for TCP on loopback.
    local password=docdesk-ci
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD '$password'\"" >/dev/null
    postgres_url="postgresql://postgres:$password@127.0.0.1:5432/postgres"
    for _ in $(seq 1 30); do
        postgres_answers "$postgres_url" && break
        sleep 1
    done
    postgres_answers "$postgres_url" || {
        echo "PostgreSQL did not start" >&2
        exit 1
    }
    export DOCDESK_TEST_POSTGRES=$postgres_url
}
