#!/bin/bash
# Runs once, when the primary's data directory is first initialised (docker-entrypoint-initdb.d):
# lets the streaming replica of the compose `replica` profile connect for replication, with a
# password, from the compose network only.
set -euo pipefail
echo "host replication ${POSTGRES_USER} samenet scram-sha-256" >> "$PGDATA/pg_hba.conf"
