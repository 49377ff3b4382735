use sqlx::PgConnection;
use uuid::Uuid;

use super::IdentityLink;

/// `None` when the customer does not exist.
pub async fn list(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<Vec<IdentityLink>>, sqlx::Error> {
    let links = sqlx::query_as!(
        IdentityLink,
        r#"
        SELECT link_id, issuer, subject, customer_id, status, proof, created_at, created_by,
               activated_at, code_expires_at
        FROM core.identity_links WHERE customer_id = $1 ORDER BY created_at, link_id
        "#,
        customer_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    if !links.is_empty() {
        return Ok(Some(links));
    }
    let exists: bool = sqlx::query_scalar!(
        r#"
                SELECT EXISTS (SELECT 1 FROM core.customers WHERE customer_id = $1) AS "exists!"
            "#,
        customer_id,
    )
    .fetch_one(conn)
    .await?;
    Ok(exists.then_some(links))
}

/// A PENDING link, proved by the code whose SHA-256 is `code_hash` for ten minutes.
pub async fn insert(
    conn: &mut PgConnection,
    customer_id: Uuid,
    issuer: &str,
    subject: &str,
    code_hash: Option<&[u8]>,
) -> Result<Option<IdentityLink>, sqlx::Error> {
    // From the customer's row as the caller sees it: a customer outside their offices is not
    // there (404), rather than a row the policy refuses to write (403).
    sqlx::query_as!(
        IdentityLink,
        r#"
        INSERT INTO core.identity_links (link_id, issuer, subject, customer_id, code_hash,
                                         code_expires_at)
        SELECT $1, $2, $3, customer_id, $5::bytea,
               CASE WHEN $5::bytea IS NOT NULL THEN now() + interval '10 minutes' END
        FROM core.customers WHERE customer_id = $4
        RETURNING link_id, issuer, subject, customer_id, status, proof, created_at, created_by,
                  activated_at, code_expires_at
        "#,
        Uuid::now_v7(),
        issuer,
        subject,
        customer_id,
        code_hash,
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete(
    conn: &mut PgConnection,
    customer_id: Uuid,
    link_id: Uuid,
) -> Result<Option<IdentityLink>, sqlx::Error> {
    sqlx::query_as!(
        IdentityLink,
        r#"
        DELETE FROM core.identity_links WHERE link_id = $1 AND customer_id = $2
        RETURNING link_id, issuer, subject, customer_id, status, proof, created_at, created_by,
                  activated_at, code_expires_at
        "#,
        link_id,
        customer_id,
    )
    .fetch_optional(conn)
    .await
}

/// Activates the pending link of an identity-link proposal the caller approved (migration 0043);
/// `None` if the link is no longer pending.
pub async fn activate_checked(
    conn: &mut PgConnection,
    proposal_id: Uuid,
) -> Result<Option<IdentityLink>, sqlx::Error> {
    let Some(link_id) = sqlx::query_scalar!("SELECT core.activate_checked_link($1)", proposal_id)
        .fetch_one(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    sqlx::query_as!(
        IdentityLink,
        r#"
        SELECT link_id, issuer, subject, customer_id, status, proof, created_at, created_by,
               activated_at, code_expires_at
        FROM core.identity_links WHERE link_id = $1
        "#,
        link_id
    )
    .fetch_optional(conn)
    .await
}
