//! SQL for the staff directory (administrators only: no other role has privileges on it).

use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::StaffMember;
use crate::domain::money::Amount;

pub async fn list(conn: &mut PgConnection) -> Result<Vec<StaffMember>, sqlx::Error> {
    sqlx::query_as!(
        StaffMember,
        r#"
        SELECT s.staff_id, s.issuer, s.subject, s.display_name, o.code AS office,
               s.approval_limit AS "approval_limit: Amount", s.active, s.version,
               s.created_at, s.updated_at
        FROM core.staff_members s JOIN core.offices o USING (office_id)
        ORDER BY s.issuer, s.subject
        "#
    )
    .fetch_all(conn)
    .await
}

pub async fn find(
    conn: &mut PgConnection,
    staff_id: Uuid,
) -> Result<Option<StaffMember>, sqlx::Error> {
    sqlx::query_as!(
        StaffMember,
        r#"
        SELECT s.staff_id, s.issuer, s.subject, s.display_name, o.code AS office,
               s.approval_limit AS "approval_limit: Amount", s.active, s.version,
               s.created_at, s.updated_at
        FROM core.staff_members s JOIN core.offices o USING (office_id)
        WHERE s.staff_id = $1
        "#,
        staff_id
    )
    .fetch_optional(conn)
    .await
}

/// `None` when `office` names no office.
pub async fn insert(
    conn: &mut PgConnection,
    staff_id: Uuid,
    issuer: &str,
    subject: &str,
    display_name: Option<&str>,
    office: &str,
    approval_limit: Option<Decimal>,
) -> Result<Option<StaffMember>, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO core.staff_members (staff_id, issuer, subject, display_name, office_id, \
                                         approval_limit) \
         SELECT $1, $2, $3, $4, office_id, $6 FROM core.offices WHERE code = $5",
        staff_id,
        issuer,
        subject,
        display_name,
        office,
        approval_limit,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    find(conn, staff_id).await
}

/// `None` when `office` names no office or the entry is no longer at `version`.
pub async fn update(
    conn: &mut PgConnection,
    staff_id: Uuid,
    version: i32,
    display_name: Option<&str>,
    office: &str,
    approval_limit: Option<Decimal>,
    active: bool,
) -> Result<Option<StaffMember>, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE core.staff_members s \
         SET display_name = $3, office_id = o.office_id, approval_limit = $5, active = $6, \
             version = s.version + 1, updated_at = now(), updated_by = core.current_actor() \
         FROM core.offices o \
         WHERE s.staff_id = $1 AND s.version = $2 AND o.code = $4",
        staff_id,
        version,
        display_name,
        office,
        approval_limit,
        active,
    )
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    find(conn, staff_id).await
}
