//! GitHub and GitHub Enterprise through octocrab. octocrab's raw calls (`_get`,
//! `_post`, `_patch`) with our own serde types: they give the status and headers
//! (`Retry-After`, `x-ratelimit-*`) that the typed API hides, and the connectors'
//! shared retry loop replaces octocrab's (which retries without backoff and ignores
//! `Retry-After`).
//!
//! Reading a folder: the branch (`GET /repos/{o}/{r}/branches/{branch}`: head sha,
//! committer date, root tree), the Git trees API down to the folder
//! (`GET …/git/trees/{sha}`, one call per path segment), then each file's blob
//! (`GET …/git/blobs/{sha}`, a few at a time). Trees rather than the contents API
//! because a contents listing stops at 1,000 entries, files over 1 MB come back
//! without content, and reading by commit and blob id makes the snapshot
//! consistent even if the branch moves meanwhile.
//!
//! Committing: blobs (`POST …/git/blobs`), a tree on the head's tree
//! (`POST …/git/trees` with `base_tree`), a commit with the head as parent
//! (`POST …/git/commits`), then the branch moved to it
//! (`PATCH …/git/refs/heads/{branch}`, not forced). If the branch moved in between
//! (422, not a fast forward) the tree and commit are redone on the new head, up to
//! three rounds. Every step is safe to repeat: blobs, trees and commits are
//! content-addressed and moving the ref to the same commit twice is a no-op. A
//! repository with no commit yet has no branch: `NotFound` for reads and commits
//! alike (the Git data API cannot make a first commit).
//!
//! Retries: each call gets `RetryPolicy::timeout` (connect, request and body) and
//! `attempts` tries, in the connectors' shared retry loop (`connectors::retry`);
//! timeouts, connection failures, 5xx, 429 and rate-limited 403s are retried with
//! exponential backoff and full jitter; other 4xx never are. A wait the server asks
//! for (`Retry-After` in seconds or as an HTTP date, or `x-ratelimit-reset` when
//! `x-ratelimit-remaining` is 0) is honoured when it is within
//! `RetryPolicy::max_delay`; when it is longer the call fails at once with
//! `RateLimited` (retryable) rather than sleeping for minutes or retrying early,
//! which GitHub's documentation warns can get an integration banned.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine as _};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use octocrab::service::middleware::retry::RetryConfig;
use octocrab::Octocrab;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::{
    check_branch, check_files, folder_segments, join_path, sorted, GitConfigError, GitFile,
    GitRepository, GitSnapshot,
};
use crate::connectors::retry::{self, LongWait};
use crate::connectors::{RetryPolicy, UpstreamError};

const SERVICE: &str = "github";
const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// Blobs fetched or created at once.
const BLOB_CONCURRENCY: usize = 8;
/// Rounds of tree + commit + ref update when the branch moves under us.
const REF_UPDATE_ROUNDS: u32 = 3;
/// Longest GitHub message kept in an error.
const MESSAGE_CHARS: usize = 300;

/// A GitHub (or GitHub Enterprise) repository on one branch.
pub struct GitHubRepository {
    base_url: String,
    owner: String,
    name: String,
    branch: String,
    token: String,
    policy: RetryPolicy,
    /// Built on first use: octocrab spawns its worker on the calling Tokio runtime.
    client: OnceCell<Octocrab>,
}

