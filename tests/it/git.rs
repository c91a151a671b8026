//! Git connectors: GitHub against the fake GitHub on loopback, and a real local
//! repository driven with the `git` CLI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use workflowops::connectors::git::{
    GitHubRepository, GitRepository, GitSnapshot, LocalGitRepository,
};
use workflowops::connectors::{RetryPolicy, UpstreamError};

use crate::fakes::github::{FakeGitHub, Fault, BRANCH};

const TOKEN: &str = "ghp_fake_token_0123456789";

fn policy() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(2),
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    }
}

fn client(fake: &FakeGitHub, token: &str, policy: RetryPolicy) -> GitHubRepository {
    GitHubRepository::new(
        Some(&fake.base_url()),
        &fake.repository(),
        BRANCH,
        token,
        policy,
    )
    .expect("a valid configuration")
}

/// A workflow JSON big enough that its base64 spans many lines.
fn workflow(name: &str) -> Vec<u8> {
    let nodes: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "id": format!("node-{i}"),
                "name": format!("Step {i} ünïcödé"),
                "type": "n8n-nodes-base.set",
                "parameters": { "value": "x".repeat(i) },
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "name": name, "nodes": nodes, "connections": {}, "settings": {}
    }))
    .unwrap()
}

fn sidecar(slug: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "canonical_id": format!("cw-{slug}"), "canonical_slug": slug, "tags": ["prod"]
    }))
    .unwrap()
}

fn paths(snapshot: &GitSnapshot) -> Vec<&str> {
    snapshot.files.iter().map(|f| f.path.as_str()).collect()
}

fn assert_no_token(error: &UpstreamError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains("wrong-token"), "token leaked: {shown}");
}

async fn seeded() -> FakeGitHub {
    let fake = FakeGitHub::start(TOKEN).await;
    fake.put_files(
        &[
            ("workflows/orders.json", &workflow("Orders")),
            ("workflows/orders.wfo.json", &sidecar("orders")),
            ("workflows/billing.json", &workflow("Billing")),
            ("workflows/billing.wfo.json", &sidecar("billing")),
            ("workflows/archive/old.json", &workflow("Old")),
            ("elsewhere/other.json", b"{}"),
        ],
        "Seed workflows",
    );
    fake
}

#[tokio::test]
async fn github_reads_a_folder_of_workflows_and_sidecars() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());

    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(
        paths(&snapshot),
        [
            "workflows/billing.json",
            "workflows/billing.wfo.json",
            "workflows/orders.json",
            "workflows/orders.wfo.json"
        ],
        "only files directly in the folder, sorted"
    );
    let files = fake.files();
    for file in &snapshot.files {
        assert_eq!(file.content, files[&file.path], "{}", file.path);
        assert_eq!(file.blob_sha.len(), 40);
    }
    assert_eq!(snapshot.commit_sha, fake.head_sha());
    assert!(snapshot.committed_at.is_some());

    let again = repo.read_folder("/workflows/").await.unwrap();
    assert_eq!(again, snapshot, "surrounding slashes do not matter");
    let root = repo.read_folder("").await.unwrap();
    assert_eq!(paths(&root), ["README.md"]);
    let nested = repo.read_folder("workflows/archive").await.unwrap();
    assert_eq!(paths(&nested), ["workflows/archive/old.json"]);
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.authorized && r.method == "GET"));

    // Someone pushes: the next read sees the new head.
    let pushed = fake.put_file("workflows/late.json", b"{}");
    let later = repo.read_folder("workflows").await.unwrap();
    assert_eq!(later.commit_sha, pushed);
    assert_eq!(later.files.len(), 5);
}

