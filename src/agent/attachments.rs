//! Unpacks a job's attachments archive into `<run dir>/attachments/`. Every member is
//! checked before anything is written, so a hostile archive leaves nothing behind:
//! members must sit under `provision/`, `firmware_update/` or `test/`, must not climb out
//! with `..` or an absolute path, links must point inside, and device files and FIFOs are
//! refused. Permissions are tamed as Python's "data" filter does. What the members
//! declare must fit both the configured limit (`attachments_max_bytes`) and the space
//! free on the disk; the count is kept as each header is read, so an archive declaring
//! terabytes is refused at once.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

use crate::job::Phase;

/// The only top-level directories an attachments archive may hold.
pub fn extract(archive: &Path, destination: &Path, max_bytes: u64) -> anyhow::Result<()> {
    let budget = Budget::new(destination, max_bytes)?;
    check_members(archive, budget)?;
    let outcome = unpack(archive, destination);
    if outcome.is_err() {
        // Nothing half-unpacked stays behind.
        let _ = std::fs::remove_dir_all(destination);
    }
    outcome
}

fn unpack(archive: &Path, destination: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(destination)
        .with_context(|| format!("cannot create {}", destination.display()))?;
    let mut tar = open(archive)?;
    let mut links = Vec::new();
    for entry in tar
        .entries()
        .context("cannot read the attachments archive")?
    {
        let mut entry = entry.context("cannot read the attachments archive")?;
        let entry_type = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let relative = normalized(&entry.path()?)?;
        if !entry
            .unpack_in(destination)
            .with_context(|| format!("cannot unpack {}", relative.display()))?
        {
            bail!("refused to unpack {}", relative.display());
        }
        let target = destination.join(&relative);
        // Tamed by what landed on disk: tar-rs unpacks an old-style "file" whose name ends
        // in `/` as a directory, which a file's 644 would make impossible to enter.
        let unpacked = std::fs::symlink_metadata(&target).ok();
        let tamed = match unpacked {
            Some(unpacked) if unpacked.is_dir() => Some(0o755),
            Some(unpacked) if unpacked.is_file() => {
                Some(if mode & 0o100 != 0 { 0o755 } else { 0o644 })
            }
            _ => None,
        };
        if let Some(mode) = tamed {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set permissions of {}", target.display()))?;
        }
        if entry_type == EntryType::Symlink {
            links.push(target);
        }
    }
    // Belt and braces: every link, followed for real, ends inside the destination.
    let root = destination.canonicalize()?;
    for link in links {
        let resolved = link.canonicalize().ok();
        if !resolved.is_some_and(|r| r.starts_with(&root)) {
            bail!(
                "unsafe attachment member {:?}: the link points outside",
                link.display()
            );
        }
    }
    Ok(())
}

fn open(archive: &Path) -> anyhow::Result<Archive<GzDecoder<File>>> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    Ok(Archive::new(GzDecoder::new(file)))
}

/// Reads the whole archive once and refuses it if any member is unsafe or the members
/// are too large together.
fn check_members(archive: &Path, mut budget: Budget) -> anyhow::Result<()> {
    let mut tar = open(archive)?;
    let entries = tar
        .entries()
        .context("the attachments archive is not a gzip-compressed tar file")?;
    let mut links: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.context("the attachments archive is damaged")?;
        let name = entry.path()?.into_owned();
        let unsafe_member = |reason: anyhow::Error| {
            reason.context(format!("unsafe attachment member {:?}", name.display()))
        };
        check_member(&entry, &name).map_err(unsafe_member)?;
        budget.charge(entry.size())?;
        // A path through an earlier link could lead anywhere that link leads.
        let relative = normalized(&name)?;
        if links
            .iter()
            .any(|link| relative != *link && relative.starts_with(link))
        {
            return Err(unsafe_member(anyhow::anyhow!(
                "the path goes through a link"
            )));
        }
        if entry.header().entry_type() == EntryType::Symlink {
            links.push(relative);
        }
    }
    Ok(())
}

fn check_member(entry: &tar::Entry<'_, GzDecoder<File>>, name: &Path) -> anyhow::Result<()> {
    let relative = normalized(name)?;
    let mut components = relative.components();
    let top = components.next().and_then(|c| c.as_os_str().to_str());
    if !top
        .and_then(Phase::parse)
        .is_some_and(Phase::takes_attachments)
    {
        bail!("members must be inside provision/, firmware_update/ or test/");
    }
    let entry_type = entry.header().entry_type();
    if components.next().is_none() && !entry_type.is_dir() {
        bail!("only a directory may be named like a phase");
    }
    match entry_type {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => Ok(()),
        EntryType::Symlink => {
            let target = entry.link_name()?.context("a link without a target")?;
            if target.is_absolute() {
                bail!("links must not point to an absolute path");
            }
            let parent = relative.parent().unwrap_or(Path::new(""));
            normalized(&parent.join(target)).map(drop)
        }
        EntryType::Link => {
            let target = entry.link_name()?.context("a link without a target")?;
            normalized(&target).map(drop)
        }
        other => bail!("{other:?} members (devices, FIFOs, …) are not allowed"),
    }
}

/// How many bytes the unpacked members may take together.
struct Budget {
    limit: u64,
    free: u64,
    filesystem: PathBuf,
    declared: u64,
}

impl Budget {
    /// The configured limit, and the space free on the filesystem `destination` goes to
    /// (measured at its parent, which exists).
    fn new(destination: &Path, limit: u64) -> anyhow::Result<Budget> {
        let filesystem = destination.parent().unwrap_or(destination).to_path_buf();
        Ok(Budget {
            limit,
            free: free_bytes(&filesystem)?,
            filesystem,
            declared: 0,
        })
    }

    /// Counts a member's declared size; an error once the members no longer fit.
    fn charge(&mut self, size: u64) -> anyhow::Result<()> {
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.limit {
            bail!(
                "the attachments unpack to more than {} bytes (attachments_max_bytes)",
                self.limit
            );
        }
        if self.declared > self.free {
            bail!(
                "the attachments unpack to more than the {} bytes free on {}",
                self.free,
                self.filesystem.display()
            );
        }
        Ok(())
    }
}

/// The bytes an unprivileged user may still write on the filesystem holding `path`.
fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let cannot = || format!("cannot tell the free space on {}", path.display());
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).with_context(cannot)?;
    // SAFETY: statvfs fills the zeroed struct it is given and reads a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(cannot);
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The path with `.` and `..` resolved lexically; an error if it is absolute or climbs
/// above the archive's root.
fn normalized(path: &Path) -> anyhow::Result<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    bail!("the path climbs out of the attachments directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => bail!("absolute paths are not allowed"),
        }
    }
    if parts.is_empty() {
        bail!("an empty path");
    }
    Ok(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::normalized;
    use std::path::Path;

    #[test]
    fn paths_are_resolved_lexically() {
        assert_eq!(
            normalized(Path::new("test/./a/../b")).unwrap(),
            Path::new("test/b")
        );
        assert!(normalized(Path::new("test/../../etc")).is_err());
        assert!(normalized(Path::new("/etc/passwd")).is_err());
    }
}
