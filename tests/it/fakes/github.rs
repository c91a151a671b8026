//! A fake GitHub REST API on loopback: one repository (`acme/workflows`, branch
//! `main`) held in memory as real Git objects (blobs, nested trees, commits, refs)
//! and the endpoints the GitHub connector uses, with GitHub's response shapes:
//!
//! - `GET  /repos/{o}/{r}/branches/{branch}`
//! - `GET  /repos/{o}/{r}/git/trees/{sha}` and `GET …/git/blobs/{sha}` (base64 with
//!   a newline every 60 characters, as GitHub sends it)
//! - `POST …/git/blobs`, `POST …/git/trees` (with `base_tree`, nested paths),
//!   `POST …/git/commits`, `PATCH …/git/refs/heads/{branch}` (fast forward only
//!   unless `force`)
//!
//! Every request needs `Authorization: Bearer <token>` (or `token <token>`), else
//! 401 `Bad credentials`. Faults can be queued for the next requests
//! ([`FakeGitHub::fail_next`]), and every request is recorded.
//! Object ids are SHA-256 prefixes, not Git's SHA-1: content-addressed all the same.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const OWNER: &str = "acme";
pub const REPO: &str = "workflows";
pub const BRANCH: &str = "main";

/// What the next request(s) get instead of a normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with `{"message": …}` (500, 502, 422, …).
    Status(u16),
    /// 429 with `Retry-After: seconds`.
    TooManyRequests { retry_after: u64 },
    /// 403 with `x-ratelimit-remaining: 0` and a reset `reset_in` seconds away.
    RateLimitExhausted { reset_in: u64 },
    /// 403 "Resource not accessible by personal access token".
    Forbidden,
    /// Answers normally after this delay.
    Slow(Duration),
    /// 200 with a truncated JSON body.
    Malformed,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, percent-decoded.
    pub path: String,
    /// Whether it carried the right token.
    pub authorized: bool,
}

/// A commit of the fake repository.
#[derive(Debug, Clone)]
pub struct FakeCommit {
    pub sha: String,
    pub message: String,
    pub parents: Vec<String>,
    pub tree: String,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    mode: String,
    kind: &'static str,
    sha: String,
}

#[derive(Default)]
struct Repo {
    blobs: HashMap<String, Vec<u8>>,
    trees: HashMap<String, Vec<Entry>>,
    commits: HashMap<String, (FakeCommit, i64)>,
    branches: BTreeMap<String, String>,
    /// Seconds since the epoch of the next commit (one second apart).
    clock: i64,
}

struct Inner {
    repo: Repo,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    /// Pushed to `main` just before the next ref update is handled.
    race: Option<(String, Vec<u8>)>,
}

struct Shared {
    token: String,
    base_url: String,
    inner: Mutex<Inner>,
}

/// The running fake; stops when dropped.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Serves on 127.0.0.1 (a free port) a repository whose `main` has one commit
    /// with `README.md`; requests must carry `token`.
    pub async fn start(token: &str) -> FakeGitHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitHub");
        let addr = listener.local_addr().expect("local address");
        let mut repo = Repo {
            clock: 1_700_000_000,
            ..Repo::default()
        };
        let readme = repo.put_blob(b"# workflows\n".to_vec());
        let tree = repo.write_tree(&BTreeMap::from([(
            "README.md".to_string(),
            ("100644".to_string(), readme),
        )]));
        let first = repo.put_commit("Initial commit", &tree, vec![]);
        repo.branches.insert(BRANCH.to_string(), first);
        let shared = Arc::new(Shared {
            token: token.to_string(),
            base_url: format!("http://{addr}"),
            inner: Mutex::new(Inner {
                repo,
                requests: Vec::new(),
                faults: VecDeque::new(),
                race: None,
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the fake GitHub");
        });
        FakeGitHub { shared, addr, task }
    }

    /// The API root to give the client (`http://127.0.0.1:port`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `owner/name`.
    pub fn repository(&self) -> String {
        format!("{OWNER}/{REPO}")
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Commits one file on `main` (as someone pushing); returns the commit sha.
    pub fn put_file(&self, path: &str, content: impl AsRef<[u8]>) -> String {
        self.put_files(&[(path, content.as_ref())], &format!("Add {path}"))
    }

    /// Commits these files together on `main`; returns the commit sha.
    pub fn put_files(&self, files: &[(&str, &[u8])], message: &str) -> String {
        let mut inner = self.inner();
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_vec()))
            .collect();
        inner.repo.push(BRANCH, &files, message)
    }

    /// Every file at the head of `main`, by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let inner = self.inner();
        let repo = &inner.repo;
        let head = &repo.branches[BRANCH];
        let tree = repo.commits[head].0.tree.clone();
        repo.flatten(&tree)
            .into_iter()
            .map(|(path, (_, sha))| (path, repo.blobs[&sha].clone()))
            .collect()
    }

    pub fn head_sha(&self) -> String {
        self.inner().repo.branches[BRANCH].clone()
    }

    pub fn commit(&self, sha: &str) -> Option<FakeCommit> {
        self.inner().repo.commits.get(sha).map(|(c, _)| c.clone())
    }

    /// First-parent history of `main`, newest first.
    pub fn log(&self) -> Vec<FakeCommit> {
        let inner = self.inner();
        let mut out = Vec::new();
        let mut next = inner.repo.branches.get(BRANCH).cloned();
        while let Some(sha) = next {
            let commit = inner.repo.commits[&sha].0.clone();
            next = commit.parents.first().cloned();
            out.push(commit);
        }
        out
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.inner().requests.clear();
    }

    /// The next `n` requests get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut inner = self.inner();
        for _ in 0..n {
            inner.faults.push_back(fault.clone());
        }
    }

    /// Someone else pushes `path` to `main` just before the next ref update.
    pub fn race_next_ref_update(&self, path: &str, content: &[u8]) {
        self.inner().race = Some((path.to_string(), content.to_vec()));
    }
}

