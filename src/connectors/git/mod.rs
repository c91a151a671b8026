//! Git repositories, the source of truth for canonical workflows: GitHub (and
//! GitHub Enterprise) through octocrab, and a plain local working copy driven with
//! the `git` CLI (the embedded default, and the way to use GitLab or Gitea today).
//!
//! Both speak one small trait, [`GitRepository`]: the repository sync reads
//! `{folder}/{slug}.json` and the sidecars `{slug}.wfo.json` with
//! [`GitRepository::read_folder`]; onboarding writes a workflow JSON and its sidecar
//! together with [`GitRepository::commit_files`].
//!
//! Shared behaviour of both implementations:
//! - A read is one consistent snapshot: the branch head is resolved once and every
//!   file is read at that commit (committed content, never a working tree).
//! - `read_folder` is **not recursive**: regular files directly in the folder
//!   (modes 100644 and 100755); sub-folders, symlinks and submodules are skipped.
//!   Files come sorted by path; `GitFile::path` is relative to the repository root.
//! - A folder that does not exist at the head is `NotFound { what: "folder …" }`,
//!   not an empty snapshot: a mistyped folder must not read as "Git has no
//!   workflows" (the sync would mark every canonical workflow missing and the drift
//!   check would count everything `not_in_git`). An empty existing folder is an
//!   empty snapshot. `""` (or `"/"`) is the repository root.
//! - `commit_files` writes every file in **one** commit on the branch and returns
//!   its sha. When the files already hold exactly these contents, no commit is made
//!   and the current head sha is returned (a sync that changes nothing writes
//!   nothing). Paths are checked first: relative, no `..`, `.` or empty segment, no
//!   `.git` segment, no NUL; a refused path is `Local { message: "refused path …" }`
//!   and nothing is written.
//! - `commit_changes` is the same with files to delete as well (a restore that
//!   removes workflows): a path to delete that the branch does not hold is left
//!   alone; a path both written and deleted is refused.

mod github;
mod local;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use self::github::GitHubRepository;
pub use self::local::LocalGitRepository;
use super::UpstreamError;

/// One file read from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFile {
    /// Relative to the repository root, `/`-separated (`workflows/orders.json`).
    pub path: String,
    pub content: Vec<u8>,
    /// The Git blob id of the content (the same on GitHub and in a local copy).
    pub blob_sha: String,
}

/// A folder as it is at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSnapshot {
    /// The branch head the files were read at.
    pub commit_sha: String,
    /// The committer date of that commit.
    pub committed_at: Option<DateTime<Utc>>,
    /// Sorted by path.
    pub files: Vec<GitFile>,
}

/// A Git repository on one branch. Object-safe: use it as `Arc<dyn GitRepository>`.
pub trait GitRepository: Send + Sync {
    /// Every file directly in `folder` (not recursive) at the branch head, with
    /// contents. A missing folder is [`UpstreamError::NotFound`].
    fn read_folder<'a>(
        &'a self,
        folder: &'a str,
    ) -> BoxFuture<'a, Result<GitSnapshot, UpstreamError>>;

    /// Creates or updates these files (path relative to the repository root,
    /// content) in one commit with `message`; returns the new head commit sha (the
    /// current one when nothing changed).
    fn commit_files<'a>(
        &'a self,
        files: &'a [(String, Vec<u8>)],
        message: &'a str,
    ) -> BoxFuture<'a, Result<String, UpstreamError>> {
        self.commit_changes(files, &[], message)
    }

    /// Writes `files` and deletes `deletes` (paths relative to the repository root)
    /// in one commit with `message`; returns the new head commit sha (the current
    /// one when nothing changed). A path in `deletes` the branch does not hold is
    /// skipped.
    fn commit_changes<'a>(
        &'a self,
        files: &'a [(String, Vec<u8>)],
        deletes: &'a [String],
        message: &'a str,
    ) -> BoxFuture<'a, Result<String, UpstreamError>>;
}

/// A connector that cannot be built from its configuration (checked when an
/// environment is registered, before anything is stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Git configuration: {0}")]
pub struct GitConfigError(pub String);

/// Why a repository path was refused (before anything is read or written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    #[error("empty path")]
    Empty,
    #[error("NUL in path")]
    Nul,
    #[error("{0:?} is absolute")]
    Absolute(String),
    #[error("{0:?} has an empty or '.' segment")]
    EmptySegment(String),
    #[error("{0:?} escapes the repository")]
    Escapes(String),
    #[error("{0:?} is inside .git")]
    InsideGit(String),
    #[error("{0} is a symlink")]
    Symlink(std::path::PathBuf),
}

