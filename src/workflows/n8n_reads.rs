//! What environment syncs keep of n8n's listings, shared across them.
//!
//! A sync reduces every listed workflow to what it records: its id, its name, its
//! content hash and `updatedAt` ([`sync::seen`](super::sync::seen)), and the
//! credentials its nodes reference. That summary is a function of the workflow's
//! JSON text alone, so it is kept by the SHA-256 of that text as n8n sent it: a
//! workflow listed again with the same text is neither parsed nor hashed again (an
//! unchanged sync of 1,000 workflows reads 9 MB it already knows). Any change to
//! the text, even one the content hash ignores (`updatedAt`, a canvas position),
//! is a new entry, so an entry can never be stale. The SHA-256 runs on the CPU's
//! SHA extensions where it has them (sha2 detects them), about a tenth of the cost
//! of parsing the text.
//!
//! At most [`LISTED_CAPACITY`] summaries are kept (about 350 bytes each with the
//! cache's own, credentials aside: some 35 MB when full), least recently used first
//! out: ten environments of 10,000 workflows each still find their last listing.
//! A cache smaller than what the syncs cycle through would find nothing at all (each
//! sync evicting what the next needs). They are shared across environments and
//! tenants: a summary is reached only by presenting the very text it was made from,
//! so it tells nobody anything they did not send.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use aggregates::environment::KnownCredential;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::sync::{listed_id, seen, Rejected, Seen};

/// Listed workflows whose summary is kept.
pub const LISTED_CAPACITY: usize = 100_000;

/// A listed workflow as a sync uses it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The id n8n lists it under (`None`: it has none).
    pub id: Option<String>,
    /// What a sync records of it, or why it cannot be used.
    pub seen: Result<Seen, Rejected>,
    /// The credentials its nodes reference.
    pub credentials: Vec<KnownCredential>,
}

impl Listed {
    fn of(text: &RawValue) -> Listed {
        match serde_json::from_str::<Value>(text.get()) {
            Ok(workflow) => Listed {
                id: listed_id(&workflow),
                seen: seen(&workflow),
                credentials: KnownCredential::referenced_by(&workflow),
            },
            // not reached: the listing parsed the same text already
            Err(e) => Listed {
                id: None,
                seen: Err(Rejected::NotJson {
                    path: "a listed workflow".into(),
                    reason: e.to_string(),
                }),
                credentials: vec![],
            },
        }
    }
}

pub struct ListedWorkflows {
    kept: Mutex<lru::LruCache<[u8; 32], Arc<Listed>>>,
}

impl Default for ListedWorkflows {
    fn default() -> Self {
        ListedWorkflows {
            kept: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(LISTED_CAPACITY).expect("a positive capacity"),
            )),
        }
    }
}

impl std::fmt::Debug for ListedWorkflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListedWorkflows").finish_non_exhaustive()
    }
}

impl ListedWorkflows {
    /// The summary of the workflow whose JSON text n8n listed as `text`: the kept
    /// one if this text was listed before, else made (parsed and hashed) and kept.
    pub fn summary(&self, text: &RawValue) -> Arc<Listed> {
        let digest: [u8; 32] = Sha256::digest(text.get().as_bytes()).into();
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            .cloned();
        if let Some(listed) = kept {
            return listed;
        }
        let listed = Arc::new(Listed::of(text));
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(digest, listed.clone());
        listed
    }

    /// How many summaries are kept.
    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    #[test]
    fn a_text_is_summarised_once_and_any_change_is_a_new_summary() {
        let cache = ListedWorkflows::default();
        let workflow = serde_json::json!({
            "id": "w1", "name": "Orders", "updatedAt": "2026-01-01T00:00:00.000Z",
            "nodes": [{"name": "A", "type": "t", "parameters": {},
                       "credentials": {"slackApi": {"id": "c1", "name": "Slack"}}}],
            "connections": {},
        });
        let first = cache.summary(&text(workflow.clone()));
        assert_eq!(first.id.as_deref(), Some("w1"));
        let seen = first.seen.as_ref().unwrap();
        assert_eq!(seen.observation.name, "Orders");
        assert_eq!(
            seen.observation.content_hash,
            aggregates::content::content_hash(&workflow).unwrap()
        );
        assert_eq!(first.credentials.len(), 1);
        // the same text: the same summary, not made again
        let again = cache.summary(&text(workflow.clone()));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(cache.len(), 1);

        // only `updatedAt` changed: the content hash is the same, the summary new
        let mut touched = workflow.clone();
        touched["updatedAt"] = "2026-01-02T00:00:00.000Z".into();
        let second = cache.summary(&text(touched));
        assert!(!Arc::ptr_eq(&first, &second));
        let second_seen = second.seen.as_ref().unwrap();
        assert_eq!(
            second_seen.observation.content_hash,
            seen.observation.content_hash
        );
        assert_ne!(
            second_seen.observation.n8n_updated_at,
            seen.observation.n8n_updated_at
        );
        assert_eq!(cache.len(), 2);

        // a workflow a sync cannot use is summarised (and kept) as such
        let nameless = cache.summary(&text(serde_json::json!({"id": "w2", "nodes": []})));
        assert_eq!(nameless.id.as_deref(), Some("w2"));
        assert!(matches!(nameless.seen, Err(Rejected::NoName(_))));
    }
}
