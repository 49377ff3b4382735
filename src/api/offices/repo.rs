//! SQL for offices.

use sqlx::PgConnection;

use super::{Office, OfficeKind};

/// Every office in path order, or only the one with `code`.
async fn select(conn: &mut PgConnection, code: Option<&str>) -> Result<Vec<Office>, sqlx::Error> {
    sqlx::query_as!(
        Office,
        r#"
        SELECT o.code, o.name, o.kind AS "kind: OfficeKind", p.code AS "parent?",
               ARRAY(SELECT a.code FROM unnest(o.path) WITH ORDINALITY AS u(id, n)
                     JOIN core.offices a ON a.office_id = u.id ORDER BY u.n) AS "path!",
               o.created_at
        FROM core.offices o LEFT JOIN core.offices p ON p.office_id = o.parent_id
        WHERE $1::text IS NULL OR o.code = $1
        ORDER BY o.path
        "#,
        code
    )
    .fetch_all(conn)
    .await
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<Office>, sqlx::Error> {
    select(conn, None).await
}

pub async fn find(conn: &mut PgConnection, code: &str) -> Result<Option<Office>, sqlx::Error> {
    Ok(select(conn, Some(code)).await?.pop())
}

pub async fn insert(
    conn: &mut PgConnection,
    code: &str,
    name: &str,
    kind: OfficeKind,
    parent: &Office,
) -> Result<Office, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO core.offices (code, name, kind, parent_id) \
         SELECT $1, $2, $3, office_id FROM core.offices WHERE code = $4",
        code,
        name,
        kind as OfficeKind,
        parent.code,
    )
    .execute(&mut *conn)
    .await?;
    find(conn, code).await?.ok_or(sqlx::Error::RowNotFound)
}
