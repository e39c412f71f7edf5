//! Precompiled artifacts on local disk, so that a module compiled once is loaded in well under a
//! millisecond by every later process on the host.
//!
//! Loading an artifact maps machine code into the process without any check, so artifacts are only
//! ever read from a directory this process owns: created with mode 0700 by the current user, not
//! writable by anyone else, never shared through Redis. Their names carry the module hash and the
//! engine fingerprint. Files are written to a temporary name and renamed, so a crash never leaves a
//! half-written artifact under a real name.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the artifact directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactDirError {
    #[error("cannot create artifact directory {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("artifact directory {path} is owned by uid {owner}, not by this process (uid {me}); refusing to load code from it")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("artifact directory {path} is writable by other users (mode {mode:o}); refusing to load code from it")]
    Writable { path: PathBuf, mode: u32 },
}

/// The artifact directory of one engine fingerprint: `<cache>/artifacts/<fingerprint>/`.
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    dir: PathBuf,
}

fn check_private(path: &Path) -> Result<(), ArtifactDirError> {
    let meta = std::fs::metadata(path).map_err(|source| ArtifactDirError::Create { path: path.into(), source })?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(ArtifactDirError::NotOwned { path: path.into(), owner: meta.uid(), me });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(ArtifactDirError::Writable { path: path.into(), mode });
    }
    Ok(())
}

impl ArtifactDir {
    /// Opens (creating it if needed) the artifact folder under `cache_dir` and checks that this
    /// process owns it and that nobody else can write to it.
    pub fn open(cache_dir: &Path, fingerprint: &str) -> Result<Self, ArtifactDirError> {
        let dir = cache_dir.join("artifacts").join(fingerprint);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|source| ArtifactDirError::Create { path: dir.clone(), source })?;
        for p in [cache_dir, &cache_dir.join("artifacts"), &dir] {
            check_private(p)?;
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of a module hash lives.
    pub fn artifact(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.cwasm"))
    }

    /// Writes an artifact atomically (temporary file, fsync, rename).
    pub fn store(&self, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_data()?;
        tmp.persist(self.artifact(sha)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes an artifact that failed to load (it is compiled again).
    pub fn discard(&self, sha: &str) {
        let _ = std::fs::remove_file(self.artifact(sha));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_others_can_write() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let dir = ArtifactDir::open(&cache, "abc").unwrap();
        dir.store("00", b"x").unwrap();
        assert_eq!(std::fs::read(dir.artifact("00")).unwrap(), b"x");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(ArtifactDir::open(&cache, "abc"), Err(ArtifactDirError::Writable { .. })));
    }
}
