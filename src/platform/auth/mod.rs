//! Bearer tokens to callers, and which caller may do what.

mod authenticator;
mod jwks;
mod links;
mod local;
mod provider;
mod request_tx;
mod token_error;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::platform::error::ApiError;

pub use authenticator::{Authenticator, LINK_CODE_HEADER};
pub use jwks::KeySet;
pub use local::{mint, parse_ttl, Claims, JwtKeys, HEAD_OFFICE};
pub use request_tx::{begin_as, begin_statement, RequestTx};
pub use token_error::TokenError;

/// The role a token grants. The database role to switch to comes from this enum, never from the
/// token's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Customer,
    Staff,
    Analyst,
    Etl,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Customer,
        Role::Staff,
        Role::Analyst,
        Role::Etl,
        Role::Admin,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
            Self::Analyst => "analyst",
            Self::Etl => "etl",
            Self::Admin => "admin",
        }
    }

    /// The PostgreSQL role a request of this caller runs as (see migrations/0001_roles.sql).
    pub fn db_role(self) -> &'static str {
        match self {
            Self::Customer => "lakehouse_app_user",
            Self::Staff => "lakehouse_staff",
            Self::Analyst => "lakehouse_analyst",
            Self::Etl => "lakehouse_etl_user",
            Self::Admin => "lakehouse_admin_api",
        }
    }

    /// Whether this role sees personal identifiers (the ID number) in clear.
    pub fn sees_clear_pii(self) -> bool {
        matches!(self, Self::Customer | Self::Staff | Self::Admin)
    }
}

/// The issuer of tokens signed with `JWT_SECRET`.
pub const LOCAL_ISSUER: &str = "local";

/// An authenticated caller: its principal is (issuer, subject, role, customer id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who signed the token: [`LOCAL_ISSUER`] for `JWT_SECRET` tokens.
    pub issuer: String,
    /// The token's subject, unique within its issuer.
    pub subject: String,
    pub role: Role,
    /// Set exactly when `role` is [`Role::Customer`].
    pub customer_id: Option<Uuid>,
    /// The request this caller makes (`x-request-id`), for the audit log (`app.request_id`).
    pub request_id: Option<String>,
    /// When the caller's token expires (seconds since the Unix epoch): a stream ends then.
    pub expires_at: Option<i64>,
    /// The customer came from an identity link (not a token claim): a stream ends when the
    /// link is removed.
    pub linked: bool,
    /// A staff member's office code from their token (`app.branch`); without it the staff
    /// directory names their office, and without that they see no customer's rows.
    pub branch: Option<String>,
}

impl Caller {
    /// Checks the claims of a verified token: known role, a customer id for customers, and a
    /// subject that is safe to record.
    pub fn from_claims(claims: Claims) -> Result<Self, ApiError> {
        let role = Role::parse(&claims.role).ok_or(ApiError::Unauthorized("unknown role"))?;
        let customer_id = match role {
            Role::Customer => Some(
                claims
                    .customer_id
                    .ok_or(ApiError::Unauthorized("customer token without customer_id"))?,
            ),
            _ => None,
        };
        if !is_valid_subject(&claims.sub) {
            return Err(ApiError::Unauthorized("unusable subject"));
        }
        let branch = staff_branch(role, claims.branch)?;
        Ok(Self {
            issuer: LOCAL_ISSUER.to_owned(),
            subject: claims.sub,
            role,
            customer_id,
            request_id: None,
            expires_at: Some(claims.exp),
            linked: false,
            branch,
        })
    }

    /// The principal as one text (`issuer|subject|role[|customer id]`): `app.actor`, the `*_by`
    /// columns and the scope of idempotency keys. Issuers never hold `|`, and a subject's `|` and
    /// `%` are percent-encoded, so two different principals never share a text (see
    /// migrations/0010_principals.sql).
    pub fn principal(&self) -> String {
        let mut text = format!("{}|{}", self.person(), self.role.as_str());
        if let Some(customer) = self.customer_id {
            text.push('|');
            text.push_str(&customer.to_string());
        }
        text
    }
}

impl Caller {
    /// The person behind the principal, whatever their role: `issuer|subject`, as
    /// `core.current_subject()` spells it. Four eyes compare these.
    pub fn person(&self) -> String {
        let subject = self.subject.replace('%', "%25").replace('|', "%7C");
        format!("{}|{subject}", self.issuer)
    }
}

/// Subjects are user names, service accounts or a provider's ids (`auth0|5f7c…`, UUIDs,
/// base64url): printable ASCII without spaces, quotes or backslashes, at most 255 characters.
pub fn is_valid_subject(sub: &str) -> bool {
    (1..=255).contains(&sub.len())
        && sub
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"'\"\\`".contains(&b))
}

/// The office a staff token names, checked to be an office code (it reaches the request's first
/// message as a literal). Other roles' tokens may carry one; it means nothing for them.
pub fn staff_branch(role: Role, branch: Option<String>) -> Result<Option<String>, ApiError> {
    match branch {
        Some(code) if role == Role::Staff => {
            if is_office_code(&code) {
                Ok(Some(code))
            } else {
                Err(ApiError::Unauthorized("unusable branch claim"))
            }
        }
        _ => Ok(None),
    }
}

/// An office's code: `HO`, `HN01`, `SOUTH-2` (migration 0042's check).
pub fn is_office_code(code: &str) -> bool {
    (1..=32).contains(&code.len())
        && code.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        })
}