impl fmt::Debug for GitHubRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubRepository")
            .field("base_url", &self.base_url)
            .field("repository", &format_args!("{}/{}", self.owner, self.name))
            .field("branch", &self.branch)
            .field("token", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

impl GitHubRepository {
    /// `base_url`: `None` for github.com, or the API root of GitHub Enterprise
    /// (`https://ghe.example.com/api/v3`); `repository`: `owner/name`. Checks the
    /// configuration only; nothing is called until the first read or commit.
    pub fn new(
        base_url: Option<&str>,
        repository: &str,
        branch: &str,
        token: &str,
        policy: RetryPolicy,
    ) -> Result<Self, GitConfigError> {
        let base_url = check_base_url(base_url.unwrap_or(DEFAULT_BASE_URL))?;
        let (owner, name) = repository
            .split_once('/')
            .filter(|(o, n)| is_repo_segment(o) && is_repo_segment(n))
            .ok_or_else(|| {
                GitConfigError(format!("repository {repository:?} is not owner/name"))
            })?;
        check_branch(branch)?;
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(GitConfigError(
                "the GitHub token is empty or not printable ASCII".into(),
            ));
        }
        Ok(GitHubRepository {
            base_url,
            owner: owner.to_string(),
            name: name.to_string(),
            branch: branch.to_string(),
            token: token.to_string(),
            policy,
            client: OnceCell::new(),
        })
    }

    /// `owner/name`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    async fn client(&self) -> Result<&Octocrab, UpstreamError> {
        self.client
            .get_or_try_init(|| async {
                Octocrab::builder()
                    .base_uri(self.base_url.as_str())
                    .map_err(|e| local_error(&e))?
                    .personal_token(self.token.clone())
                    .add_retry_config(RetryConfig::None)
                    .set_connect_timeout(Some(self.policy.timeout))
                    .add_header(
                        reqwest::header::ACCEPT,
                        "application/vnd.github+json".to_string(),
                    )
                    .add_header(
                        reqwest::header::HeaderName::from_static("x-github-api-version"),
                        "2022-11-28".to_string(),
                    )
                    .build()
                    .map_err(|e| local_error(&e))
            })
            .await
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("/repos/{}/{}/{rest}", self.owner, self.name)
    }

    /// The branch head: commit sha, committer date and root tree.
    async fn head(&self) -> Result<Head, UpstreamError> {
        let path = self.repo_path(&format!("branches/{}", encode_path(&self.branch)));
        let what = format!(
            "repository {} or its branch {}",
            self.repository(),
            self.branch
        );
        let branch: BranchResponse = self.call(Verb::Get, &path, None, &what).await?;
        let committed_at = branch
            .commit
            .commit
            .committer
            .and_then(|c| c.date)
            .and_then(|d| DateTime::parse_from_rfc3339(&d).ok())
            .map(|d| d.with_timezone(&Utc));
        Ok(Head {
            sha: branch.commit.sha,
            tree: branch.commit.commit.tree.sha,
            committed_at,
        })
    }

    async fn tree(&self, sha: &str) -> Result<Vec<TreeEntry>, UpstreamError> {
        let path = self.repo_path(&format!("git/trees/{}", encode_path(sha)));
        let tree: TreeResponse = self
            .call(Verb::Get, &path, None, &format!("tree {sha}"))
            .await?;
        if tree.truncated {
            return Err(UpstreamError::Malformed {
                service: SERVICE,
                message: format!("tree {sha} came back truncated"),
            });
        }
        Ok(tree.tree)
    }

    async fn blob(&self, sha: &str) -> Result<Vec<u8>, UpstreamError> {
        let path = self.repo_path(&format!("git/blobs/{}", encode_path(sha)));
        let blob: BlobResponse = self
            .call(Verb::Get, &path, None, &format!("blob {sha}"))
            .await?;
        let malformed = |message: String| UpstreamError::Malformed {
            service: SERVICE,
            message,
        };
        match blob.encoding.as_str() {
            "base64" => base64_decode(&blob.content)
                .ok_or_else(|| malformed(format!("blob {sha} is not valid base64"))),
            "utf-8" | "utf8" => Ok(blob.content.into_bytes()),
            other => Err(malformed(format!(
                "blob {sha} has an unknown encoding {other:?}"
            ))),
        }
    }

    async fn create_blob(&self, content: &[u8]) -> Result<String, UpstreamError> {
        let body = json!({ "content": base64_encode(content), "encoding": "base64" });
        let created: Created = self
            .call(
                Verb::Post,
                &self.repo_path("git/blobs"),
                Some(&body),
                "repository",
            )
            .await?;
        Ok(created.sha)
    }

    async fn read(&self, folder: &str) -> Result<GitSnapshot, UpstreamError> {
        let segments = folder_segments(folder).map_err(|reason| UpstreamError::Local {
            service: SERVICE,
            message: format!("refused folder: {reason}"),
        })?;
        let head = self.head().await?;
        let mut entries = self.tree(&head.tree).await?;
        for (depth, segment) in segments.iter().enumerate() {
            let sub = entries
                .iter()
                .find(|e| e.path == *segment && e.kind == "tree")
                .map(|e| e.sha.clone())
                .ok_or_else(|| UpstreamError::NotFound {
                    service: SERVICE,
                    what: format!("folder {}", segments[..=depth].join("/")),
                })?;
            entries = self.tree(&sub).await?;
        }
        let segments = &segments;
        let reads = entries
            .into_iter()
            .filter(|e| e.kind == "blob" && (e.mode == "100644" || e.mode == "100755"))
            .map(|entry| async move {
                let content = self.blob(&entry.sha).await?;
                Ok::<_, UpstreamError>(GitFile {
                    path: join_path(segments, &entry.path),
                    content,
                    blob_sha: entry.sha,
                })
            });
        let files: Vec<GitFile> = futures::stream::iter(reads)
            .buffered(BLOB_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(GitSnapshot {
            commit_sha: head.sha,
            committed_at: head.committed_at,
            files: sorted(files),
        })
    }

    async fn commit(
        &self,
        files: &[(String, Vec<u8>)],
        deletes: &[String],
        message: &str,
    ) -> Result<String, UpstreamError> {
        check_files(SERVICE, files, deletes)?;
        if files.is_empty() && deletes.is_empty() {
            return Ok(self.head().await?.sha);
        }
        // Blobs do not depend on the head: created once, reused by every round.
        // By index: a closure taking `&(String, Vec<u8>)` trips the compiler's
        // higher-ranked `Send` check of the boxed future.
        let creates = (0..files.len()).map(|i| self.create_blob(&files[i].1));
        let blobs: Vec<String> = futures::stream::iter(creates)
            .buffered(BLOB_CONCURRENCY)
            .try_collect()
            .await?;
        let written: Vec<serde_json::Value> = files
            .iter()
            .zip(&blobs)
            .map(|((path, _), sha)| {
                json!({ "path": path, "mode": "100644", "type": "blob", "sha": sha })
            })
            .collect();
        let ref_path = self.repo_path(&format!("git/refs/heads/{}", encode_path(&self.branch)));
        let mut round = 0;
        loop {
            round += 1;
            let head = self.head().await?;
            let mut entries = written.clone();
            for path in deletes {
                // `sha: null` removes a path the head holds
                if self.holds(&head.tree, path).await? {
                    entries.push(
                        json!({ "path": path, "mode": "100644", "type": "blob", "sha": null }),
                    );
                }
            }
            if entries.is_empty() {
                return Ok(head.sha);
            }
            let tree: Created = self
                .call(
                    Verb::Post,
                    &self.repo_path("git/trees"),
                    Some(&json!({ "base_tree": head.tree, "tree": entries })),
                    &format!("tree {}", head.tree),
                )
                .await?;
            if tree.sha == head.tree {
                // The files already hold these contents: no empty commit.
                return Ok(head.sha);
            }
            let commit: Created = self
                .call(
                    Verb::Post,
                    &self.repo_path("git/commits"),
                    Some(&json!({ "message": message, "tree": tree.sha, "parents": [head.sha] })),
                    &format!("commit {}", head.sha),
                )
                .await?;
            let moved = self
                .call::<serde_json::Value>(
                    Verb::Patch,
                    &ref_path,
                    Some(&json!({ "sha": commit.sha, "force": false })),
                    &format!("branch {}", self.branch),
                )
                .await;
            match moved {
                Ok(_) => return Ok(commit.sha),
                // Not a fast forward: someone pushed since we read the head.
                Err(UpstreamError::Rejected { status: 422, .. }) if round < REF_UPDATE_ROUNDS => {
                    tracing::info!(
                        round,
                        "branch moved during the commit; redoing it on the new head"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the tree `root` holds a file at `path`.
    async fn holds(&self, root: &str, path: &str) -> Result<bool, UpstreamError> {
        let segments: Vec<&str> = path.split('/').collect();
        let Some((name, folders)) = segments.split_last() else {
            return Ok(false);
        };
        let mut entries = self.tree(root).await?;
        for folder in folders {
            let Some(sub) = entries
                .iter()
                .find(|e| e.path == *folder && e.kind == "tree")
                .map(|e| e.sha.clone())
            else {
                return Ok(false);
            };
            entries = self.tree(&sub).await?;
        }
        Ok(entries.iter().any(|e| e.path == *name && e.kind == "blob"))
    }

    /// One API call with timeouts and retries; the body parsed as `T`. `what`
    /// names the object in a `NotFound`.
    async fn call<T: DeserializeOwned>(
        &self,
        verb: Verb,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<T, UpstreamError> {
        let span = tracing::debug_span!("github.call", method = verb.as_str(), path = %path);
        async {
            let client = self.client().await?;
            let timeout = self.policy.timeout;
            retry::run(
                &self.policy,
                LongWait::Fail,
                |_| {
                    retry::Failure::transient(
                        UpstreamError::Timeout {
                            service: SERVICE,
                            timeout,
                        },
                        None,
                    )
                },
                |_| async {
                    let answer = send_once(client, verb, path, body).await.map_err(|error| {
                        retry::Failure {
                            retry: error.retryable(),
                            error,
                            asked_wait: None,
                        }
                    })?;
                    match classify(&answer, what) {
                        None => serde_json::from_str(&answer.body).map_err(|e| {
                            retry::Failure::permanent(UpstreamError::Malformed {
                                service: SERVICE,
                                message: format!("{} {path}: {e}", verb.as_str()),
                            })
                        }),
                        Some((error, asked_wait)) => Err(retry::Failure {
                            retry: error.retryable(),
                            error,
                            asked_wait,
                        }),
                    }
                },
            )
            .await
        }
        .instrument(span)
        .await
    }
}

impl GitRepository for GitHubRepository {
    fn read_folder<'a>(
        &'a self,
        folder: &'a str,
    ) -> BoxFuture<'a, Result<GitSnapshot, UpstreamError>> {
        let span = tracing::info_span!(
            "github.read_folder",
            repository = %self.repository(),
            branch = %self.branch,
            folder
        );
        self.read(folder).instrument(span).boxed()
    }

    fn commit_changes<'a>(
        &'a self,
        files: &'a [(String, Vec<u8>)],
        deletes: &'a [String],
        message: &'a str,
    ) -> BoxFuture<'a, Result<String, UpstreamError>> {
        let span = tracing::info_span!(
            "github.commit_files",
            repository = %self.repository(),
            branch = %self.branch,
            files = files.len(),
            deletes = deletes.len()
        );
        self.commit(files, deletes, message)
            .instrument(span)
            .boxed()
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Patch,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Patch => "PATCH",
        }
    }
}

/// One HTTP answer, whatever its status.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    ratelimit_remaining: Option<String>,
    ratelimit_reset: Option<String>,
    body: String,
}

