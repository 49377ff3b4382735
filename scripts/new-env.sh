#!/usr/bin/env bash
# Writes .env for docker compose with fresh random secrets (refuses to overwrite one).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e .env ] && { echo ".env exists; remove it first" >&2; exit 1; }
rand() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
owner=$(rand 18 | tr '+/' '-_')
sed -e "s|^DATABASE_URL=.*|DATABASE_URL=postgres://lakehouse_owner:${owner}@localhost:5432/lakehouse_db|" \
    -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=${owner}|" \
    -e "s|^APP_DB_PASSWORD=.*|APP_DB_PASSWORD=$(rand 24 | tr '+/' '-_')|" \
    -e "s|^JWT_SECRET=.*|JWT_SECRET=$(rand 48)|" \
    -e "s|^TRINO_DB_PASSWORD=.*|TRINO_DB_PASSWORD=$(rand 24 | tr '+/' '-_')|" \
    -e "s|^PII_ENCRYPTION_KEY=.*|PII_ENCRYPTION_KEY=$(rand 32)|" \
    -e "s|^PII_HASH_KEY=.*|PII_HASH_KEY=$(rand 32)|" \
    .env.example > .env
chmod 600 .env
echo "wrote .env"