impl Repo {
    fn put_blob(&mut self, content: Vec<u8>) -> String {
        let sha = object_id("blob", &content);
        self.blobs.insert(sha.clone(), content);
        sha
    }

    /// Writes nested trees for `files` (path → (mode, blob sha)); returns the root.
    fn write_tree(&mut self, files: &BTreeMap<String, (String, String)>) -> String {
        let mut here: BTreeMap<String, Entry> = BTreeMap::new();
        let mut folders: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
        for (path, (mode, sha)) in files {
            match path.split_once('/') {
                Some((folder, rest)) => {
                    folders
                        .entry(folder.to_string())
                        .or_default()
                        .insert(rest.to_string(), (mode.clone(), sha.clone()));
                }
                None => {
                    here.insert(
                        path.clone(),
                        Entry {
                            name: path.clone(),
                            mode: mode.clone(),
                            kind: "blob",
                            sha: sha.clone(),
                        },
                    );
                }
            }
        }
        for (folder, inside) in folders {
            let sha = self.write_tree(&inside);
            here.insert(
                folder.clone(),
                Entry {
                    name: folder,
                    mode: "040000".to_string(),
                    kind: "tree",
                    sha,
                },
            );
        }
        let entries: Vec<Entry> = here.into_values().collect();
        let listing: String = entries
            .iter()
            .map(|e| format!("{} {} {}\t{}\n", e.mode, e.kind, e.sha, e.name))
            .collect();
        let sha = object_id("tree", listing.as_bytes());
        self.trees.insert(sha.clone(), entries);
        sha
    }

    /// path → (mode, blob sha) of every file under `tree`.
    fn flatten(&self, tree: &str) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        self.flatten_into(tree, "", &mut out);
        out
    }

    fn flatten_into(&self, tree: &str, prefix: &str, out: &mut BTreeMap<String, (String, String)>) {
        for entry in &self.trees[tree] {
            let path = format!("{prefix}{}", entry.name);
            if entry.kind == "tree" {
                self.flatten_into(&entry.sha, &format!("{path}/"), out);
            } else {
                out.insert(path, (entry.mode.clone(), entry.sha.clone()));
            }
        }
    }

    fn put_commit(&mut self, message: &str, tree: &str, parents: Vec<String>) -> String {
        let at = self.clock;
        self.clock += 1;
        let sha = object_id(
            "commit",
            format!("{tree}\n{}\n{at}\n{message}", parents.join(" ")).as_bytes(),
        );
        let commit = FakeCommit {
            sha: sha.clone(),
            message: message.to_string(),
            parents,
            tree: tree.to_string(),
        };
        self.commits.insert(sha.clone(), (commit, at));
        sha
    }

    /// A commit of `files` on top of `branch`, which then points to it.
    fn push(&mut self, branch: &str, files: &[(String, Vec<u8>)], message: &str) -> String {
        let head = self.branches[branch].clone();
        let mut flat = self.flatten(&self.commits[&head].0.tree.clone());
        for (path, content) in files {
            let sha = self.put_blob(content.clone());
            flat.insert(path.clone(), ("100644".to_string(), sha));
        }
        let tree = self.write_tree(&flat);
        let commit = self.put_commit(message, &tree, vec![head]);
        self.branches.insert(branch.to_string(), commit.clone());
        commit
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        let mut pending = vec![of.to_string()];
        while let Some(sha) = pending.pop() {
            if sha == ancestor {
                return true;
            }
            if let Some((commit, _)) = self.commits.get(&sha) {
                pending.extend(commit.parents.iter().cloned());
            }
        }
        false
    }
}

