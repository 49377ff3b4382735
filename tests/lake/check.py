"""Reads the lake the way its users do, for tests/api/lake.rs.

DuckDB (1.5.5, with its iceberg and avro extensions from PyPI, loaded from site-packages: no
network) scans each table through `iceberg_scan` of the catalog entry's metadata_location, and
pyiceberg's SqlCatalog loads the same tables from metadata.iceberg_tables to cross-check the row
counts. Prints one JSON document:

  tables:   per table, its rows, distinct keys, columns, and the values of its string columns
            that appear in the forbidden list (read from stdin, one value per line);
  balances: per business date with lines, each account's sum of lines dated then or earlier;
  current:  figures of the latest version of each loan, installment and payment.

For a lake in an S3-compatible store, LAKE_S3_ENDPOINT, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY say where (DuckDB reads it through its httpfs extension, from PyPI too).

usage: check.py POSTGRES_URL CATALOG < forbidden-values
"""

import glob
import json
import os
import sys
import urllib.parse

import duckdb
import psycopg2
from pyiceberg.catalog.sql import SqlCatalog

KEYS = {
    "journal_entries": ["entry_id"],
    "journal_lines": ["entry_id", "line_number"],
    "loans": ["loan_id", "commit_position"],
    "installments": ["loan_id", "installment_number", "commit_position"],
    "payments": ["payment_id", "commit_position"],
}
# The key of the thing a version belongs to (versioned tables).
ENTITIES = {
    "loans": ["loan_id"],
    "installments": ["loan_id", "installment_number"],
    "payments": ["payment_id"],
}


S3_ENDPOINT = os.environ.get("LAKE_S3_ENDPOINT")


def duckdb_with_extensions():
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    for ext in ("avro", "httpfs", "iceberg") if S3_ENDPOINT else ("avro", "iceberg"):
        (path,) = glob.glob(f"{site}/duckdb_extension_{ext}/extensions/v*/{ext}.duckdb_extension")
        con.execute(f"LOAD '{path}'")
    if S3_ENDPOINT:
        endpoint = urllib.parse.urlparse(S3_ENDPOINT)
        con.execute("CREATE SECRET lake (TYPE s3, KEY_ID ?, SECRET ?, REGION 'us-east-1', "
                    "ENDPOINT ?, URL_STYLE 'path', USE_SSL ?)",
                    [os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                     endpoint.netloc, endpoint.scheme == "https"])
    return con


def s3_properties():
    if not S3_ENDPOINT:
        return {}
    return {"s3.endpoint": S3_ENDPOINT, "s3.region": "us-east-1",
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"]}


def main():
    url, catalog_name = sys.argv[1], sys.argv[2]
    forbidden = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    pg = psycopg2.connect(url)
    with pg.cursor() as cur:
        cur.execute("SELECT table_name, metadata_location FROM metadata.iceberg_tables "
                    "WHERE catalog_name = %s AND table_namespace = 'lakehouse'", (catalog_name,))
        locations = dict(cur.fetchall())
    con = duckdb_with_extensions()
    con.execute("CREATE TABLE forbidden (value VARCHAR)")
    if forbidden:
        con.executemany("INSERT INTO forbidden VALUES (?)", [[v] for v in forbidden])

    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.urlencode({"options": "-csearch_path=metadata"})
    sql_url = urllib.parse.urlunparse(parsed._replace(scheme="postgresql+psycopg2", query=query))
    catalog = SqlCatalog(catalog_name, uri=sql_url, init_catalog_tables="false", **s3_properties())

    out = {"tables": {}, "balances": {}, "current": {}}
    for name, location in sorted(locations.items()):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM iceberg_scan('{location}')")
        columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        strings = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall() if r[1] == "VARCHAR"]
        keys = ", ".join(KEYS[name])
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT ({keys})) FROM {name}").fetchone()
        leaks = []
        for column in strings:
            leaks += [f"{column}={v}" for (v,) in con.execute(
                f"SELECT DISTINCT {column} FROM {name} WHERE {column} IN (SELECT value FROM forbidden)"
            ).fetchall()]
        entities = None
        if name in ENTITIES:
            entities = con.execute(
                f"SELECT count(DISTINCT ({', '.join(ENTITIES[name])})) FROM {name}").fetchone()[0]
        pyiceberg_rows = catalog.load_table(f"lakehouse.{name}").scan().to_arrow().num_rows
        out["tables"][name] = {"rows": rows, "distinct_keys": distinct, "entities": entities,
                               "pyiceberg_rows": pyiceberg_rows, "columns": columns,
                               "leaks": leaks, "location": location}

    for date, account, balance in con.execute("""
        WITH days AS (SELECT DISTINCT business_date FROM journal_lines),
             accounts AS (SELECT DISTINCT account FROM journal_lines)
        SELECT d.business_date::VARCHAR, a.account,
               (SELECT coalesce(sum(amount), 0) FROM journal_lines l
                WHERE l.account = a.account AND l.business_date <= d.business_date)::VARCHAR
        FROM days d, accounts a ORDER BY 1, 2""").fetchall():
        out["balances"].setdefault(date, {})[account] = balance

    latest = "QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY commit_position DESC) = 1"
    out["current"]["loans_by_status"] = dict(con.execute(
        "SELECT status, count(*) FROM (SELECT * FROM loans " + latest.format(k="loan_id")
        + ") GROUP BY status").fetchall())
    out["current"]["installments_principal_paid"] = str(con.execute(
        "SELECT sum(principal_paid) FROM (SELECT * FROM installments "
        + latest.format(k="loan_id, installment_number") + ")").fetchone()[0])
    out["current"]["payments_by_status"] = dict(con.execute(
        "SELECT status, count(*) FROM (SELECT * FROM payments " + latest.format(k="payment_id")
        + ") GROUP BY status").fetchall())
    out["current"]["reversals"] = con.execute(
        "SELECT count(*) FROM journal_entries WHERE reverses IS NOT NULL").fetchone()[0]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