impl Caller {
    /// The service itself, as an administrator: what its scheduler runs jobs as.
    pub fn system(subject: &str) -> Self {
        Self {
            issuer: "system".into(),
            subject: subject.into(),
            role: Role::Admin,
            customer_id: None,
            request_id: None,
            expires_at: None,
            linked: false,
            branch: None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    /// The caller the edge authenticated (see `crate::platform::edge::authenticate`), else the token's.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Arc::<Authenticator>::from_ref(state)
            .caller(&parts.headers)
            .await
    }
}

/// A caller whose role `A` permits, for handlers that act as the caller before (or instead of)
/// opening a [`RequestTx`]: claiming an idempotency key, streaming an import, running a job.
/// Other roles get 403 before anything else happens.
pub struct Authorized<A> {
    pub caller: Caller,
    _access: std::marker::PhantomData<A>,
}

impl<A: Access, S: Send + Sync> FromRequestParts<S> for Authorized<A>
where
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !A::permits(caller.role) {
            return Err(ApiError::Forbidden);
        }
        Ok(Self {
            caller,
            _access: std::marker::PhantomData,
        })
    }
}

/// Which roles may use a route. Implemented by zero-sized markers, so the permission is part of
/// the handler's signature: `RequestTx<StaffOnly>`.
pub trait Access: Send + Sync + 'static {
    fn permits(role: Role) -> bool;
}

macro_rules! access {
    ($(#[$doc:meta])* $name:ident: $($role:ident)|+) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl Access for $name {
            fn permits(role: Role) -> bool {
                matches!(role, $(Role::$role)|+)
            }
        }
    };
}

access!(
    /// Any authenticated caller; row-level security decides what they see.
    AnyCaller: Customer | Staff | Analyst | Etl | Admin
);
access!(
    /// Branch staff and administrators.
    StaffOnly: Staff | Admin
);
access!(
    /// Those who create customers: staff, administrators and the ETL pipeline.
    CustomerWriters: Staff | Admin | Etl
);
access!(
    /// Customers acting for themselves.
    CustomerOnly: Customer
);
access!(
    /// Those who apply for and cancel loans: customers (their own), staff, administrators.
    LoanApplicants: Customer | Staff | Admin
);
access!(
    /// Those who read loans: customers (their own), staff, analysts, administrators.
    LoanReaders: Customer | Staff | Analyst | Admin
);
access!(
    /// Those who record payments: customers (repayments of their own loans, PENDING until
    /// confirmed), staff, administrators.
    PaymentMakers: Customer | Staff | Admin
);
access!(
    /// Analytics jobs and job metadata: analysts and administrators.
    Analysts: Analyst | Admin
);
access!(
    /// Operations: administrators.
    AdminOnly: Admin
);
access!(
    /// Customer imports: the ETL pipeline.
    EtlOnly: Etl
);
access!(
    /// Portfolio and risk views: staff, analysts, administrators.
    RiskViewers: Staff | Analyst | Admin
);

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: &str, customer_id: Option<Uuid>) -> Claims {
        Claims {
            sub: "someone".into(),
            role: role.into(),
            customer_id,
            exp: i64::MAX,
            iat: None,
            branch: None,
        }
    }

    #[test]
    fn every_role_round_trips_through_its_name() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("superuser"), None);
    }

    #[test]
    fn a_customer_token_needs_a_customer_id() {
        assert!(Caller::from_claims(claims("customer", None)).is_err());
        let id = Uuid::now_v7();
        let caller = Caller::from_claims(claims("customer", Some(id))).unwrap();
        assert_eq!(caller.customer_id, Some(id));
        assert_eq!(caller.principal(), format!("local|someone|customer|{id}"));
    }

    #[test]
    fn principals_differ_by_customer_and_role_for_one_subject() {
        let a = Caller::from_claims(claims("customer", Some(Uuid::now_v7()))).unwrap();
        let b = Caller::from_claims(claims("customer", Some(Uuid::now_v7()))).unwrap();
        let staff = Caller::from_claims(claims("staff", None)).unwrap();
        assert_ne!(a.principal(), b.principal());
        assert_ne!(a.principal(), staff.principal());
        assert_eq!(staff.principal(), "local|someone|staff");
    }

    #[test]
    fn a_subject_with_the_separator_cannot_pose_as_another_principal() {
        let mut c = claims("staff", None);
        c.sub = "auth0|abc".into();
        let caller = Caller::from_claims(c).unwrap();
        assert_eq!(caller.principal(), "local|auth0%7Cabc|staff");
        let mut c = claims("staff", None);
        c.sub = "auth0%7Cabc".into();
        assert_ne!(
            Caller::from_claims(c).unwrap().principal(),
            caller.principal()
        );
    }

    #[test]
    fn a_staff_token_names_an_office_code_or_is_refused() {
        let mut c = claims("staff", None);
        c.branch = Some("HN01".into());
        assert_eq!(
            Caller::from_claims(c).unwrap().branch.as_deref(),
            Some("HN01")
        );
        for bad in ["", "hn01", "-X", "HN 01", "H'O", &"A".repeat(33)] {
            let mut c = claims("staff", None);
            c.branch = Some(bad.into());
            assert!(Caller::from_claims(c).is_err(), "{bad:?} accepted");
        }
        let mut c = claims("analyst", None);
        c.branch = Some("HN01".into());
        assert_eq!(Caller::from_claims(c).unwrap().branch, None);
    }

    #[test]
    fn staff_tokens_never_carry_a_customer_scope() {
        let caller = Caller::from_claims(claims("staff", Some(Uuid::now_v7()))).unwrap();
        assert_eq!(caller.customer_id, None);
    }

    #[test]
    fn subjects_with_quotes_or_spaces_are_refused() {
        for sub in [
            "",
            "a b",
            "o'brien",
            "x\"y",
            "back\\slash",
            &"a".repeat(256),
        ] {
            let mut c = claims("staff", None);
            c.sub = sub.into();
            assert!(Caller::from_claims(c).is_err(), "{sub:?} accepted");
        }
    }
}
