//! Identifiers. Parse, don't validate: a value of these types is always well formed.
//!
//! Every aggregate id is scoped by tenant (`{tenant}:{local id}`), and the tenant
//! comes only from the caller's verified token. A guessed id from another tenant
//! therefore addresses a different (empty) stream and finds nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::error::DomainError;

const MAX_ID_LEN: usize = 128;

fn check_id(kind: &str, value: &str, allow: impl Fn(char) -> bool) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::required(kind));
    }
    if value.len() > MAX_ID_LEN {
        return Err(DomainError::validation(
            kind,
            format!("longer than {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !allow(*c)) {
        return Err(DomainError::validation(
            kind,
            format!("invalid character {bad:?}"),
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $allow:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_id($kind, &value, $allow)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn local_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

id_type!(
    /// A tenant: lowercase letters, digits, `-` and `_`.
    TenantId, "tenant_id", |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
);
id_type!(
    /// An entity id local to a tenant (uuids, n8n ids, environment ids).
    LocalId, "id", local_id_char
);

/// The identifiers of one aggregate instance, scoped by tenant.
pub fn aggregate_id(tenant: &TenantId, parts: &[&LocalId]) -> String {
    let mut id = String::with_capacity(64);
    id.push_str(tenant.as_str());
    for part in parts {
        id.push(':');
        id.push_str(part.as_str());
    }
    id
}

/// The tenant part of a stored aggregate id.
pub fn tenant_of(aggregate_id: &str) -> &str {
    aggregate_id.split(':').next().unwrap_or_default()
}

/// A URL-safe name of a canonical workflow, unique per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    pub const MAX_LEN: usize = 80;

    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        check_id("slug", &value, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        if value.starts_with('-') || value.ends_with('-') || value.len() > Self::MAX_LEN {
            return Err(DomainError::validation(
                "slug",
                "must not start or end with `-`",
            ));
        }
        Ok(Slug(value))
    }

    /// Derives a slug from a workflow name: lowercase ASCII words joined by `-`.
    pub fn from_name(name: &str) -> Result<Self, DomainError> {
        let mut slug = String::with_capacity(name.len());
        for c in name.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let trimmed: String = slug
            .trim_end_matches('-')
            .chars()
            .take(Self::MAX_LEN - 8)
            .collect();
        let trimmed = trimmed.trim_end_matches('-');
        Slug::parse(if trimmed.is_empty() {
            "workflow"
        } else {
            trimmed
        })
    }

    /// Candidates in order: `base`, `base-2`, `base-3`, … A collision gets a suffix,
    /// never a silent overwrite.
    pub fn candidates(&self) -> impl Iterator<Item = Slug> + '_ {
        std::iter::once(self.clone()).chain((2..).map(move |n| Slug(format!("{}-{n}", self.0))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Slug::parse(value)
    }
}
impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}
impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_separators_and_blank() {
        assert!(TenantId::parse("acme").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("ac:me").is_err());
        assert!(LocalId::parse("").is_err());
        assert!(LocalId::parse("a:b").is_err());
        assert!(LocalId::parse("x".repeat(129)).is_err());
        let t = TenantId::parse("acme").unwrap();
        let id = LocalId::parse("wf-1").unwrap();
        assert_eq!(aggregate_id(&t, &[&id]), "acme:wf-1");
        assert_eq!(tenant_of("acme:wf-1"), "acme");
    }

    #[test]
    fn slugs_from_names_and_suffixes() {
        assert_eq!(
            Slug::from_name("Order Sync (v2)!").unwrap().as_str(),
            "order-sync-v2"
        );
        assert_eq!(Slug::from_name("  ***  ").unwrap().as_str(), "workflow");
        let s = Slug::parse("orders").unwrap();
        let c: Vec<String> = s.candidates().take(3).map(String::from).collect();
        assert_eq!(c, ["orders", "orders-2", "orders-3"]);
        assert!(Slug::parse("-x").is_err());
    }
}