fn object_id(kind: &str, content: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(content);
    hex::encode(hasher.finalize())[..40].to_string()
}

fn iso(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_decode(uri.path());
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .is_some_and(|t| t == shared.token);
    let fault = {
        let mut inner = shared.inner.lock().unwrap();
        inner.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            authorized,
        });
        inner.faults.pop_front()
    };
    match fault {
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(fault) => return faulty(fault),
        None => {}
    }
    if !authorized {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let prefix = format!("/repos/{OWNER}/{REPO}/");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let mut inner = shared.inner.lock().unwrap();
    let api = Api {
        base: format!("{}/repos/{OWNER}/{REPO}", shared.base_url),
    };
    let (status, value) = match (method.as_str(), rest) {
        ("GET", r) if r.starts_with("branches/") => {
            api.branch(&inner.repo, &r["branches/".len()..])
        }
        ("GET", r) if r.starts_with("git/trees/") => {
            api.tree(&inner.repo, &r["git/trees/".len()..])
        }
        ("GET", r) if r.starts_with("git/blobs/") => {
            api.blob(&inner.repo, &r["git/blobs/".len()..])
        }
        ("POST", "git/blobs") => api.create_blob(&mut inner.repo, &body),
        ("POST", "git/trees") => api.create_tree(&mut inner.repo, &body),
        ("POST", "git/commits") => api.create_commit(&mut inner.repo, &body),
        ("PATCH", r) if r.starts_with("git/refs/heads/") => {
            if let Some((path, content)) = inner.race.take() {
                inner
                    .repo
                    .push(BRANCH, &[(path, content)], "A concurrent push");
            }
            api.update_ref(&mut inner.repo, &r["git/refs/heads/".len()..], &body)
        }
        _ => (StatusCode::NOT_FOUND, message("Not Found")),
    };
    drop(inner);
    with_rate_headers((status, axum::Json(value)).into_response(), 4999)
}

fn message(text: &str) -> Value {
    json!({
        "message": text,
        "documentation_url": "https://docs.github.com/rest",
        "status": "",
    })
}

fn github_error(status: StatusCode, text: &str) -> Response {
    let mut value = message(text);
    value["status"] = json!(status.as_u16().to_string());
    with_rate_headers((status, axum::Json(value)).into_response(), 4999)
}

fn with_rate_headers(mut response: Response, remaining: u32) -> Response {
    let reset = chrono::Utc::now().timestamp() + 3600;
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", "5000".parse().unwrap());
    headers.insert(
        "x-ratelimit-remaining",
        remaining.to_string().parse().unwrap(),
    );
    headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    headers.insert("x-ratelimit-resource", "core".parse().unwrap());
    response
}

fn faulty(fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            let text = status.canonical_reason().unwrap_or("Error");
            github_error(status, text)
        }
        Fault::TooManyRequests { retry_after } => {
            let mut response = github_error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            response
        }
        Fault::RateLimitExhausted { reset_in } => {
            let mut response = with_rate_headers(
                github_error(
                    StatusCode::FORBIDDEN,
                    "API rate limit exceeded for user ID 1.",
                ),
                0,
            );
            let reset = chrono::Utc::now().timestamp() + reset_in as i64;
            response
                .headers_mut()
                .insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            response
        }
        Fault::Forbidden => github_error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by personal access token",
        ),
        Fault::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            r#"{"sha": "0123", "tree": [{"path": "#,
        )
            .into_response(),
        Fault::Slow(_) => unreachable!("handled by waiting"),
    }
}

struct Api {
    base: String,
}

type Answer = (StatusCode, Value);

fn unprocessable(text: &str) -> Answer {
    (StatusCode::UNPROCESSABLE_ENTITY, message(text))
}

