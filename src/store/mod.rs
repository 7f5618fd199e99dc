//! A store (`--store`) keeps other peers' deposits, under
//! `<dir>/.dropbox-shell/store/` (never in the shared folder, so never
//! listed, hashed or synced):
//!
//! ```text
//! store/lock                      held for the process's life: one store per folder
//! store/tmp/.XXXX.dbsh-part       bytes being received
//! store/<OWNER>/<KEY>/meta.json   the record held and the state of its bytes
//! store/<OWNER>/<KEY>/blob-<ver>  the bytes of that version
//! ```
//!
//! OWNER is the depositor's proven id; KEY a hash of the deposit's name, so
//! a name never becomes a path. Bytes arrive in `tmp/`, hashed as they
//! come; only a copy whose MD5 matches the record is flushed to the disk
//! and renamed into place, then its meta written the same way, then the
//! older version removed. Opening the store repairs what a crash left:
//! `tmp/` emptied, blobs of another version than the meta's removed, a meta
//! without its blob marked `missing`. Each owner sees only its own
//! deposits; everyone else is answered as if they did not exist.

mod blob;
pub mod quota;
pub mod repair;
pub mod tend;

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::digest::{SHA256, digest};

pub use blob::BlobWriter;

use crate::display::human_size;
use crate::limits::{DEPOSIT_NAME_LEN, KNOWN_STORES, MAX_COPIES, STORE_DEPOSITS};
use crate::names::clean_name;
use crate::proto::{CopyState, Held, Record, StoreStatus, hex};
use crate::{Context, Result, bail};

/// The deposits this peer keeps for others.
pub struct Store {
    dir: PathBuf,
    quota: Option<u64>,
    zone: String,
    book: Mutex<Book>,
    /// Addresses of other stores: those that answered as stores (what
    /// `store list` answers), and those only told (asked on the next tick).
    known: Mutex<Known>,
    _lock: File,
}

/// What the store's bytes are spent on, and which deposits are changing.
#[derive(Default)]
struct Book {
    /// Bytes of the blobs kept.
    used: u64,
    /// Bytes promised to transfers under way.
    reserved: u64,
    /// Deposits kept.
    count: usize,
    /// Deposit folders a put is writing now.
    busy: HashSet<PathBuf>,
}

/// Other stores' addresses, each list newest last.
#[derive(Default)]
struct Known {
    answered: Vec<String>,
    told: Vec<String>,
}

/// Add `addr` at the end, the oldest giving way past [`KNOWN_STORES`].
fn bounded_push(list: &mut Vec<String>, addr: &str) {
    list.retain(|a| a != addr);
    list.push(addr.to_string());
    let over = list.len().saturating_sub(KNOWN_STORES);
    list.drain(..over);
}

/// An owner's signing key to keep once a copy is kept (see `vouch`).
pub struct Pin {
    owner: String,
    line: String,
    /// A key told by a store that the owner's own replaces.
    replaces: Option<String>,
}

/// How a put starts.
pub enum Put<'a> {
    /// This version is held already, verified: no bytes need to travel.
    Have,
    /// Send the bytes here.
    Receive(Box<BlobWriter<'a>>),
}

impl Store {
    /// Open (and make) the store of the state folder `state_dir`, repairing
    /// what a crash left. A second process on one folder is refused.
    pub fn open(state_dir: &Path, quota: Option<u64>, zone: &str) -> Result<Store> {
        let dir = state_dir.join("store");
        fs::create_dir_all(dir.join("tmp")).context(format_args!("creating {}", dir.display()))?;
        let lock = lock(&dir)?;
        // Bytes of transfers a crash cut short.
        for e in fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut book = Book::default();
        for owner in subdirs(&dir)? {
            if owner.file_name().is_some_and(|n| n == "tmp") {
                continue;
            }
            for deposit in subdirs(&owner)? {
                if let Some(size) = blob::recover(&deposit)? {
                    book.used += size;
                    book.count += 1;
                }
            }
        }
        Ok(Store {
            dir,
            quota,
            zone: zone.to_string(),
            book: Mutex::new(book),
            known: Mutex::new(Known::default()),
            _lock: lock,
        })
    }

