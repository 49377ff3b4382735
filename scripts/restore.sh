#!/usr/bin/env bash
# Restores a custom-format dump from scripts/backup.sh into a NEW database named by TARGET_URL
# (on a cluster that has the lakehouse roles). Refuses to touch an existing database.
#
#   scripts/restore.sh /backup/postgresql/lakehouse_20261124T120000Z.dump \
#       postgres://owner:pw@host:5432/lakehouse_restored
set -euo pipefail
dump=${1:?usage: restore.sh DUMP_FILE TARGET_DATABASE_URL}
target=${2:?usage: restore.sh DUMP_FILE TARGET_DATABASE_URL}
bin=${PG_BIN_DIR:+$PG_BIN_DIR/}
[ -f "$dump" ] || { echo "no such dump: $dump" >&2; exit 1; }

base=${target%%\?*}
query=${target#"$base"}
db=${base##*/}
server=${base%/*}
[[ "$db" =~ ^[A-Za-z0-9_]+$ ]] || { echo "database name must be letters, digits and _: $db" >&2; exit 1; }

"${bin}psql" "$server/postgres$query" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"$db\""
"${bin}pg_restore" --exit-on-error --no-owner --dbname="$target" "$dump"
echo "restored into $db"
