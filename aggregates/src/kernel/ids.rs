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

fn tenant_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

id_type!(
    /// A tenant: lowercase letters, digits, `-` and `_`.
    TenantId, "tenant_id", tenant_char
);
id_type!(
    /// An entity id local to a tenant (uuids, n8n ids, environment ids).
    LocalId, "id", local_id_char
);

/// The id of one aggregate instance: its tenant and its local part, written
/// `{tenant}:{local}`. The local part is one or more local ids joined by `:` (a
/// mapping is `{environment}:{n8n workflow}`, an environment just its id).
///
/// Parse, don't split: code that needs the tenant, the local part or the owning
/// aggregate (a mapping's environment) asks this type instead of cutting strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AggregateId {
    /// `{tenant}:{local}`, as stored.
    id: String,
    /// Length of the tenant part (the first `:` is at this index).
    tenant_len: usize,
}

/// The tenant part and the local part of a stored id, if it has both.
fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

impl AggregateId {
    /// The id of the aggregate `parts` (at least one) of `tenant`.
    pub fn new(tenant: &TenantId, parts: &[&LocalId]) -> AggregateId {
        debug_assert!(!parts.is_empty(), "an aggregate id has a local part");
        let mut id = String::with_capacity(64);
        id.push_str(tenant.as_str());
        for part in parts {
            id.push(':');
            id.push_str(part.as_str());
        }
        AggregateId {
            id,
            tenant_len: tenant.as_str().len(),
        }
    }

    /// A stored id: a valid tenant, then one or more valid local ids, all
    /// separated by `:`.
    pub fn parse(value: impl Into<String>) -> Result<AggregateId, DomainError> {
        let id = value.into();
        let Some((tenant, local)) = split_id(&id) else {
            return Err(DomainError::validation(
                "aggregate_id",
                format!("{id:?} is not `tenant:id`"),
            ));
        };
        check_id("tenant_id", tenant, tenant_char)?;
        for part in local.split(':') {
            check_id("aggregate_id", part, local_id_char)?;
        }
        Ok(AggregateId {
            tenant_len: tenant.len(),
            id,
        })
    }

    /// The tenant that owns the aggregate.
    pub fn tenant(&self) -> &str {
        &self.id[..self.tenant_len]
    }

    /// The tenant, as a typed id.
    pub fn tenant_id(&self) -> TenantId {
        TenantId(self.tenant().to_string())
    }

    /// The id without its tenant (`env-1:wf-7` for a mapping): what clients see.
    pub fn local(&self) -> &str {
        &self.id[self.tenant_len + 1..]
    }

    /// The local ids the local part is made of, in order.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.local().split(':')
    }

    /// The aggregate this one belongs to: its id without the last local id (a
    /// mapping's environment); `None` for an id with a single local id.
    pub fn parent(&self) -> Option<AggregateId> {
        let (parent, _) = self.local().rsplit_once(':')?;
        Some(AggregateId {
            id: format!("{}:{parent}", self.tenant()),
            tenant_len: self.tenant_len,
        })
    }

    /// `{tenant}:{local}`, as stored.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl TryFrom<String> for AggregateId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AggregateId::parse(value)
    }
}

impl std::str::FromStr for AggregateId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AggregateId::parse(s)
    }
}

impl From<AggregateId> for String {
    fn from(id: AggregateId) -> String {
        id.id
    }
}

impl AsRef<str> for AggregateId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The identifiers of one aggregate instance, scoped by tenant, as stored
/// ([`AggregateId::new`] as text).
pub fn aggregate_id(tenant: &TenantId, parts: &[&LocalId]) -> String {
    AggregateId::new(tenant, parts).into()
}

/// The tenant part of a stored aggregate id (the whole id if it has no `:`). For
/// hot paths over ids the log already holds; [`AggregateId::parse`] checks them.
pub fn tenant_of(aggregate_id: &str) -> &str {
    split_id(aggregate_id).map_or(aggregate_id, |(tenant, _)| tenant)
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
    fn aggregate_ids_parse_and_display_tenant_and_local_part() {
        let t = TenantId::parse("acme").unwrap();
        let (env, wf) = (
            LocalId::parse("prod").unwrap(),
            LocalId::parse("wf-1").unwrap(),
        );
        let mapping = AggregateId::new(&t, &[&env, &wf]);
        assert_eq!(mapping.to_string(), "acme:prod:wf-1");
        assert_eq!(mapping.tenant(), "acme");
        assert_eq!(mapping.tenant_id(), t);
        assert_eq!(mapping.local(), "prod:wf-1");
        assert_eq!(mapping.parts().collect::<Vec<_>>(), ["prod", "wf-1"]);
        assert_eq!(mapping.parent(), Some(AggregateId::new(&t, &[&env])));
        assert_eq!(AggregateId::new(&t, &[&env]).parent(), None);
        assert_eq!(AggregateId::parse("acme:prod:wf-1").unwrap(), mapping);
        assert_eq!("acme:prod".parse::<AggregateId>().unwrap().local(), "prod");
        let json = serde_json::to_value(&mapping).unwrap();
        assert_eq!(json, "acme:prod:wf-1");
        assert_eq!(
            serde_json::from_value::<AggregateId>(json).unwrap(),
            mapping
        );
        for bad in [
            "acme",
            "acme:",
            ":prod",
            "Acme:prod",
            "acme:prod::wf",
            "acme:a b",
        ] {
            assert!(AggregateId::parse(bad).is_err(), "{bad:?} parsed");
        }
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