#[tokio::test]
async fn github_commits_two_files_in_one_commit() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    let before = fake.head_sha();
    let commits_before = fake.log().len();

    let files = vec![
        ("workflows/invoices.json".to_string(), workflow("Invoices")),
        (
            "workflows/invoices.wfo.json".to_string(),
            sidecar("invoices"),
        ),
    ];
    let sha = repo.commit_files(&files, "Onboard Invoices").await.unwrap();

    assert_eq!(sha, fake.head_sha(), "the branch moved to the new commit");
    assert_eq!(fake.log().len(), commits_before + 1, "one new commit");
    assert_eq!(fake.log()[0].sha, sha);
    let commit = fake.commit(&sha).unwrap();
    assert_eq!(commit.message, "Onboard Invoices");
    assert_eq!(commit.parents, vec![before]);
    let stored = fake.files();
    assert_eq!(stored["workflows/invoices.json"], files[0].1);
    assert_eq!(stored["workflows/invoices.wfo.json"], files[1].1);
    assert!(
        stored.contains_key("workflows/orders.json"),
        "the rest is kept"
    );

    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(snapshot.commit_sha, sha);
    assert_eq!(snapshot.files.len(), 6);

    // The same contents again: no empty commit.
    let same = repo.commit_files(&files, "Onboard Invoices").await.unwrap();
    assert_eq!(same, sha);
    assert_eq!(fake.log().len(), commits_before + 1);

    // Updating one of them.
    let update = vec![(
        "workflows/invoices.wfo.json".to_string(),
        sidecar("invoices-2"),
    )];
    let updated = repo.commit_files(&update, "Rename").await.unwrap();
    assert_ne!(updated, sha);
    assert_eq!(fake.files()["workflows/invoices.wfo.json"], update[0].1);

    // Deleting both (and a path the branch never held) in one commit; again: none.
    let deletes = vec![
        "workflows/invoices.json".to_string(),
        "workflows/invoices.wfo.json".to_string(),
        "workflows/never.json".to_string(),
    ];
    let removed = repo.commit_changes(&[], &deletes, "Remove").await.unwrap();
    assert_eq!(removed, fake.head_sha());
    assert_eq!(fake.log()[0].message, "Remove");
    let stored = fake.files();
    assert!(
        !stored.contains_key("workflows/invoices.json"),
        "{stored:?}"
    );
    assert!(
        stored.contains_key("workflows/orders.json"),
        "the rest is kept"
    );
    let again = repo.commit_changes(&[], &deletes, "Remove").await.unwrap();
    assert_eq!(again, removed, "nothing left to delete: no commit");
}

#[tokio::test]
async fn github_redoes_the_commit_when_the_branch_moves_meanwhile() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.race_next_ref_update("workflows/pushed.json", b"{\"by\":\"someone\"}");

    let files = vec![("workflows/mine.json".to_string(), workflow("Mine"))];
    let sha = repo.commit_files(&files, "Mine").await.unwrap();

    assert_eq!(sha, fake.head_sha());
    let stored = fake.files();
    assert!(
        stored.contains_key("workflows/pushed.json"),
        "their push is kept"
    );
    assert_eq!(stored["workflows/mine.json"], files[0].1);
    let log = fake.log();
    assert_eq!(log[0].message, "Mine");
    assert_eq!(log[1].message, "A concurrent push");
}

#[tokio::test]
async fn github_bad_token_is_unauthorized() {
    let fake = seeded().await;
    let repo = client(&fake, "wrong-token", policy());
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unauthorized {
            service: "github",
            status: 401
        }
    );
    assert!(!error.retryable());
    assert_eq!(fake.requests().len(), 1, "401 is not retried");
    assert_no_token(&error);

    let files = vec![("workflows/x.json".to_string(), b"{}".to_vec())];
    let error = repo.commit_files(&files, "x").await.unwrap_err();
    assert!(matches!(
        error,
        UpstreamError::Unauthorized { status: 401, .. }
    ));

    // A token without access to the repository.
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(1, Fault::Forbidden);
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unauthorized {
            service: "github",
            status: 403
        }
    );
}