    /// Its room, as `info` tells it.
    pub fn status(&self) -> StoreStatus {
        let book = self.book();
        StoreStatus {
            free: self.free(&book),
            used: book.used,
            quota: self.quota,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self, book: &Book) -> u64 {
        // The disk's room is less what transfers under way will still write.
        let disk = quota::disk_free(&self.dir).map(|d| d.saturating_sub(book.reserved));
        quota::free(self.quota, book.used + book.reserved, disk)
    }

    /// The folder of `owner`'s deposit `name`.
    fn deposit_dir(&self, owner: &str, name: &str) -> Result<PathBuf> {
        Ok(self.owner_dir(owner)?.join(key_of(name)))
    }

    fn owner_dir(&self, owner: &str) -> Result<PathBuf> {
        // A peer id (base32, upper case): never `tmp`, `lock` or a path.
        let Ok(id) = crate::secure::PeerId::parse(owner) else {
            bail!(kind: Refused, "deposits need a proven peer id");
        };
        Ok(self.dir.join(id.to_string().replace('-', "")))
    }

    /// Check `record`'s signature, and that its signer is the one this
    /// store keeps for `owner`: learnt from the owner itself (`direct`,
    /// which wins) or, before it ever came, from a store (`secondhand`).
    fn vouch(&self, owner: &str, record: &Record, direct: bool) -> Result<Option<Pin>> {
        if owner.is_empty() {
            bail!(kind: Refused, "a deposit record must name its owner");
        }
        crate::secure::sign::verify(&record.signer, &record.signed_bytes(), &record.sig)?;
        let path = self.owner_dir(owner)?.join("signer");
        let pinned = fs::read_to_string(&path).unwrap_or_default();
        let (key, how) = pinned.trim().split_once(' ').unwrap_or(("", ""));
        if key == record.signer && (how == "direct" || !direct) {
            return Ok(None);
        }
        if !key.is_empty() && key != record.signer && (how == "direct" || !direct) {
            bail!(kind: Refused, "this store knows another signing key for {owner}; refused");
        }
        Ok(Some(Pin {
            owner: owner.to_string(),
            line: format!(
                "{} {}\n",
                record.signer,
                if direct { "direct" } else { "secondhand" }
            ),
            replaces: (!key.is_empty() && key != record.signer).then(|| key.to_string()),
        }))
    }

    /// Keep `pin`; when the owner's own key replaces one a store told
    /// (wrongly), what was kept under the wrong key goes.
    fn keep_pin(&self, pin: &Pin) -> Result<()> {
        let dir = self.owner_dir(&pin.owner)?;
        fs::create_dir_all(&dir).context("creating an owner's folder in the store")?;
        crate::secure::replace_private_file(&dir.join("signer"), &pin.line, "a signing key")?;
        if let Some(wrong) = &pin.replaces {
            for d in subdirs(&dir)? {
                if let Some(h) = blob::read_meta(&d)?
                    && &h.record.signer == wrong
                {
                    let size = blob::size_of(&d, h.record.version);
                    if fs::remove_dir_all(&d).is_ok() {
                        let mut book = self.book();
                        book.used = book.used.saturating_sub(size);
                        book.count = book.count.saturating_sub(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// What `owner` holds of `name`, asked by a store that shows `proof`:
    /// a record of that deposit signed by the key this store keeps for
    /// the owner. Anything else: as if there were nothing.
    pub fn stat_with_proof(&self, name: &str, proof: &Record) -> Result<Option<Held>> {
        let owner = proof.owner.as_str();
        if proof.name != name || self.owner_dir(owner).is_err() {
            return Ok(None);
        }
        let pinned = fs::read_to_string(self.owner_dir(owner)?.join("signer")).unwrap_or_default();
        let signed =
            crate::secure::sign::verify(&proof.signer, &proof.signed_bytes(), &proof.sig).is_ok();
        if !signed || pinned.split(' ').next() != Some(proof.signer.as_str()) {
            return Ok(None);
        }
        self.stat(owner, name)
    }

    /// Deposits kept here, of every owner, at most `limit`, from the
    /// `skip`th on (in the order the folders list them).
    pub fn all_held(&self, skip: usize, limit: usize) -> Result<Vec<Held>> {
        // Folder entries are skipped unread: a tick costs `limit` records
        // read, whatever the store holds.
        let mut seen = 0;
        let mut out = Vec::new();
        for owner in fs::read_dir(&self.dir)
            .context("reading the store")?
            .flatten()
        {
            if !owner.file_type().is_ok_and(|t| t.is_dir()) || owner.file_name() == "tmp" {
                continue;
            }
            for d in fs::read_dir(owner.path()).into_iter().flatten().flatten() {
                if !d.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                seen += 1;
                if seen <= skip {
                    continue;
                }
                if let Some(h) = blob::read_meta(&d.path())? {
                    out.push(h);
                }
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Note an address told to be a store's: asked on the next tick; the
    /// oldest told give way past [`KNOWN_STORES`], never one that answered.
    pub fn note_store(&self, addr: &str) {
        let mut k = self.known();
        if k.answered.iter().any(|a| a == addr) {
            return;
        }
        bounded_push(&mut k.told, addr);
    }

    /// The store at `addr` answered as one.
    pub fn confirm_store(&self, addr: &str) {
        let mut k = self.known();
        k.told.retain(|a| a != addr);
        bounded_push(&mut k.answered, addr);
    }

    /// Forget a store that no longer answers as one.
    pub fn drop_store(&self, addr: &str) {
        let mut k = self.known();
        k.told.retain(|a| a != addr);
        k.answered.retain(|a| a != addr);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Addresses to ask on the next tick: those that answered, then those told.
    pub fn stores_to_ask(&self) -> Vec<String> {
        let k = self.known();
        k.answered.iter().chain(&k.told).cloned().collect()
    }

    /// The zone this store stands in.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The other stores this store knows (that answered as stores).
    pub fn known_stores(&self) -> Vec<String> {
        self.known().answered.clone()
    }

    /// What `owner` has here under `name`.
    pub fn stat(&self, owner: &str, name: &str) -> Result<Option<Held>> {
        blob::read_meta(&self.deposit_dir(owner, name)?)
    }

    /// Each of `owner`'s deposits here, to `f`, as the folder lists them
    /// (one record in memory at a time).
    pub fn each_held(&self, owner: &str, f: &mut dyn FnMut(Held) -> Result<()>) -> Result<()> {
        let rd = match fs::read_dir(self.owner_dir(owner)?) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("reading the store"),
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir())
                && let Some(h) = blob::read_meta(&e.path())?
            {
                f(h)?;
            }
        }
        Ok(())
    }

    /// Start keeping `record` for `owner`: `Have` when that version is
    /// held already, else a writer for its bytes (room reserved).
    /// `from` is the id the sender proved: the owner itself, or a store
    /// passing on a record the owner signed (with the signing key this
    /// store knows for that owner).
    pub fn begin_put(&self, from: &str, record: &Record) -> Result<Put<'_>> {
        let owner = record.owner.as_str();
        let mut pin = self.vouch(owner, record, from == owner)?;
        // The owner itself replaces a key a store told: what was kept
        // under that key goes now, before it can stand in the way.
        if pin.as_ref().is_some_and(|p| p.replaces.is_some()) {
            self.keep_pin(pin.as_ref().expect("checked"))?;
            pin = None;
        }
        let name = clean_name(&record.name)?;
        if name != record.name || name.len() > DEPOSIT_NAME_LEN {
            bail!(kind: BadInput, "{:?} cannot be a deposit's name", record.name);
        }
        if record.copies == 0 || record.copies > MAX_COPIES {
            bail!(kind: BadInput, "a deposit has 1 to {MAX_COPIES} copies, not {}", record.copies);
        }
        let dir = self.deposit_dir(owner, &name)?;
        let mut book = self.book();
        if book.busy.contains(&dir) {
            bail!(kind: Busy, "{name} is being stored right now; try again");
        }
        let held = blob::read_meta(&dir)?;
        if let Some(h) = &held {
            if h.record.same_version(record) && h.state == CopyState::Ok {
                if let Some(p) = &pin {
                    self.keep_pin(p)?;
                }
                // The owner changed how many copies it wants: noted.
                if h.record.copies != record.copies {
                    let mut h = h.clone();
                    h.record = record.clone();
                    blob::write_meta(&dir, &h)?;
                }
                return Ok(Put::Have);
            }
            if h.record.order() > record.order() {
                bail!(kind: Refused,
                    "this store holds version {} of {name}, newer than {}",
                    h.record.version, record.version);
            }
        } else if book.count >= STORE_DEPOSITS {
            bail!(kind: NoSpace, "this store keeps {STORE_DEPOSITS} deposits already");
        }
        if record.deleted {
            drop(book);
            self.bury(&dir, record, held.as_ref(), pin.as_ref())?;
            return Ok(Put::Have);
        }
        let free = self.free(&book);
        if record.size > free {
            let quota = match self.quota {
                Some(q) => format!(
                    "its quota is {} and {} are used or reserved",
                    human_size(q),
                    human_size(book.used + book.reserved)
                ),
                None => format!("its disk has {} free", human_size(free)),
            };
            bail!(kind: NoSpace, "store in zone {} refuses {name} ({}): {quota}",
                self.zone, human_size(record.size));
        }
        book.reserved += record.size;
        book.busy.insert(dir.clone());
        drop(book);
        BlobWriter::create(self, dir, record.clone(), pin).map(|w| Put::Receive(Box::new(w)))
    }

    /// Keep the tombstone `record` in `dir` in place of what was held.
    fn bury(
        &self,
        dir: &Path,
        record: &Record,
        held: Option<&Held>,
        pin: Option<&Pin>,
    ) -> Result<()> {
        if let Some(p) = pin {
            self.keep_pin(p)?;
        }
        fs::create_dir_all(dir).context("creating a deposit's folder")?;
        let tomb = Held {
            record: record.clone(),
            state: CopyState::Ok,
        };
        blob::write_meta(dir, &tomb)?;
        let freed = held.map_or(0, |h| blob::size_of(dir, h.record.version));
        if let Some(h) = held {
            let _ = fs::remove_file(blob::blob_path(dir, h.record.version));
        }
        let mut book = self.book();
        book.used = book.used.saturating_sub(freed);
        book.count += usize::from(held.is_none());
        Ok(())
    }

    /// A put is over (kept or not): its reservation and busy mark go;
    /// `kept` is the change in bytes held and deposits kept.
    fn end_put(&self, dir: &Path, reserved: u64, kept: Option<(i64, usize)>) {
        let mut book = self.book();
        book.reserved -= reserved;
        book.busy.remove(dir);
        if let Some((bytes, new)) = kept {
            book.used = book.used.saturating_add_signed(bytes);
            book.count += new;
        }
    }

    /// `owner`'s copy of `name` to read, with what is held of it.
    pub fn open_copy(&self, owner: &str, name: &str) -> Result<(File, Held)> {
        let dir = self.deposit_dir(owner, name)?;
        let held = blob::read_meta(&dir)?
            .filter(|h| !h.record.deleted)
            .ok_or_else(|| not_here(name))?;
        match held.state {
            CopyState::Ok => {}
            s => bail!(kind: NotFound, "this store's copy of {name} is {}", s.word()),
        }
        let file = File::open(blob::blob_path(&dir, held.record.version)).map_err(|_| {
            crate::Error::of(
                crate::ErrorKind::NotFound,
                format!("this store's copy of {name} is missing"),
            )
        })?;
        Ok((file, held))
    }

    /// Read `owner`'s copy of `name` whole and check it against its
    /// record's MD5 (one check at a time per deposit, marked busy; no lock
    /// across owners, so one owner's big copy never holds up another's);
    /// what it holds now.
    pub fn verify(&self, owner: &str, name: &str) -> Result<Option<Held>> {
        let dir = self.deposit_dir(owner, name)?;
        {
            let mut book = self.book();
            if !book.busy.insert(dir.clone()) {
                // Being written now: what is held, unchecked.
                drop(book);
                return blob::read_meta(&dir);
            }
        }
        let checked = self.verify_copy(&dir, name);
        self.book().busy.remove(&dir);
        checked
    }

    /// `verify`, with the deposit marked busy.
    fn verify_copy(&self, dir: &Path, name: &str) -> Result<Option<Held>> {
        let Some(mut held) = blob::read_meta(dir)? else {
            return Ok(None);
        };
        if held.record.deleted {
            return Ok(Some(held));
        }
        let state = match File::open(blob::blob_path(dir, held.record.version)) {
            Err(_) => CopyState::Missing,
            Ok(mut f) => {
                let mut md5 = crate::folder::Md5Pipe::new(held.record.size);
                let mut n = 0u64;
                loop {
                    let mut buf = md5.buffer(crate::proto::CHUNK);
                    let got = std::io::Read::read(&mut f, &mut buf)
                        .context(format_args!("reading the copy of {name}"))?;
                    if got == 0 {
                        break;
                    }
                    n += got as u64;
                    md5.consume(buf, got);
                }
                let sum = hex(&md5.finish()?);
                if n == held.record.size && sum == held.record.md5 {
                    CopyState::Ok
                } else {
                    CopyState::Corrupt
                }
            }
        };
        if state != held.state {
            held.state = state;
            blob::write_meta(dir, &held)?;
        }
        Ok(Some(held))
    }

    /// Record what reading `owner`'s copy of `name` found.
    pub fn mark(&self, owner: &str, name: &str, state: CopyState) -> Result<()> {
        let dir = self.deposit_dir(owner, name)?;
        if let Some(mut held) = blob::read_meta(&dir)? {
            held.state = state;
            blob::write_meta(&dir, &held)?;
        }
        Ok(())
    }

    /// Remove `owner`'s copy of `name` if its version is at most `upto`;
    /// whether one was removed.
    pub fn forget(&self, owner: &str, name: &str, upto: u64) -> Result<bool> {
        let dir = self.deposit_dir(owner, name)?;
        let book = self.book();
        if book.busy.contains(&dir) {
            bail!(kind: Busy, "{name} is being stored right now; try again");
        }
        drop(book);
        let Some(held) = blob::read_meta(&dir)? else {
            return Ok(false);
        };
        if held.record.version > upto {
            return Ok(false);
        }
        let size = blob::size_of(&dir, held.record.version);
        fs::remove_dir_all(&dir).context(format_args!("removing the copy of {name}"))?;
        let mut book = self.book();
        book.used = book.used.saturating_sub(size);
        book.count = book.count.saturating_sub(1);
        Ok(true)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
}

/// What a store answers for a deposit it does not hold (or holds for
/// someone else: the same words).
pub fn not_here(name: &str) -> crate::Error {
    crate::Error::of(
        crate::ErrorKind::NotFound,
        format!("no deposit {name} here"),
    )
}

/// The folder name of a deposit name: hex of its SHA-256, cut to 40.
fn key_of(name: &str) -> String {
    let mut k = hex(digest(&SHA256, name.as_bytes()).as_ref());
    k.truncate(40);
    k
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format_args!("reading {}", dir.display())),
    };
    Ok(rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// The store's lock, or which process holds it.
fn lock(dir: &Path) -> Result<File> {
    match crate::folder::pidlock::take(&dir.join("lock"))? {
        Ok(file) => Ok(file),
        Err(holder) => bail!("another process{holder} keeps the store of this folder"),
    }
}

#[cfg(test)]
mod tests;
