//! A local Git working copy driven with the `git` CLI: no shell, arguments passed
//! one by one, `GIT_TERMINAL_PROMPT=0`, `LC_ALL=C`, literal pathspecs, and the
//! caller's `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE`/author variables removed so
//! the process environment cannot redirect it.
//!
//! Reads use the object database at the branch head (`git rev-parse`,
//! `git ls-tree`, one `git cat-file --batch` for all blobs), never the working
//! tree, so uncommitted edits are not read and a bare repository can be read too.
//!
//! Commits need the branch checked out in the working copy (refused otherwise, so
//! nothing lands on another branch): the files are written, `git add`ed and
//! committed with `git commit -- <paths>` (only those paths, even if other changes
//! are staged), author and committer set from [`LocalGitRepository::with_author`],
//! hooks and signing off (`--no-verify`, `commit.gpgsign=false`), so nothing can
//! prompt or hang. If adding or committing fails, the files are put back as they
//! were and unstaged. Commits are serialised within the process. Writes refuse to
//! go through a symlink, so a link in the working copy cannot lead outside it.
//!
//! Commands run as Tokio child processes and are killed after the timeout. (They
//! ran on the blocking pool, polling for the exit with sleeps up to 20 ms: a read of
//! a folder, six `git` commands, waited about 100 ms in those sleeps.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::Instrument;

use super::{
    check_branch, check_files, folder_segments, join_path, sorted, GitConfigError, GitFile,
    GitRepository, GitSnapshot, PathRefused,
};
use crate::connectors::UpstreamError;

const SERVICE: &str = "git";
/// Longest stderr kept in an error.
const STDERR_CHARS: usize = 500;

/// A local working copy on one branch.
#[derive(Debug)]
pub struct LocalGitRepository {
    path: PathBuf,
    branch: String,
    author_name: String,
    author_email: String,
    timeout: Duration,
    /// One commit at a time (git's index lock would refuse a second anyway).
    write: tokio::sync::Mutex<()>,
}