#[tokio::test]
async fn github_missing_folder_branch_or_repository_is_not_found() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());

    let error = repo.read_folder("nope").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::NotFound {
            service: "github",
            what: "folder nope".into()
        }
    );
    let error = repo.read_folder("workflows/nope/deeper").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { what, .. } if what == "folder workflows/nope")
    );
    let error = repo.read_folder("workflows/orders.json").await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::NotFound { .. }),
        "a file is no folder"
    );
    let error = repo.read_folder("../x").await.unwrap_err();
    assert!(matches!(error, UpstreamError::Local { .. }));

    let other_branch = GitHubRepository::new(
        Some(&fake.base_url()),
        &fake.repository(),
        "release",
        TOKEN,
        policy(),
    )
    .unwrap();
    let error = other_branch.read_folder("workflows").await.unwrap_err();
    assert!(matches!(&error, UpstreamError::NotFound { what, .. } if what.contains("release")));

    let other_repo = GitHubRepository::new(
        Some(&fake.base_url()),
        "acme/nothing",
        BRANCH,
        TOKEN,
        policy(),
    )
    .unwrap();
    let error = other_repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { what, .. } if what.contains("acme/nothing"))
    );
}

#[tokio::test]
async fn github_retries_a_500_then_succeeds() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(2, Fault::Status(500));
    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(snapshot.files.len(), 4);
    let requests = fake.requests();
    assert_eq!(requests[0].path, requests[2].path, "the same call, retried");

    // During a commit too: blobs, tree, commit and ref update are safe to repeat.
    fake.fail_next(1, Fault::Status(502));
    let files = vec![("workflows/retry.json".to_string(), b"{}".to_vec())];
    let sha = repo.commit_files(&files, "Retry").await.unwrap();
    assert_eq!(sha, fake.head_sha());
}

#[tokio::test]
async fn github_persistent_500_is_unavailable() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(3, Fault::Status(500));
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unavailable {
            service: "github",
            status: 500
        }
    );
    assert!(error.retryable());
    assert_eq!(fake.requests().len(), 3, "policy.attempts in all");
    assert_no_token(&error);

    // Nothing half-written by a commit that failed.
    fake.fail_next(3, Fault::Status(503));
    let head = fake.head_sha();
    let files = vec![("workflows/x.json".to_string(), b"{}".to_vec())];
    let error = repo.commit_files(&files, "x").await.unwrap_err();
    assert!(matches!(
        error,
        UpstreamError::Unavailable { status: 503, .. }
    ));
    assert_eq!(fake.head_sha(), head);
}

#[tokio::test]
async fn github_other_4xx_is_rejected_at_once() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(1, Fault::Status(422));
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(matches!(error, UpstreamError::Rejected { status: 422, .. }));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn github_malformed_answer_is_malformed() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(1, Fault::Malformed);
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Malformed {
                service: "github",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.retryable());
    assert_no_token(&error);
}

#[tokio::test]
async fn github_honours_retry_after_and_gives_up_on_long_waits() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    fake.fail_next(1, Fault::TooManyRequests { retry_after: 1 });
    let started = Instant::now();
    repo.read_folder("workflows").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited Retry-After"
    );

    // Asked to wait longer than max_delay: RateLimited at once, not retried early.
    fake.clear_requests();
    fake.fail_next(1, Fault::TooManyRequests { retry_after: 600 });
    let started = Instant::now();
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(error, UpstreamError::RateLimited { service: "github" });
    assert!(error.retryable());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.requests().len(), 1);

    // The primary rate limit exhausted: 403 with x-ratelimit-remaining 0.
    fake.fail_next(1, Fault::RateLimitExhausted { reset_in: 3600 });
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(error, UpstreamError::RateLimited { service: "github" });
    // ... and a reset close enough is waited for.
    fake.fail_next(1, Fault::RateLimitExhausted { reset_in: 0 });
    repo.read_folder("workflows").await.unwrap();
}

