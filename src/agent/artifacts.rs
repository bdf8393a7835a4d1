//! Packs `<run dir>/artifacts/` into a gzip-compressed tar rooted at `artifacts/`, as the
//! reference uploads it, written to a file (never built in memory) so that it can be
//! streamed to the server and sent again after an outage or an agent restart.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;

/// Writes the archive to `archive`; `Ok(false)` when there are no artifacts.
pub fn pack(run_dir: &Path, archive: &Path) -> anyhow::Result<bool> {
    let source = run_dir.join("artifacts");
    let has_content = std::fs::read_dir(&source)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if !has_content {
        return Ok(false);
    }
    let partial = archive.with_extension("partial");
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut builder = tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::fast()));
    builder.follow_symlinks(false);
    builder
        .append_dir_all("artifacts", &source)
        .with_context(|| format!("cannot pack {}", source.display()))?;
    let file = builder
        .into_inner()
        .and_then(GzEncoder::finish)
        .context("cannot finish the artifacts archive")?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&partial, archive)?;
    Ok(true)
}