async fn send_once(
    client: &Octocrab,
    verb: Verb,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Answer, UpstreamError> {
    let response = match verb {
        Verb::Get => client._get(path).await,
        Verb::Post => client._post(path, body).await,
        Verb::Patch => client._patch(path, body).await,
    }
    .map_err(|e| UpstreamError::Unreachable {
        service: SERVICE,
        message: describe(&e),
    })?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let retry_after = header("retry-after");
    let ratelimit_remaining = header("x-ratelimit-remaining");
    let ratelimit_reset = header("x-ratelimit-reset");
    let body = client.body_to_string(response).await.map_err(|e| match e {
        octocrab::Error::InvalidUtf8 { .. } => UpstreamError::Malformed {
            service: SERVICE,
            message: format!("{} {path}: the body is not UTF-8", verb.as_str()),
        },
        e => UpstreamError::Unreachable {
            service: SERVICE,
            message: describe(&e),
        },
    })?;
    Ok(Answer {
        status,
        retry_after,
        ratelimit_remaining,
        ratelimit_reset,
        body,
    })
}

/// `None` for a success; otherwise the error and the wait the server asked for.
fn classify(answer: &Answer, what: &str) -> Option<(UpstreamError, Option<Duration>)> {
    let status = answer.status;
    let error = match status {
        200..=299 => return None,
        401 => UpstreamError::Unauthorized {
            service: SERVICE,
            status,
        },
        403 | 429 if status == 429 || is_rate_limited(answer) => {
            return Some((
                UpstreamError::RateLimited { service: SERVICE },
                asked_wait(answer),
            ))
        }
        403 => UpstreamError::Unauthorized {
            service: SERVICE,
            status,
        },
        404 => UpstreamError::NotFound {
            service: SERVICE,
            what: what.to_string(),
        },
        400..=499 => UpstreamError::Rejected {
            service: SERVICE,
            status,
            message: github_message(&answer.body),
        },
        500..=599 => {
            return Some((
                UpstreamError::Unavailable {
                    service: SERVICE,
                    status,
                },
                retry::asked_wait(status, answer.retry_after.as_deref()),
            ))
        }
        _ => UpstreamError::Malformed {
            service: SERVICE,
            message: format!("unexpected status {status}"),
        },
    };
    Some((error, None))
}

/// GitHub answers an exhausted rate limit with 403 (or 429): primary limits carry
/// `x-ratelimit-remaining: 0`, secondary ones `Retry-After` or say so.
fn is_rate_limited(answer: &Answer) -> bool {
    answer.retry_after.is_some()
        || answer.ratelimit_remaining.as_deref() == Some("0")
        || github_message(&answer.body)
            .to_ascii_lowercase()
            .contains("rate limit")
}

/// `Retry-After` (seconds or an HTTP date), else the primary limit's reset time.
fn asked_wait(answer: &Answer) -> Option<Duration> {
    if let Some(wait) = answer
        .retry_after
        .as_deref()
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
    {
        return Some(wait);
    }
    if answer.ratelimit_remaining.as_deref() == Some("0") {
        let reset = answer
            .ratelimit_reset
            .as_deref()?
            .trim()
            .parse::<i64>()
            .ok()?;
        let seconds = (reset - Utc::now().timestamp()).max(0) as u64;
        // The reset second itself may still be limited.
        return Some(Duration::from_secs(seconds + 1));
    }
    None
}

fn github_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_str::<Message>(body) {
        Ok(m) => m.message.chars().take(MESSAGE_CHARS).collect(),
        Err(_) => "(no message)".to_string(),
    }
}