#[tokio::test]
async fn github_slow_answers_time_out_and_are_retried() {
    let fake = seeded().await;
    let quick = RetryPolicy {
        timeout: Duration::from_millis(300),
        ..policy()
    };
    let repo = client(&fake, TOKEN, quick);
    fake.fail_next(1, Fault::Slow(Duration::from_secs(2)));
    repo.read_folder("workflows").await.unwrap();

    fake.fail_next(3, Fault::Slow(Duration::from_secs(2)));
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Timeout {
            service: "github",
            timeout: Duration::from_millis(300)
        }
    );
}

#[tokio::test]
async fn github_unreachable_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let policy = RetryPolicy {
        attempts: 2,
        ..policy()
    };
    let repo =
        GitHubRepository::new(Some(&closed), "acme/workflows", BRANCH, TOKEN, policy).unwrap();
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Unreachable {
                service: "github",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.retryable());
    assert_no_token(&error);
}

#[tokio::test]
async fn github_refuses_paths_that_escape() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    for bad in ["../x.json", "/abs.json", "a/./b.json", ".git/config"] {
        let files = vec![(bad.to_string(), b"{}".to_vec())];
        let error = repo.commit_files(&files, "bad").await.unwrap_err();
        assert!(
            matches!(
                error,
                UpstreamError::Local {
                    service: "github",
                    ..
                }
            ),
            "{bad}: {error:?}"
        );
    }
    assert!(fake.requests().is_empty(), "refused before any call");
}

#[tokio::test]
async fn github_token_is_not_in_debug() {
    let fake = seeded().await;
    let repo = client(&fake, TOKEN, policy());
    let shown = format!("{repo:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
}

// ---- Local working copy ----

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A repository on `main` with two workflows, their sidecars, a nested file and a
/// README, in one initial commit.
fn local_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("workflows/archive")).unwrap();
    std::fs::write(root.join("README.md"), "# workflows\n").unwrap();
    std::fs::write(root.join("workflows/orders.json"), workflow("Orders")).unwrap();
    std::fs::write(root.join("workflows/orders.wfo.json"), sidecar("orders")).unwrap();
    std::fs::write(root.join("workflows/billing.json"), workflow("Billing")).unwrap();
    std::fs::write(root.join("workflows/billing.wfo.json"), sidecar("billing")).unwrap();
    std::fs::write(root.join("workflows/archive/old.json"), workflow("Old")).unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "Initial commit"]);
    dir
}