impl Api {
    fn commit_json(&self, repo: &Repo, sha: &str) -> Value {
        let (commit, at) = &repo.commits[sha];
        let person =
            json!({ "name": "Fake Pusher", "email": "pusher@example.com", "date": iso(*at) });
        json!({
            "sha": sha,
            "node_id": format!("C_{sha}"),
            "url": format!("{}/commits/{sha}", self.base),
            "html_url": format!("https://github.com/{OWNER}/{REPO}/commit/{sha}"),
            "commit": {
                "author": person,
                "committer": person,
                "message": commit.message,
                "tree": { "sha": commit.tree, "url": format!("{}/git/trees/{}", self.base, commit.tree) },
                "url": format!("{}/git/commits/{sha}", self.base),
                "comment_count": 0,
                "verification": { "verified": false, "reason": "unsigned", "signature": null, "payload": null },
            },
            "author": null,
            "committer": null,
            "parents": commit.parents.iter().map(|p| json!({
                "sha": p,
                "url": format!("{}/commits/{p}", self.base),
            })).collect::<Vec<_>>(),
        })
    }

    fn branch(&self, repo: &Repo, name: &str) -> Answer {
        let Some(sha) = repo.branches.get(name) else {
            return (StatusCode::NOT_FOUND, message("Branch not found"));
        };
        (
            StatusCode::OK,
            json!({
                "name": name,
                "commit": self.commit_json(repo, sha),
                "_links": {
                    "self": format!("{}/branches/{name}", self.base),
                    "html": format!("https://github.com/{OWNER}/{REPO}/tree/{name}"),
                },
                "protected": false,
                "protection": { "enabled": false, "required_status_checks": { "enforcement_level": "off", "contexts": [], "checks": [] } },
                "protection_url": format!("{}/branches/{name}/protection", self.base),
            }),
        )
    }

