#!/usr/bin/env bash
# Backs up a lakehouse database: a full custom-format dump (data, schema, grants, RLS policies)
# and a plain schema-only script, into OUT_DIR. Roles are cluster-wide and not in a database
# dump: `lakehouse-api migrate` on the target cluster creates them (or keep `pg_dumpall
# --roles-only`, which this script adds when the user may run it).
#
#   scripts/backup.sh postgres://owner:pw@host:5432/lakehouse_db /backup/postgresql
set -euo pipefail
url=${1:?usage: backup.sh DATABASE_URL OUT_DIR}
out=${2:?usage: backup.sh DATABASE_URL OUT_DIR}
bin=${PG_BIN_DIR:+$PG_BIN_DIR/}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
"${bin}pg_dump" --format=custom --compress=9 --file="$out/lakehouse_$stamp.dump" "$url"
"${bin}pg_dump" --schema-only --format=plain --file="$out/lakehouse_${stamp}_schema.sql" "$url"
"${bin}pg_dumpall" --roles-only --no-role-passwords --dbname="$url" \
    > "$out/lakehouse_${stamp}_roles.sql" 2>/dev/null || rm -f "$out/lakehouse_${stamp}_roles.sql"
echo "$out/lakehouse_$stamp.dump"