fn commit_count(dir: &Path) -> usize {
    git(dir, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn local_reads_a_folder_at_the_branch_head() {
    let dir = local_repo();
    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();

    // Uncommitted edits in the working tree are not read.
    std::fs::write(
        dir.path().join("workflows/orders.json"),
        b"{\"dirty\":true}",
    )
    .unwrap();
    std::fs::write(dir.path().join("workflows/untracked.json"), b"{}").unwrap();

    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(
        paths(&snapshot),
        [
            "workflows/billing.json",
            "workflows/billing.wfo.json",
            "workflows/orders.json",
            "workflows/orders.wfo.json"
        ]
    );
    assert_eq!(snapshot.files[2].content, workflow("Orders"));
    assert_eq!(snapshot.files[3].content, sidecar("orders"));
    let head = git(dir.path(), &["rev-parse", "HEAD"]);
    assert_eq!(snapshot.commit_sha, head.trim());
    assert!(snapshot.committed_at.is_some());
    let blob = git(dir.path(), &["rev-parse", "HEAD:workflows/orders.wfo.json"]);
    assert_eq!(snapshot.files[3].blob_sha, blob.trim());

    let root = repo.read_folder("").await.unwrap();
    assert_eq!(paths(&root), ["README.md"]);
    let nested = repo.read_folder("workflows/archive/").await.unwrap();
    assert_eq!(paths(&nested), ["workflows/archive/old.json"]);
}

#[tokio::test]
async fn local_commits_files_in_one_commit() {
    let dir = local_repo();
    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();
    let before = commit_count(dir.path());
    // Something else staged is not swept into the commit.
    std::fs::write(dir.path().join("README.md"), "changed\n").unwrap();
    git(dir.path(), &["add", "README.md"]);

    let files = vec![
        ("workflows/invoices.json".to_string(), workflow("Invoices")),
        (
            "workflows/invoices.wfo.json".to_string(),
            sidecar("invoices"),
        ),
    ];
    let sha = repo.commit_files(&files, "Onboard Invoices").await.unwrap();

    assert_eq!(sha, git(dir.path(), &["rev-parse", "HEAD"]).trim());
    assert_eq!(commit_count(dir.path()), before + 1);
    let log = git(dir.path(), &["log", "-1", "--format=%an <%ae>%n%s"]);
    assert_eq!(
        log,
        "workflowops <workflowops@localhost>\nOnboard Invoices\n"
    );
    let changed = git(dir.path(), &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(
        changed,
        "workflows/invoices.json\nworkflows/invoices.wfo.json\n"
    );
    let staged = git(dir.path(), &["diff", "--cached", "--name-only"]);
    assert_eq!(
        staged, "README.md\n",
        "the other staged change stays staged"
    );

    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(snapshot.commit_sha, sha);
    assert_eq!(snapshot.files.len(), 6);
    let invoices = snapshot
        .files
        .iter()
        .find(|f| f.path == "workflows/invoices.json")
        .unwrap();
    assert_eq!(invoices.content, files[0].1);

    // The same contents again: no empty commit.
    let same = repo.commit_files(&files, "Again").await.unwrap();
    assert_eq!(same, sha);
    assert_eq!(commit_count(dir.path()), before + 1);

    // A new folder, and another author.
    let repo = LocalGitRepository::new(dir.path(), "main")
        .unwrap()
        .with_author("Ops Bot", "ops@example.com")
        .unwrap();
    let files = vec![("staging/new.json".to_string(), b"{}".to_vec())];
    repo.commit_files(&files, "New folder").await.unwrap();
    let log = git(dir.path(), &["log", "-1", "--format=%an <%ae>|%cn"]);
    assert_eq!(log, "Ops Bot <ops@example.com>|Ops Bot\n");

    // Deleting one file while writing another, in one commit; a path never held is
    // skipped; the other staged change still stays staged.
    let before = commit_count(dir.path());
    let written = vec![("staging/other.json".to_string(), b"[]".to_vec())];
    let deletes = vec![
        "workflows/invoices.json".to_string(),
        "workflows/never.json".to_string(),
    ];
    let sha = repo
        .commit_changes(&written, &deletes, "Swap")
        .await
        .unwrap();
    assert_eq!(sha, git(dir.path(), &["rev-parse", "HEAD"]).trim());
    assert_eq!(commit_count(dir.path()), before + 1);
    let changed = git(dir.path(), &["show", "--name-status", "--format=", "HEAD"]);
    assert_eq!(
        changed,
        "A\tstaging/other.json\nD\tworkflows/invoices.json\n"
    );
    assert!(!dir.path().join("workflows/invoices.json").exists());
    let staged = git(dir.path(), &["diff", "--cached", "--name-only"]);
    assert_eq!(staged, "README.md\n");
    // a path both written and deleted is refused, nothing written
    let error = repo
        .commit_changes(&written, &["staging/other.json".to_string()], "x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("refused path"), "{error}");
    assert_eq!(commit_count(dir.path()), before + 1);
}

#[tokio::test]
async fn local_refuses_paths_that_escape() {
    let dir = local_repo();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();
    let before = commit_count(dir.path());
    let escape = format!("{}/evil.json", outside.path().display());
    for bad in [
        "../evil.json",
        "workflows/../../evil.json",
        escape.as_str(),
        ".git/hooks/pre-commit",
        "link/evil.json",
    ] {
        let files = vec![(bad.to_string(), b"{}".to_vec())];
        let error = repo.commit_files(&files, "evil").await.unwrap_err();
        assert!(
            matches!(&error, UpstreamError::Local { service: "git", message } if message.contains("refused path")),
            "{bad}: {error:?}"
        );
    }
    assert!(!outside.path().join("evil.json").exists());
    assert!(!dir.path().parent().unwrap().join("evil.json").exists());
    assert!(!dir.path().join(".git/hooks/pre-commit").exists());
    assert_eq!(commit_count(dir.path()), before);
}

#[tokio::test]
async fn local_missing_repository_folder_or_branch() {
    let missing = tempfile::tempdir().unwrap();
    let gone = missing.path().join("gone");
    let repo = LocalGitRepository::new(&gone, "main").unwrap();
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { service: "git", what } if what.starts_with("repository")),
        "{error:?}"
    );
    let files = vec![("a.json".to_string(), b"{}".to_vec())];
    let error = repo.commit_files(&files, "x").await.unwrap_err();
    assert!(matches!(error, UpstreamError::NotFound { .. }));
    assert!(!gone.exists(), "nothing created");

    // A plain folder, even inside another repository, is not a repository.
    let dir = local_repo();
    let repo = LocalGitRepository::new(dir.path().join("workflows"), "main").unwrap();
    let error = repo.read_folder("").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { what, .. } if what.starts_with("repository")),
        "{error:?}"
    );

    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();
    let error = repo.read_folder("nope").await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::NotFound {
            service: "git",
            what: "folder nope".into()
        }
    );
    let error = repo.read_folder("workflows/orders.json").await.unwrap_err();
    assert!(matches!(error, UpstreamError::NotFound { .. }));

    let repo = LocalGitRepository::new(dir.path(), "release").unwrap();
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { what, .. } if what.starts_with("branch release")),
        "{error:?}"
    );
    // Committing to a branch that is not checked out is refused.
    let error = repo.commit_files(&files, "x").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::Local { message, .. } if message.contains("checked out")),
        "{error:?}"
    );
}

