//! Why a token was refused: logged, never sent to the client (every refusal is the same 401).

use jsonwebtoken::errors::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// An algorithm this service does not take from this kind of token (`none`, HS256 where
    /// only a provider's keys count, an algorithm other than the key's own).
    UnsupportedAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInTheFuture,
    WrongIssuer,
    WrongAudience,
    /// A `kid` the provider's key set does not hold, even after fetching it again.
    UnknownKey,
    /// No key set has been loaded from the provider yet.
    KeysUnavailable,
    MissingClaim,
    LifetimeTooLong,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::UnsupportedAlgorithm => "token algorithm not accepted",
            Self::BadSignature => "token signature does not verify",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::IssuedInTheFuture => "token issued in the future",
            Self::WrongIssuer => "token issuer not accepted",
            Self::WrongAudience => "token audience not accepted",
            Self::UnknownKey => "token signed with an unknown key",
            Self::KeysUnavailable => "identity provider keys not loaded yet",
            Self::MissingClaim => "token lacks a required claim",
            Self::LifetimeTooLong => "token lifetime over the limit",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm => Self::UnsupportedAlgorithm,
            _ => Self::Malformed,
        }
    }
}