impl LocalGitRepository {
    /// The working copy whose top level is `path`, on `branch`. Nothing is checked
    /// on disk until the first call: a missing path, or one that is not the top of
    /// a working copy (a plain folder inside some other repository, say), is
    /// `NotFound { what: "repository …" }` then. Author `workflowops <workflowops@localhost>`,
    /// 30 s per git command.
    pub fn new(path: impl Into<PathBuf>, branch: &str) -> Result<Self, GitConfigError> {
        check_branch(branch)?;
        Ok(LocalGitRepository {
            path: path.into(),
            branch: branch.to_string(),
            author_name: "workflowops".to_string(),
            author_email: "workflowops@localhost".to_string(),
            timeout: Duration::from_secs(30),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Author and committer of the commits made here.
    pub fn with_author(mut self, name: &str, email: &str) -> Result<Self, GitConfigError> {
        let bad = |s: &str| s.trim().is_empty() || s.contains(['<', '>', '\n', '\r', '\0']);
        if bad(name) || bad(email) {
            return Err(GitConfigError(format!(
                "invalid commit author {name:?} <{email:?}>"
            )));
        }
        self.author_name = name.to_string();
        self.author_email = email.to_string();
        Ok(self)
    }

    /// Longest a single git command may run before it is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    fn missing_repository(&self) -> UpstreamError {
        UpstreamError::NotFound {
            service: SERVICE,
            what: format!("repository {}", self.path.display()),
        }
    }

    /// Runs `git` in `dir` (the configured path unless given).
    async fn git(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, UpstreamError> {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(dir.unwrap_or(&self.path))
            .args(["-c", "commit.gpgsign=false", "-c", "core.quotepath=off"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("LC_ALL", "C")
            .env("GIT_AUTHOR_NAME", &self.author_name)
            .env("GIT_AUTHOR_EMAIL", &self.author_email)
            .env("GIT_COMMITTER_NAME", &self.author_name)
            .env("GIT_COMMITTER_EMAIL", &self.author_email);
        for inherited in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CEILING_DIRECTORIES",
            "GIT_AUTHOR_DATE",
            "GIT_COMMITTER_DATE",
        ] {
            command.env_remove(inherited);
        }
        let timeout = self.timeout;
        let span = tracing::debug_span!("git", command = %args.first().copied().unwrap_or(""));
        let ran = run(command, stdin, timeout).instrument(span).await;
        match ran {
            Ok(output) => Ok(output),
            Err(RunError::TimedOut) => Err(UpstreamError::Timeout {
                service: SERVICE,
                timeout,
            }),
            Err(RunError::Spawn(e)) => Err(UpstreamError::Local {
                service: SERVICE,
                message: format!("cannot run git: {e}"),
            }),
        }
    }

    /// Runs `git` and requires success; a failure says which command and why.
    async fn git_ok(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, UpstreamError> {
        let output = self.git(dir, args, stdin).await?;
        if output.success {
            Ok(output.stdout)
        } else if output.stderr.contains("not a git repository") {
            Err(self.missing_repository())
        } else {
            Err(output.failure(args))
        }
    }

    /// The top level of the working copy, which must be the configured path: git
    /// would otherwise find an enclosing repository and read or write there.
    async fn top_level(&self) -> Result<PathBuf, UpstreamError> {
        let configured =
            std::fs::canonicalize(&self.path).map_err(|_| self.missing_repository())?;
        if !configured.is_dir() {
            return Err(self.missing_repository());
        }
        let output = self
            .git(None, &["rev-parse", "--show-toplevel"], None)
            .await?;
        if !output.success {
            return Err(if output.code == Some(128) {
                self.missing_repository()
            } else {
                output.failure(&["rev-parse"])
            });
        }
        let top = PathBuf::from(text(&output.stdout).trim_end_matches('\n'));
        match std::fs::canonicalize(&top) {
            Ok(top) if top == configured => Ok(top),
            _ => Err(self.missing_repository()),
        }
    }

    /// The branch head's commit id.
    async fn head(&self) -> Result<String, UpstreamError> {
        let reference = format!("refs/heads/{}^{{commit}}", self.branch);
        let output = self
            .git(
                None,
                &["rev-parse", "--verify", "--quiet", &reference],
                None,
            )
            .await?;
        if output.success {
            return Ok(text(&output.stdout).trim().to_string());
        }
        if output.stderr.contains("not a git repository") {
            return Err(self.missing_repository());
        }
        if output.code == Some(1) {
            return Err(UpstreamError::NotFound {
                service: SERVICE,
                what: format!("branch {} in {}", self.branch, self.path.display()),
            });
        }
        Err(output.failure(&["rev-parse"]))
    }

    async fn read(&self, folder: &str) -> Result<GitSnapshot, UpstreamError> {
        let segments = folder_segments(folder).map_err(|reason| UpstreamError::Local {
            service: SERVICE,
            message: format!("refused folder: {reason}"),
        })?;
        self.top_level().await?;
        let head = self.head().await?;
        let date = self
            .git_ok(None, &["show", "-s", "--format=%cI", &head], None)
            .await?;
        let committed_at = DateTime::parse_from_rfc3339(text(&date).trim())
            .ok()
            .map(|d| d.with_timezone(&Utc));

        let tree = format!("{head}:{}", segments.join("/"));
        if !segments.is_empty() {
            let kind = self.git(None, &["cat-file", "-t", &tree], None).await?;
            if !kind.success || text(&kind.stdout).trim() != "tree" {
                return Err(UpstreamError::NotFound {
                    service: SERVICE,
                    what: format!("folder {}", segments.join("/")),
                });
            }
        }
        let listing = self.git_ok(None, &["ls-tree", "-z", &tree], None).await?;
        let entries = parse_ls_tree(&listing).map_err(|message| self.local(message))?;
        let blobs: Vec<(String, String)> = entries
            .into_iter()
            .filter(|e| e.kind == "blob" && (e.mode == "100644" || e.mode == "100755"))
            .map(|e| (join_path(&segments, &e.name), e.id))
            .collect();
        if blobs.is_empty() {
            return Ok(GitSnapshot {
                commit_sha: head,
                committed_at,
                files: Vec::new(),
            });
        }
        let request: String = blobs.iter().map(|(_, id)| format!("{id}\n")).collect();
        let batch = self
            .git_ok(None, &["cat-file", "--batch"], Some(request.into_bytes()))
            .await?;
        let contents = parse_batch(&batch, blobs.len()).map_err(|message| self.local(message))?;
        let files = blobs
            .into_iter()
            .zip(contents)
            .map(|((path, blob_sha), content)| GitFile {
                path,
                content,
                blob_sha,
            })
            .collect();
        Ok(GitSnapshot {
            commit_sha: head,
            committed_at,
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
        if message.trim().is_empty() {
            return Err(self.local("refused: empty commit message".into()));
        }
        let _one_at_a_time = self.write.lock().await;
        let top = self.top_level().await?;
        let checked_out = self
            .git(None, &["symbolic-ref", "--quiet", "HEAD"], None)
            .await?;
        let wanted = format!("refs/heads/{}", self.branch);
        let current = text(&checked_out.stdout).trim().to_string();
        if !checked_out.success || current != wanted {
            return Err(self.local(format!(
                "the working copy has {} checked out, not branch {}",
                if current.is_empty() {
                    "a detached HEAD"
                } else {
                    &current
                },
                self.branch
            )));
        }
        // only what the branch tracks can be deleted
        let deletes = if deletes.is_empty() {
            vec![]
        } else {
            let mut list = vec!["ls-files", "-z", "--"];
            list.extend(deletes.iter().map(String::as_str));
            let tracked = self.git_ok(Some(&top), &list, None).await?;
            text(&tracked)
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect::<Vec<String>>()
        };
        if files.is_empty() && deletes.is_empty() {
            return self.head().await;
        }

        let all: Vec<&str> = files
            .iter()
            .map(|(p, _)| p.as_str())
            .chain(deletes.iter().map(String::as_str))
            .collect();
        let targets: Vec<PathBuf> = all.iter().map(|p| top.join(p)).collect();
        for (target, path) in targets.iter().zip(&all) {
            refuse_symlinks(&top, target)
                .map_err(|reason| self.local(format!("refused path {path:?}: {reason}")))?;
        }
        let previous: Vec<Option<Vec<u8>>> =
            targets.iter().map(|t| std::fs::read(t).ok()).collect();
        let paths = all;

        let written = write_files(&targets[..files.len()], files).and_then(|()| {
            for target in &targets[files.len()..] {
                match std::fs::remove_file(target) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        });
        let committed = match written {
            Err(e) => Err(self.local(format!("cannot write the files: {e}"))),
            Ok(()) => self.add_and_commit(&top, &paths, message).await,
        };
        match committed {
            Ok(Some(sha)) => Ok(sha),
            Ok(None) => self.head().await,
            Err(error) => {
                self.restore(&top, &paths, &targets, previous).await;
                Err(error)
            }
        }
    }

    /// `Some(sha)` for a new commit; `None` when the files were already committed
    /// with these contents.
    async fn add_and_commit(
        &self,
        top: &Path,
        paths: &[&str],
        message: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let mut add = vec!["add", "--"];
        add.extend_from_slice(paths);
        self.git_ok(Some(top), &add, None).await?;

        let mut diff = vec!["diff", "--cached", "--quiet", "--"];
        diff.extend_from_slice(paths);
        let changed = self.git(Some(top), &diff, None).await?;
        if changed.success {
            return Ok(None);
        }
        let mut commit = vec!["commit", "--quiet", "--no-verify", "-m", message, "--"];
        commit.extend_from_slice(paths);
        self.git_ok(Some(top), &commit, None).await?;
        let sha = self
            .git_ok(Some(top), &["rev-parse", "--verify", "HEAD"], None)
            .await?;
        Ok(Some(text(&sha).trim().to_string()))
    }

    /// After a failed commit: the files as they were, and nothing left staged.
    async fn restore(
        &self,
        top: &Path,
        paths: &[&str],
        targets: &[PathBuf],
        previous: Vec<Option<Vec<u8>>>,
    ) {
        for (target, before) in targets.iter().zip(previous) {
            let restored = match before {
                Some(bytes) => std::fs::write(target, bytes),
                None => match std::fs::remove_file(target) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
            };
            if let Err(e) = restored {
                tracing::warn!(path = %target.display(), error = %e, "could not restore a file after a failed commit");
            }
        }
        let mut reset = vec!["reset", "--quiet", "--"];
        reset.extend_from_slice(paths);
        if let Err(e) = self.git_ok(Some(top), &reset, None).await {
            tracing::warn!(error = %e, "could not unstage the files after a failed commit");
        }
    }

    fn local(&self, message: String) -> UpstreamError {
        UpstreamError::Local {
            service: SERVICE,
            message,
        }
    }
}

impl GitRepository for LocalGitRepository {
    fn read_folder<'a>(
        &'a self,
        folder: &'a str,
    ) -> BoxFuture<'a, Result<GitSnapshot, UpstreamError>> {
        let span = tracing::info_span!(
            "git.read_folder",
            path = %self.path.display(),
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
            "git.commit_files",
            path = %self.path.display(),
            branch = %self.branch,
            files = files.len(),
            deletes = deletes.len()
        );
        self.commit(files, deletes, message)
            .instrument(span)
            .boxed()
    }
}

fn write_files(targets: &[PathBuf], files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    for (target, (_, content)) in targets.iter().zip(files) {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, content)?;
    }
    Ok(())
}

/// Neither the file nor any folder between `top` and it may be a symlink.
fn refuse_symlinks(top: &Path, target: &Path) -> Result<(), PathRefused> {
    let relative = target
        .strip_prefix(top)
        .map_err(|_| PathRefused::Escapes(target.display().to_string()))?;
    let mut current = top.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PathRefused::Symlink(current));
            }
            Ok(_) => {}
            // Nothing further exists yet: it will be created as plain folders.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

struct Output {
    success: bool,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn failure(&self, args: &[&str]) -> UpstreamError {
        let stderr = self.stderr.trim();
        let tail: String = if stderr.chars().count() > STDERR_CHARS {
            let skip = stderr.chars().count() - STDERR_CHARS;
            format!("…{}", stderr.chars().skip(skip).collect::<String>())
        } else {
            stderr.to_string()
        };
        UpstreamError::Local {
            service: SERVICE,
            message: format!(
                "git {} failed ({}): {tail}",
                args.first().copied().unwrap_or(""),
                self.code
                    .map_or_else(|| "killed".to_string(), |c| format!("exit {c}"))
            ),
        }
    }
}

enum RunError {
    Spawn(std::io::Error),
    TimedOut,
}

/// Runs the command to completion or until `timeout`, then kills it. Stdin is fed
/// by a task of its own while both outputs are drained, so a large input or output
/// cannot deadlock on a full pipe.
async fn run(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, RunError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // a command past its deadline is dropped with its future: killed
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // A broken pipe means git stopped reading: its exit status says why.
            let _ = pipe.write_all(&data).await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(Output {
            success: output.status.success(),
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Err(_) => Err(RunError::TimedOut),
    }
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

struct TreeLine {
    mode: String,
    kind: String,
    id: String,
    name: String,
}

/// `git ls-tree -z`: `<mode> SP <type> SP <id> TAB <name> NUL`.
fn parse_ls_tree(listing: &[u8]) -> Result<Vec<TreeLine>, String> {
    listing
        .split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let record = std::str::from_utf8(record)
                .map_err(|_| "git ls-tree: a file name is not UTF-8".to_string())?;
            let (meta, name) = record
                .split_once('\t')
                .ok_or_else(|| format!("git ls-tree: unexpected line {record:?}"))?;
            let mut meta = meta.split(' ');
            match (meta.next(), meta.next(), meta.next()) {
                (Some(mode), Some(kind), Some(id)) => Ok(TreeLine {
                    mode: mode.to_string(),
                    kind: kind.to_string(),
                    id: id.to_string(),
                    name: name.to_string(),
                }),
                _ => Err(format!("git ls-tree: unexpected line {record:?}")),
            }
        })
        .collect()
}

/// `git cat-file --batch`: per object `<id> SP <type> SP <size> LF <content> LF`.
fn parse_batch(mut output: &[u8], expected: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut contents = Vec::with_capacity(expected);
    while contents.len() < expected {
        let newline = output
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("git cat-file: output ended early")?;
        let header =
            std::str::from_utf8(&output[..newline]).map_err(|_| "git cat-file: bad header")?;
        let size: usize = match header.split(' ').collect::<Vec<_>>().as_slice() {
            [_, "blob", size] => size
                .parse()
                .map_err(|_| format!("git cat-file: bad header {header:?}"))?,
            _ => return Err(format!("git cat-file: unexpected {header:?}")),
        };
        let start = newline + 1;
        let end = start + size;
        if output.len() < end + 1 {
            return Err("git cat-file: output ended early".into());
        }
        contents.push(output[start..end].to_vec());
        output = &output[end + 1..];
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_is_split_by_size() {
        let output = b"aaa blob 3\nx\ny\nbbb blob 0\n\n";
        let contents = parse_batch(output, 2).unwrap();
        assert_eq!(contents, vec![b"x\ny".to_vec(), Vec::new()]);
        assert!(parse_batch(b"aaa missing\n", 1).is_err());
        assert!(parse_batch(b"aaa blob 9\nshort\n", 1).is_err());
    }

    #[test]
    fn ls_tree_lines_are_parsed() {
        let listing = b"100644 blob abc\ta b.json\x00040000 tree def\tsub\x00";
        let lines = parse_ls_tree(listing).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "a b.json");
        assert_eq!(lines[1].kind, "tree");
    }
}