#[tokio::test]
async fn local_failed_commit_leaves_the_working_copy_as_it_was() {
    let dir = local_repo();
    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();
    let before = commit_count(dir.path());
    // Another git process holds the index.
    std::fs::write(dir.path().join(".git/index.lock"), b"").unwrap();

    let files = vec![
        ("workflows/orders.json".to_string(), b"{\"new\":1}".to_vec()),
        ("workflows/brand-new.json".to_string(), b"{}".to_vec()),
    ];
    let error = repo.commit_files(&files, "x").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::Local { service: "git", message } if message.contains("index.lock")),
        "{error:?}"
    );

    std::fs::remove_file(dir.path().join(".git/index.lock")).unwrap();
    assert_eq!(commit_count(dir.path()), before);
    assert_eq!(
        std::fs::read(dir.path().join("workflows/orders.json")).unwrap(),
        workflow("Orders")
    );
    assert!(!dir.path().join("workflows/brand-new.json").exists());
    let status = git(dir.path(), &["status", "--porcelain"]);
    assert_eq!(status, "", "clean working copy");
}

#[tokio::test]
async fn local_first_commit_into_an_empty_repository() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let repo = LocalGitRepository::new(dir.path(), "main").unwrap();
    let error = repo.read_folder("workflows").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::NotFound { what, .. } if what.starts_with("branch main")),
        "{error:?}"
    );

    let files = vec![
        ("workflows/a.json".to_string(), workflow("A")),
        ("workflows/a.wfo.json".to_string(), sidecar("a")),
    ];
    let sha = repo.commit_files(&files, "First").await.unwrap();
    assert_eq!(commit_count(dir.path()), 1);
    let snapshot = repo.read_folder("workflows").await.unwrap();
    assert_eq!(snapshot.commit_sha, sha);
    assert_eq!(
        paths(&snapshot),
        ["workflows/a.json", "workflows/a.wfo.json"]
    );
}
