//! What repository syncs and drift checks read from Git, shared across them.
//!
//! - **One read of a folder at a time.** A sync or drift check that asks for a
//!   folder while a read of the same folder (same tenant, repository, branch, folder
//!   and token) is under way takes that read's snapshot instead of starting another:
//!   ten drift checks started together read Git once. A snapshot is never kept after
//!   its read ends, so a read asked for after another ended always reads Git again.
//! - **Each file hashed once.** A workflow file's content hash and name are kept by
//!   the file's Git blob id, which names its content: an entry can never be stale, a
//!   second read of an unchanged folder parses nothing. The cache holds hashes and
//!   names only (about 200 bytes an entry), at most [`HASHED_CAPACITY`] entries,
//!   least recently used first out. A file that cannot be read as a workflow is not
//!   kept (it is reported again on every read, as before).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use aggregates::content::ContentHash;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;

use crate::connectors::git::{GitFile, GitRepository, GitSnapshot};
use crate::connectors::UpstreamError;

use super::sync::{git_workflow, Rejected};

/// Workflow files whose hash is kept.
pub const HASHED_CAPACITY: usize = 50_000;

/// A workflow file's content hash and name (`None`: no name, or not a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub hash: ContentHash,
    pub name: Option<String>,
}

type Read = Shared<BoxFuture<'static, Result<Arc<GitSnapshot>, UpstreamError>>>;

pub struct GitReads {
    hashed: Mutex<lru::LruCache<String, Arc<Hashed>>>,
    reading: Arc<Mutex<HashMap<String, Read>>>,
}

impl Default for GitReads {
    fn default() -> Self {
        GitReads {
            hashed: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(HASHED_CAPACITY).expect("a positive capacity"),
            )),
            reading: Arc::default(),
        }
    }
}

impl std::fmt::Debug for GitReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitReads").finish_non_exhaustive()
    }
}

impl GitReads {
    /// `folder` of `repository`, read once for everyone who asks while the read runs.
    /// `key` names what makes two reads the same: the tenant, repository, branch and
    /// credentials (the folder is added here).
    pub async fn read_folder(
        &self,
        key: &str,
        repository: Box<dyn GitRepository>,
        folder: &str,
    ) -> Result<Arc<GitSnapshot>, UpstreamError> {
        let key = format!("{key}\u{0}{folder}");
        let read = {
            let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
            match reading.get(&key) {
                Some(read) => read.clone(),
                None => {
                    let folder = folder.to_string();
                    let done = Arc::clone(&self.reading);
                    let done_key = key.clone();
                    let read = async move {
                        let snapshot = repository.read_folder(&folder).await.map(Arc::new);
                        // the read is over: whoever asks from now on reads again
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&done_key);
                        snapshot
                    }
                    .boxed()
                    .shared();
                    reading.insert(key.clone(), read.clone());
                    read
                }
            }
        };
        // Run by whoever polls it; if every asker goes away first, the entry is
        // removed here so that a later read does not join a read nobody drives.
        let mut guard = Abandoned {
            reading: &self.reading,
            key: &key,
            read,
            done: false,
        };
        let snapshot = (&mut guard.read).await;
        guard.done = true;
        snapshot
    }

    /// The content hash and name of a workflow file, from the cache when its blob
    /// was hashed before; else parsed, hashed and kept.
    pub fn hashed(&self, file: &GitFile) -> Result<Arc<Hashed>, Rejected> {
        if let Some(hashed) = self
            .hashed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file.blob_sha)
        {
            return Ok(hashed.clone());
        }
        let (workflow, hash) = git_workflow(&file.path, &file.content)?;
        let hashed = Arc::new(Hashed {
            hash,
            name: workflow
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
        self.hashed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(file.blob_sha.clone(), hashed.clone());
        Ok(hashed)
    }
}

/// Removes a shared read that was dropped before it finished, when no one else
/// waits for it (a cancelled request must not leave a read that never ends).
struct Abandoned<'a> {
    reading: &'a Mutex<HashMap<String, Read>>,
    key: &'a str,
    read: Read,
    done: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        // this guard's clone, the map's, and nobody else's: the read is orphaned
        if self.read.strong_count() == Some(2)
            && reading.get(self.key).is_some_and(|r| r.ptr_eq(&self.read))
        {
            reading.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A repository that counts its reads and answers after a pause.
    struct Counting {
        reads: Arc<AtomicUsize>,
        pause: std::time::Duration,
    }

    impl GitRepository for Counting {
        fn read_folder<'a>(
            &'a self,
            _folder: &'a str,
        ) -> BoxFuture<'a, Result<GitSnapshot, UpstreamError>> {
            async move {
                self.reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.pause).await;
                Ok(GitSnapshot {
                    commit_sha: "abc".into(),
                    committed_at: None,
                    files: vec![],
                })
            }
            .boxed()
        }

        fn commit_changes<'a>(
            &'a self,
            _files: &'a [(String, Vec<u8>)],
            _deletes: &'a [String],
            _message: &'a str,
        ) -> BoxFuture<'a, Result<String, UpstreamError>> {
            async { unreachable!("not written") }.boxed()
        }
    }

    fn repository(reads: &Arc<AtomicUsize>, pause_ms: u64) -> Box<dyn GitRepository> {
        Box::new(Counting {
            reads: reads.clone(),
            pause: std::time::Duration::from_millis(pause_ms),
        })
    }

    #[tokio::test]
    async fn concurrent_reads_of_one_folder_share_one_read_and_later_ones_read_again() {
        let reads = Arc::new(AtomicUsize::new(0));
        let cache = GitReads::default();
        let together = futures::future::join_all(
            (0..10).map(|_| cache.read_folder("t|repo|main", repository(&reads, 50), "wf")),
        )
        .await;
        assert!(together.iter().all(|r| r.is_ok()));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // another folder, or another key, is another read
        cache
            .read_folder("t|repo|main", repository(&reads, 0), "other")
            .await
            .unwrap();
        cache
            .read_folder("u|repo|main", repository(&reads, 0), "wf")
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // the first read is over: the next one reads Git again
        cache
            .read_folder("t|repo|main", repository(&reads, 0), "wf")
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        assert!(cache.reading.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_read_is_not_joined_later() {
        let reads = Arc::new(AtomicUsize::new(0));
        let cache = GitReads::default();
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            cache.read_folder("t", repository(&reads, 5_000), "wf"),
        )
        .await;
        assert!(cancelled.is_err());
        assert!(cache.reading.lock().unwrap().is_empty());
        cache
            .read_folder("t", repository(&reads, 0), "wf")
            .await
            .unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_file_is_hashed_once_by_blob_and_bad_files_are_not_kept() {
        let cache = GitReads::default();
        let content = br#"{"name":"Orders","nodes":[],"connections":{}}"#.to_vec();
        let file = |sha: &str, content: &[u8]| GitFile {
            path: "workflows/orders.json".into(),
            content: content.to_vec(),
            blob_sha: sha.into(),
        };
        let first = cache.hashed(&file("b1", &content)).unwrap();
        assert_eq!(first.name.as_deref(), Some("Orders"));
        assert_eq!(
            first.hash,
            aggregates::content::content_hash_bytes(&content).unwrap()
        );
        // the blob id names the content: the cached answer is returned
        let again = cache.hashed(&file("b1", b"not read")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(cache.hashed(&file("b2", b"{not json")).is_err());
        assert!(cache.hashed(&file("b2", b"{not json")).is_err());
        assert_eq!(cache.hashed.lock().unwrap().len(), 1);
    }
}
