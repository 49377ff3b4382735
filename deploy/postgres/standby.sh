#!/bin/bash
# The compose `replica` profile's hot standby: on first start, a base backup of the primary
# (`pg_basebackup -R` writes standby.signal and primary_conninfo), then PostgreSQL as the
# primary runs it, streaming and answering reads. The API uses it through DATABASE_REPLICA_URLS.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h postgres -U "$PRIMARY_USER" -q; do sleep 1; done
    pg_basebackup -h postgres -U "$PRIMARY_USER" -D "$PGDATA" -R -X stream -c fast
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
fi
exec gosu postgres postgres \
    -c config_file=/etc/postgresql/postgresql.conf \
    -c hba_file="$PGDATA/pg_hba.conf" \
    -c ident_file="$PGDATA/pg_ident.conf" \
    -c hot_standby=on
