//! Bearer JWTs: the algorithm pinned by configuration (HS256 with a shared secret for
//! development, RS256 or ES256 with a public key in production), `exp` required, `nbf`, `iss` and
//! `aud` checked with a leeway of at most 30 s. A token that fails any check answers 401 without
//! saying which check failed. The caller's role decides what it may call (403 otherwise); its
//! tenant decides which objects exist for it (404 otherwise).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use messaging::http::Problem;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most clock difference a token's times are allowed.
pub const MAX_LEEWAY_SECS: u64 = 30;

/// Who may do what (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Advertiser,
    Partner,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Advertiser, Role::Partner, Role::Auditor];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Advertiser => "advertiser",
            Role::Partner => "partner",
            Role::Auditor => "auditor",
        }
    }
}

/// The claims Pulsaga reads; others are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// The advertiser or partner id the caller acts for; admins and auditors may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// A token's `aud`: one audience, or several (RFC 7519 §4.1.3 allows both). The verifier checks
/// that ours is among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
    pub tenant: Option<String>,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "the {} role may not do this",
                self.role.name()
            )))
        }
    }

    /// Whether the caller sees everything (admins and auditors).
    pub fn sees_all(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
    }

    /// Whether the caller's tenant is `id`.
    pub fn is_tenant(&self, id: &str) -> bool {
        self.tenant.as_deref() == Some(id)
    }
}

/// How tokens are verified.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// The key a deployment verifies with, which fixes the algorithm.
#[derive(Clone)]
pub enum Key {
    /// HS256 with a shared secret (development).
    Hs256 { secret: Vec<u8> },
    /// RS256 with an RSA public key in PEM.
    Rs256 { public_pem: Vec<u8> },
    /// ES256 with a P-256 public key in PEM.
    Es256 { public_pem: Vec<u8> },
}

impl std::fmt::Debug for Key {
    /// Names the algorithm only: the key material stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Hs256 { .. } => "Key::Hs256",
            Key::Rs256 { .. } => "Key::Rs256",
            Key::Es256 { .. } => "Key::Es256",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the JWT key is not usable: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    #[error("the leeway may be at most {MAX_LEEWAY_SECS} s")]
    Leeway,
    #[error("an HS256 secret must have at least 32 bytes")]
    ShortSecret,
}

impl Verifier {
    pub fn new(key: &Key, issuer: &str, audience: &str, leeway: u64) -> Result<Self, KeyError> {
        if leeway > MAX_LEEWAY_SECS {
            return Err(KeyError::Leeway);
        }
        let (algorithm, key) = match key {
            Key::Hs256 { secret } if secret.len() < 32 => return Err(KeyError::ShortSecret),
            Key::Hs256 { secret } => (Algorithm::HS256, DecodingKey::from_secret(secret)),
            Key::Rs256 { public_pem } => (Algorithm::RS256, DecodingKey::from_rsa_pem(public_pem)?),
            Key::Es256 { public_pem } => (Algorithm::ES256, DecodingKey::from_ec_pem(public_pem)?),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(Verifier { key, validation })
    }

    /// The caller a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Caller, Problem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| {
                tracing::debug!(%error, "token refused");
                Problem::unauthorized(
                    "the bearer token is missing, malformed, expired or not for this API",
                )
            },
        )?;
        let claims = data.claims;
        Ok(Caller {
            subject: claims.sub,
            role: claims.role,
            tenant: claims.tenant,
        })
    }
}

/// Mints an HS256 development token valid for `ttl_secs` (`pulsaga token`, `pulsaga up`).
pub fn mint_hs256(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    subject: &str,
    role: Role,
    tenant: Option<&str>,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        tenant: tenant.map(str::to_owned),
        iss: issuer.to_owned(),
        aud: Audience::One(audience.to_owned()),
        exp: now + ttl_secs,
        nbf: Some(now),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}