/// An octocrab error without its backtrace: the first line of each cause.
fn describe(error: &octocrab::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = match error {
        // "Service Error: …" only wraps the transport's error.
        octocrab::Error::Service { source, .. } => Some(source.as_ref()),
        other => Some(other),
    };
    while let Some(e) = current {
        let line = e.to_string().lines().next().unwrap_or_default().to_string();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn local_error(error: &octocrab::Error) -> UpstreamError {
    UpstreamError::Local {
        service: SERVICE,
        message: format!("cannot build the GitHub client: {}", describe(error)),
    }
}

fn check_base_url(url: &str) -> Result<String, GitConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| GitConfigError(format!("the GitHub base URL is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(GitConfigError(
            "the GitHub base URL must be http(s)://host[/path]".into(),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(GitConfigError(
            "the GitHub base URL must not carry credentials (the token is given apart)".into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(GitConfigError(
            "the GitHub base URL must not have a query or fragment".into(),
        ));
    }
    let normalized = parsed.as_str().trim_end_matches('/').to_string();
    // octocrab parses it as an `http::Uri`: check now rather than on first use.
    Octocrab::builder()
        .base_uri(normalized.as_str())
        .map_err(|_| GitConfigError("the GitHub base URL is not a valid URI".into()))?;
    Ok(normalized)
}

fn is_repo_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Everything but unreserved characters (RFC 3986) and `/` is percent-encoded.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes everything but unreserved characters and `/`.
fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// Standard base64; padding is written, and accepted but not required on reading.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Standard base64; GitHub breaks it into lines, so whitespace is skipped.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
        .collect();
    BASE64.decode(compact).ok()
}

struct Head {
    sha: String,
    tree: String,
    committed_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct BranchResponse {
    commit: BranchCommit,
}

#[derive(Deserialize)]
struct BranchCommit {
    sha: String,
    commit: CommitDetail,
}

#[derive(Deserialize)]
struct CommitDetail {
    tree: Sha,
    committer: Option<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    date: Option<String>,
}

#[derive(Deserialize)]
struct Sha {
    sha: String,
}

#[derive(Deserialize)]
struct TreeResponse {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    mode: String,
    #[serde(rename = "type")]
    kind: String,
    sha: String,
}

#[derive(Deserialize)]
struct BlobResponse {
    content: String,
    encoding: String,
}

#[derive(Deserialize)]
struct Created {
    sha: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_skips_newlines() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let encoded = base64_encode(&bytes);
            let wrapped: String = encoded
                .as_bytes()
                .chunks(60)
                .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
                .collect();
            assert_eq!(base64_decode(&encoded).unwrap(), bytes);
            assert_eq!(base64_decode(&wrapped).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ").unwrap(), b"M");
        assert_eq!(base64_decode("TW\r\nFu\n").unwrap(), b"Man");
        assert!(base64_decode("T").is_none());
        assert!(base64_decode("TQ==TQ==").is_none());
        assert!(base64_decode("T$==").is_none());
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let repo = GitHubRepository::new(
            None,
            "acme/workflows",
            "main",
            "ghp_secret123",
            RetryPolicy::default(),
        )
        .unwrap();
        let debug = format!("{repo:?}");
        assert!(!debug.contains("ghp_secret123"), "{debug}");
        assert!(debug.contains("acme/workflows"));
    }

    #[test]
    fn configuration_is_checked() {
        let new = |base: Option<&str>, repo: &str, branch: &str, token: &str| {
            GitHubRepository::new(base, repo, branch, token, RetryPolicy::default())
        };
        assert!(new(Some("https://ghe.example.com/api/v3/"), "a/b", "main", "t").is_ok());
        assert!(new(
            Some("https://u:p@ghe.example.com/api/v3"),
            "a/b",
            "main",
            "t"
        )
        .is_err());
        assert!(new(Some("ftp://x"), "a/b", "main", "t").is_err());
        assert!(new(None, "a", "main", "t").is_err());
        assert!(new(None, "a/b/c", "main", "t").is_err());
        assert!(new(None, "a/..", "main", "t").is_err());
        assert!(new(None, "a/b", "-x", "t").is_err());
        assert!(new(None, "a/b", "main", "").is_err());
        assert!(new(None, "a/b", "main", "bad token").is_err());
    }

    #[test]
    fn rate_limits_are_told_from_refusals() {
        let answer =
            |status, retry_after: Option<&str>, remaining: Option<&str>, body: &str| Answer {
                status,
                retry_after: retry_after.map(str::to_owned),
                ratelimit_remaining: remaining.map(str::to_owned),
                ratelimit_reset: Some((Utc::now().timestamp() + 30).to_string()),
                body: body.to_string(),
            };
        let (e, wait) = classify(&answer(429, Some("7"), None, ""), "x").unwrap();
        assert_eq!(e, UpstreamError::RateLimited { service: SERVICE });
        assert_eq!(wait, Some(Duration::from_secs(7)));
        let (e, wait) = classify(&answer(403, None, Some("0"), "{}"), "x").unwrap();
        assert_eq!(e, UpstreamError::RateLimited { service: SERVICE });
        assert!(wait.unwrap() >= Duration::from_secs(29));
        let secondary = r#"{"message":"You have exceeded a secondary rate limit."}"#;
        let (e, _) = classify(&answer(403, None, Some("4999"), secondary), "x").unwrap();
        assert_eq!(e, UpstreamError::RateLimited { service: SERVICE });
        let refused = r#"{"message":"Resource not accessible by personal access token"}"#;
        let (e, _) = classify(&answer(403, None, Some("4999"), refused), "x").unwrap();
        assert_eq!(
            e,
            UpstreamError::Unauthorized {
                service: SERVICE,
                status: 403
            }
        );
        let (e, _) = classify(&answer(422, None, None, r#"{"message":"nope"}"#), "x").unwrap();
        assert!(
            matches!(e, UpstreamError::Rejected { status: 422, ref message, .. } if message == "nope")
        );
        assert!(classify(&answer(201, None, None, "{}"), "x").is_none());
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("feature/a b#c"), "feature/a%20b%23c");
        assert_eq!(encode_path("a-b.c_d~e/f"), "a-b.c_d~e/f");
        assert_eq!(encode_path("é%?"), "%C3%A9%25%3F");
    }
}