/// The segments of a folder to read: `""` and `"/"` are the root.
fn folder_segments(folder: &str) -> Result<Vec<&str>, PathRefused> {
    let trimmed = folder.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    check_relative_path(trimmed)?;
    Ok(trimmed.split('/').collect())
}

/// A path `commit_files` may write: relative, no `..`/`.`/empty segment, no `.git`.
fn check_relative_path(path: &str) -> Result<(), PathRefused> {
    if path.is_empty() {
        return Err(PathRefused::Empty);
    }
    if path.contains('\0') {
        return Err(PathRefused::Nul);
    }
    if path.starts_with('/') || path.starts_with('\\') || has_drive_prefix(path) {
        return Err(PathRefused::Absolute(path.to_string()));
    }
    for segment in path.split('/') {
        match segment {
            "" | "." => return Err(PathRefused::EmptySegment(path.to_string())),
            ".." => return Err(PathRefused::Escapes(path.to_string())),
            s if s.eq_ignore_ascii_case(".git") => {
                return Err(PathRefused::InsideGit(path.to_string()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A branch name safe to pass to `git` and to put in a URL: no leading `-`, no
/// `..`, `@{`, `//`, control or special characters (`git check-ref-format`, a bit
/// stricter).
fn check_branch(branch: &str) -> Result<(), GitConfigError> {
    let bad_char = |c: char| c.is_control() || c == ' ' || "~^:?*[\\".contains(c);
    let ok = !branch.is_empty()
        && !branch.starts_with(['-', '/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.contains("//")
        && !branch.contains("/.")
        && branch != "@"
        && !branch.chars().any(bad_char);
    if ok {
        Ok(())
    } else {
        Err(GitConfigError(format!(
            "{branch:?} is not a valid branch name"
        )))
    }
}

fn has_drive_prefix(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Checks every path and that none is given twice.
fn check_files(
    service: &'static str,
    files: &[(String, Vec<u8>)],
    deletes: &[String],
) -> Result<(), UpstreamError> {
    let mut seen = std::collections::HashSet::new();
    for path in files.iter().map(|(path, _)| path).chain(deletes) {
        check_relative_path(path).map_err(|reason| UpstreamError::Local {
            service,
            message: format!("refused path: {reason}"),
        })?;
        if !seen.insert(path.as_str()) {
            return Err(UpstreamError::Local {
                service,
                message: format!("refused path: {path:?} is given twice"),
            });
        }
    }
    Ok(())
}

/// The folder's files sorted by path (both implementations return this order).
fn sorted(mut files: Vec<GitFile>) -> Vec<GitFile> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn join_path(segments: &[&str], name: &str) -> String {
    if segments.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", segments.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_or_hide_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x.json",
            "a/../../x",
            "a//b",
            "./a",
            ".git/config",
            "a/.GIT/hooks/pre-commit",
            "C:/x",
            "\\x",
            "a\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a.json",
            "workflows/orders.wfo.json",
            "a/b/c..json",
            ".github/x",
        ] {
            assert!(check_relative_path(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn folders_allow_the_root() {
        assert_eq!(folder_segments("").unwrap(), Vec::<&str>::new());
        assert_eq!(folder_segments("/").unwrap(), Vec::<&str>::new());
        assert_eq!(folder_segments("/a/b/").unwrap(), vec!["a", "b"]);
        assert!(folder_segments("a/../..").is_err());
    }

    #[test]
    fn branches_are_checked() {
        for good in ["main", "feature/x-1", "release_2.0"] {
            assert!(check_branch(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a:b", "x.lock", "a//b", "/a", "a/", "a/.b", "@", "a@{1}",
            "a~1", "a\\b",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_path_both_written_and_deleted_is_refused() {
        let files = vec![("a".to_string(), vec![])];
        assert!(check_files("git", &files, &["b".to_string()]).is_ok());
        assert!(matches!(
            check_files("git", &files, &["a".to_string()]),
            Err(UpstreamError::Local { .. })
        ));
        assert!(check_files("git", &[], &["../x".to_string()]).is_err());
    }

    #[test]
    fn duplicates_are_refused() {
        let files = vec![("a".to_string(), vec![]), ("a".to_string(), vec![1])];
        assert!(matches!(
            check_files("git", &files, &[]),
            Err(UpstreamError::Local { .. })
        ));
    }
}