    fn tree(&self, repo: &Repo, sha: &str) -> Answer {
        // GitHub also takes a commit sha here and answers with its tree.
        let tree_sha = match repo.commits.get(sha) {
            Some((commit, _)) => commit.tree.clone(),
            None => sha.to_string(),
        };
        let Some(entries) = repo.trees.get(&tree_sha) else {
            return (StatusCode::NOT_FOUND, message("Not Found"));
        };
        let tree: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "path": e.name,
                    "mode": e.mode,
                    "type": e.kind,
                    "sha": e.sha,
                    "url": format!("{}/git/{}s/{}", self.base, e.kind, e.sha),
                });
                if e.kind == "blob" {
                    v["size"] = json!(repo.blobs[&e.sha].len());
                }
                v
            })
            .collect();
        (
            StatusCode::OK,
            json!({
                "sha": tree_sha,
                "url": format!("{}/git/trees/{tree_sha}", self.base),
                "tree": tree,
                "truncated": false,
            }),
        )
    }

    fn blob(&self, repo: &Repo, sha: &str) -> Answer {
        let Some(content) = repo.blobs.get(sha) else {
            return (StatusCode::NOT_FOUND, message("Not Found"));
        };
        (
            StatusCode::OK,
            json!({
                "sha": sha,
                "node_id": format!("B_{sha}"),
                "size": content.len(),
                "url": format!("{}/git/blobs/{sha}", self.base),
                "content": base64_lines(content),
                "encoding": "base64",
            }),
        )
    }

    fn create_blob(&self, repo: &mut Repo, body: &Value) -> Answer {
        let Some(content) = body["content"].as_str() else {
            return unprocessable("Invalid request.\n\n\"content\" wasn't supplied.");
        };
        let bytes = match body["encoding"].as_str().unwrap_or("utf-8") {
            "utf-8" => content.as_bytes().to_vec(),
            "base64" => match base64_decode(content) {
                Some(bytes) => bytes,
                None => return unprocessable("content is not valid Base64"),
            },
            _ => return unprocessable("encoding must be utf-8 or base64"),
        };
        let sha = repo.put_blob(bytes);
        (
            StatusCode::CREATED,
            json!({ "url": format!("{}/git/blobs/{sha}", self.base), "sha": sha }),
        )
    }

    fn create_tree(&self, repo: &mut Repo, body: &Value) -> Answer {
        let mut flat = match body["base_tree"].as_str() {
            Some(base) if repo.trees.contains_key(base) => repo.flatten(base),
            Some(_) => return unprocessable("Invalid tree info"),
            None => BTreeMap::new(),
        };
        let Some(entries) = body["tree"].as_array() else {
            return unprocessable("Invalid request.\n\n\"tree\" wasn't supplied.");
        };
        for entry in entries {
            let Some(path) = entry["path"].as_str() else {
                return unprocessable("tree.path wasn't supplied");
            };
            if path.is_empty()
                || path.starts_with('/')
                || path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return unprocessable("tree.path contains a malformed path component");
            }
            let mode = entry["mode"].as_str().unwrap_or("100644").to_string();
            if entry["type"].as_str() != Some("blob") {
                return unprocessable("only blobs are supported by this fake");
            }
            let sha = match (&entry["sha"], entry["content"].as_str()) {
                (Value::Null, Some(content)) => repo.put_blob(content.as_bytes().to_vec()),
                (Value::Null, None) if entry.get("sha").is_some() => {
                    flat.remove(path);
                    continue;
                }
                (Value::String(sha), _) if repo.blobs.contains_key(sha) => sha.clone(),
                _ => return unprocessable("GitRPC::BadObjectState"),
            };
            flat.insert(path.to_string(), (mode, sha));
        }
        let sha = repo.write_tree(&flat);
        let (_, tree) = self.tree(repo, &sha);
        (StatusCode::CREATED, tree)
    }

    fn create_commit(&self, repo: &mut Repo, body: &Value) -> Answer {
        let (Some(message), Some(tree)) = (body["message"].as_str(), body["tree"].as_str()) else {
            return unprocessable("Invalid request.\n\n\"message\", \"tree\" weren't supplied.");
        };
        if !repo.trees.contains_key(tree) {
            return unprocessable("Tree SHA does not exist");
        }
        let parents: Vec<String> = body["parents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if parents.iter().any(|p| !repo.commits.contains_key(p)) {
            return unprocessable("Parent SHA does not exist or is not a commit object");
        }
        let sha = repo.put_commit(message, tree, parents);
        let full = self.commit_json(repo, &sha);
        (
            StatusCode::CREATED,
            json!({
                "sha": sha,
                "node_id": full["node_id"],
                "url": full["commit"]["url"],
                "html_url": full["html_url"],
                "author": full["commit"]["author"],
                "committer": full["commit"]["committer"],
                "tree": full["commit"]["tree"],
                "message": message,
                "parents": full["parents"],
                "verification": full["commit"]["verification"],
            }),
        )
    }

    fn update_ref(&self, repo: &mut Repo, branch: &str, body: &Value) -> Answer {
        let Some(current) = repo.branches.get(branch).cloned() else {
            return unprocessable("Reference does not exist");
        };
        let Some(sha) = body["sha"].as_str() else {
            return unprocessable("Invalid request.\n\n\"sha\" wasn't supplied.");
        };
        if !repo.commits.contains_key(sha) {
            return unprocessable("Object does not exist");
        }
        let force = body["force"].as_bool().unwrap_or(false);
        if !force && !repo.is_ancestor(&current, sha) {
            return unprocessable("Update is not a fast forward");
        }
        repo.branches.insert(branch.to_string(), sha.to_string());
        (
            StatusCode::OK,
            json!({
                "ref": format!("refs/heads/{branch}"),
                "node_id": format!("REF_{branch}"),
                "url": format!("{}/git/refs/heads/{branch}", self.base),
                "object": {
                    "sha": sha,
                    "type": "commit",
                    "url": format!("{}/git/commits/{sha}", self.base),
                },
            }),
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 as GitHub sends blob contents: a newline after every 60 characters.
fn base64_lines(bytes: &[u8]) -> String {
    let mut plain = Vec::with_capacity(bytes.len() * 4 / 3 + 4);
    for group in bytes.chunks(3) {
        let padded = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, padded[0], padded[1], padded[2]]);
        for k in 0..4 {
            if k <= group.len() {
                plain.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]);
            } else {
                plain.push(b'=');
            }
        }
    }
    let mut out = String::new();
    for line in plain.chunks(60) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if symbols.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::new();
    for quad in symbols.chunks(4) {
        let mut n = 0u32;
        let mut pads = 0;
        for &symbol in quad {
            let value = if symbol == b'=' {
                pads += 1;
                0
            } else {
                ALPHABET.iter().position(|a| *a == symbol)? as u32
            };
            n = (n << 6) | value;
        }
        let decoded = n.to_be_bytes();
        out.extend_from_slice(&decoded[1..4 - pads.min(2)]);
    }
    Some(out)
}
