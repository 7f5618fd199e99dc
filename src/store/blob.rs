//! One deposit's folder in a store: its meta (the record held and the state
//! of its bytes) and the bytes of that version; how a copy arrives (into
//! `tmp/`, hashed as it comes, renamed into place only when its MD5 is the
//! record's), and how a folder is put right after a crash.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::Store;
use crate::folder::Md5Pipe;
use crate::names::PART_SUFFIX;
use crate::proto::{CopyState, Held, Record, hex};
use crate::stream::Sink;
use crate::{Context, ErrorKind, Result, bail};

const META: &str = "meta.json";

pub fn blob_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("blob-{version}"))
}

/// The size of the blob of `version`, 0 without one.
pub fn size_of(dir: &Path, version: u64) -> u64 {
    fs::metadata(blob_path(dir, version)).map_or(0, |m| m.len())
}

/// The meta of a deposit folder, if it has a readable one.
pub fn read_meta(dir: &Path) -> Result<Option<Held>> {
    match fs::read(dir.join(META)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format_args!("reading {}", dir.display())),
    }
}

/// Replace a deposit folder's meta at once, flushed to the disk.
pub fn write_meta(dir: &Path, held: &Held) -> Result<()> {
    let text = serde_json::to_string(held).map_err(|e| crate::Error::new(e.to_string()))?;
    crate::secure::replace_private_file(&dir.join(META), &text, "deposit record")?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Put a deposit folder right after a crash; the bytes it holds, or
/// `None` when it held nothing usable (then it is gone).
pub fn recover(dir: &Path) -> Result<Option<u64>> {
    let Some(mut held) = read_meta(dir)? else {
        // A crash before the first meta: its bytes were never acknowledged.
        fs::remove_dir_all(dir).context(format_args!("removing {}", dir.display()))?;
        return Ok(None);
    };
    let keep = blob_path(dir, held.record.version);
    for e in fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let is_blob = e.file_name().to_string_lossy().starts_with("blob-");
        if (is_blob && p != keep) || e.file_name().to_string_lossy().starts_with(".dbsh-new.") {
            let _ = fs::remove_file(&p);
        }
    }
    let size = match fs::metadata(&keep) {
        Ok(m) => m.len(),
        Err(_) if held.record.deleted => 0,
        Err(_) => {
            if held.state != CopyState::Missing {
                held.state = CopyState::Missing;
                write_meta(dir, &held)?;
            }
            0
        }
    };
    Ok(Some(size))
}

/// A copy being received: bytes go to a temporary file in the store's
/// `tmp/` while their MD5 is computed. Dropped before [`BlobWriter::commit`]
/// it leaves nothing behind and gives its reserved room back.
pub struct BlobWriter<'a> {
    store: &'a Store,
    dir: PathBuf,
    record: Record,
    tmp: Option<NamedTempFile>,
    md5: Option<Md5Pipe>,
    written: u64,
    /// Kept, and the book told.
    done: bool,
    /// The owner's signing key, kept with the copy.
    pin: Option<super::Pin>,
}

impl<'a> BlobWriter<'a> {
    /// Called with the room reserved and the folder marked busy.
    pub(super) fn create(
        store: &'a Store,
        dir: PathBuf,
        record: Record,
        pin: Option<super::Pin>,
    ) -> Result<BlobWriter<'a>> {
        let mut w = BlobWriter {
            store,
            dir,
            pin,
            md5: Some(Md5Pipe::new(record.size)),
            record,
            tmp: None,
            written: 0,
            done: false,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".")
            .suffix(PART_SUFFIX)
            .tempfile_in(store.tmp_dir())
            .context("creating a temporary file in the store")?;
        w.tmp = Some(tmp);
        Ok(w)
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Keep the copy if all its bytes came and their MD5 is the record's
    /// (and the sender's): flushed, renamed into place, its meta written,
    /// the older version removed.
    pub fn commit(mut self, sender_md5: &str) -> Result<()> {
        let name = self.record.name.clone();
        if self.written != self.record.size {
            bail!(kind: Integrity, "the copy of {name} ended after {} of {} bytes", self.written, self.record.size);
        }
        let md5 = hex(&self.md5.take().expect("hashing").finish()?);
        if md5 != self.record.md5 || md5 != sender_md5 {
            bail!(kind: Integrity,
                "the bytes of {name} have MD5 {md5}, not the deposit's {}; not kept", self.record.md5);
        }
        let tmp = self.tmp.take().expect("the temporary file");
        tmp.as_file()
            .sync_all()
            .context("flushing a deposit to the disk")?;
        if let Some(p) = &self.pin {
            self.store.keep_pin(p)?;
        }
        let old = read_meta(&self.dir)?;
        // Bytes held for this deposit until now (none for a missing copy).
        let before = old
            .as_ref()
            .map_or(0, |o| size_of(&self.dir, o.record.version));
        fs::create_dir_all(&self.dir).context("creating a deposit's folder")?;
        let blob = blob_path(&self.dir, self.record.version);
        tmp.persist(&blob)
            .map_err(|e| e.error)
            .context(format_args!("keeping the copy of {name}"))?;
        sync_dir(&self.dir);
        let held = Held {
            record: self.record.clone(),
            state: CopyState::Ok,
        };
        write_meta(&self.dir, &held)?;
        if let Some(o) = &old
            && o.record.version != self.record.version
        {
            let _ = fs::remove_file(blob_path(&self.dir, o.record.version));
        }
        let grew = self.record.size as i64 - before as i64;
        self.done = true;
        self.store.end_put(
            &self.dir,
            self.record.size,
            Some((grew, usize::from(old.is_none()))),
        );
        Ok(())
    }
}

impl Sink for BlobWriter<'_> {
    fn size(&self) -> u64 {
        self.record.size
    }
    fn label(&self) -> &str {
        &self.record.name
    }
    fn written(&self) -> u64 {
        self.written
    }
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.md5.as_mut().expect("hashing").buffer(len)
    }
    fn write_owned(&mut self, buf: Vec<u8>, used: usize) -> Result<()> {
        if self.written + used as u64 > self.record.size {
            bail!(
                "the peer sent more than the {} bytes it announced",
                self.record.size
            );
        }
        let file = self.tmp.as_mut().expect("the temporary file").as_file_mut();
        if let Err(e) = file.write_all(&buf[..used]) {
            let kind = if e.raw_os_error() == Some(libc::ENOSPC) {
                ErrorKind::NoSpace
            } else {
                ErrorKind::Other
            };
            return Err(crate::Error::of(
                kind,
                format!("storing {}: {e}", self.record.name),
            ));
        }
        self.written += used as u64;
        self.md5.as_mut().expect("hashing").consume(buf, used);
        Ok(())
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Not kept: the temporary file goes with `tmp`.
            self.store.end_put(&self.dir, self.record.size, None);
        }
    }
}
