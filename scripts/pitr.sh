#!/usr/bin/env bash
# pgBackRest for the docker-compose deployment: WAL is archived continuously (archive_command in
# docker-compose.yml); this takes backups and restores to a point in time.
#
#   scripts/pitr.sh init                 once: create the stanza, check archiving, full backup
#   scripts/pitr.sh backup full|diff|incr
#   scripts/pitr.sh info
#   scripts/pitr.sh point NAME           mark a named restore point (pg_create_restore_point)
#   scripts/pitr.sh restore --type=time '--target=2026-11-26 10:15:00+00'
#   scripts/pitr.sh restore --type=name --target=NAME
#
# restore stops the API and PostgreSQL, restores into the data volume (--delta: only changed
# files), and starts PostgreSQL, which replays WAL to the target and promotes.
set -euo pipefail
cd "$(dirname "$0")/.."
pgbackrest() { docker compose exec -T -u postgres postgres pgbackrest --stanza=lakehouse "$@"; }
case "${1:-}" in
    init)
        pgbackrest stanza-create
        pgbackrest check
        pgbackrest --type=full backup
        ;;
    backup)
        pgbackrest --type="${2:?full, diff or incr}" backup
        ;;
    info)
        pgbackrest info
        ;;
    point)
        name=${2:?a restore point name}
        [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "name: letters, digits, _ and -" >&2; exit 1; }
        docker compose exec -T -u postgres postgres \
            psql -U lakehouse_owner -d lakehouse_db -v ON_ERROR_STOP=1 -c "SELECT pg_create_restore_point('$name')"
        ;;
    restore)
        shift
        docker compose stop api pgbouncer postgres
        docker compose run --rm --no-deps -u postgres --entrypoint pgbackrest postgres \
            --stanza=lakehouse --delta --target-action=promote "$@" restore
        docker compose up -d postgres pgbouncer api
        ;;
    *)
        sed -n '2,14p' "$0"
        exit 1
        ;;
esac
