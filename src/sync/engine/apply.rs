//! The apply stage: each change a plan makes to the folder, in one place,
//! each as one finish sequence: check the local path is still as planned
//! (a file being written or edited meanwhile is left for the next round),
//! move a conflicting copy aside at that moment, then make the folder,
//! rename, set the mode, or move to the trash, and note what both sides
//! now agree on. Pulled files land through [`crate::folder::Incoming`]
//! (temporary name, verified MD5, rename) from [`super::round`].

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Actor, PartnerRound};
use crate::folder::Glance;
use crate::sync::plan::{Action, FileState, PERM_BITS, conflict_name};
use crate::{Context, Error, Result, bail};

impl Actor {
    /// Move our version of `path` aside to a conflict copy (a name not
    /// taken yet); returns that name.
    fn move_aside(&self, path: &str, local: &FileState, rep: &mut PartnerRound) -> Result<String> {
        let folder = &self.shared.folder;
        still_as_planned(folder.root(), path, Some(local))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let aside = (0..100)
            .map(|n| match n {
                0 => conflict_name(path, &stamp, self.shared.peer_id()),
                n => conflict_name(path, &format!("{stamp}-{n}"), self.shared.peer_id()),
            })
            .find(|a| fs::symlink_metadata(folder.root().join(a)).is_err())
            .ok_or_else(|| Error::new(format!("no free conflict name for {path}")))?;
        fs::rename(folder.target_path(path)?, folder.target_path(&aside)?)
            .context(format_args!("moving {path} aside to {aside}"))?;
        rep.conflicts += 1;
        self.log(
            &rep.peer,
            &format!("sync conflict {path}"),
            &format!("ours kept as {aside}"),
            0,
        );
        Ok(aside)
    }

    /// Before pulling: refuse a file that could not land here (a file
    /// where one of its folders should be), and on a conflict move our
    /// version aside. Returns the local state the pull expects to replace
    /// (checked again before the rename).
    pub(super) fn prepare_pull(
        &self,
        path: &str,
        action: &Action,
        local: Option<&FileState>,
        rep: &mut PartnerRound,
        folders: &mut HashSet<String>,
    ) -> Result<Option<FileState>> {
        can_land(self.shared.folder.root(), path, folders)?;
        if *action != Action::ConflictPull {
            return Ok(local.cloned());
        }
        let l = local.ok_or_else(|| Error::new("no local state"))?;
        self.move_aside(path, l, rep)?;
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply(
        &self,
        path: &str,
        action: &Action,
        local: Option<&FileState>,
        remote: Option<&FileState>,
        hold_deletions: bool,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let peer = rep.peer.clone();
        match action {
            Action::Nothing => {}
            Action::FolderWins => {
                let l = local.ok_or_else(|| Error::new("no local state"))?;
                self.move_aside(path, l, rep)?;
                self.make_dir(path, remote, rep, changes, "ok (a folder there)")?;
            }
            Action::Record => changes.push((path.to_string(), local.cloned())),
            Action::Forget => changes.push((path.to_string(), None)),
            Action::Pull | Action::ConflictPull => bail!("pulls run in a batch"),
            Action::MakeDir => self.make_dir(path, remote, rep, changes, "ok")?,
            Action::SetMode(mode) => {
                let p = folder.local_path(path)?;
                let mode = mode & PERM_BITS;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .context(format_args!("chmod {path}"))?;
                changes.push((path.to_string(), remote.cloned()));
                rep.modes += 1;
                self.log(&peer, &format!("sync chmod {mode:04o} {path}"), "ok", 0);
            }
            Action::Delete => {
                if hold_deletions {
                    return Ok(());
                }
                still_as_planned(folder.root(), path, local)?;
                crate::sync::trash::move_to_trash(
                    &folder.state_dir().join("trash"),
                    &folder.target_path(path)?,
                    path,
                    chrono::Local::now(),
                )?;
                changes.push((path.to_string(), None));
                rep.deleted += 1;
                self.log(
                    &peer,
                    &format!("sync delete {path}"),
                    "moved to .dropbox-shell/trash",
                    0,
                );
            }
            Action::RemoveDir => {
                if hold_deletions {
                    return Ok(());
                }
                let p = folder.local_path(path)?;
                if fs::read_dir(&p)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    fs::remove_dir(&p).context(format_args!("removing folder {path}"))?;
                    changes.push((path.to_string(), None));
                    rep.folders += 1;
                    self.log(&peer, &format!("sync rmdir {path}"), "ok", 0);
                }
            }
            Action::Rename { from } => self.rename(from, path, local, remote, rep, changes)?,
        }
        Ok(())
    }

    /// Make the remote folder `path` here, with its permission bits.
    fn make_dir(
        &self,
        path: &str,
        remote: Option<&FileState>,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
        outcome: &str,
    ) -> Result<()> {
        let r = remote.ok_or_else(|| Error::new("no remote state"))?;
        let p = self.shared.folder.local_path(path)?;
        fs::create_dir_all(&p).context(format_args!("creating folder {path}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(r.perm())).ok();
        changes.push((path.to_string(), Some(r.clone())));
        rep.folders += 1;
        self.log(&rep.peer, &format!("sync mkdir {path}"), outcome, 0);
        Ok(())
    }

    /// The bytes of `path` are here under `from`, which went there: move
    /// them (no bytes travel) and give them the remote's mtime and mode.
    /// `was` is our state of `from` the plan was made from: bytes edited
    /// since, or a name taken meanwhile, are left for the next round.
    fn rename(
        &self,
        from: &str,
        path: &str,
        was: Option<&FileState>,
        remote: Option<&FileState>,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let r = remote.ok_or_else(|| Error::new("no remote state"))?;
        let was = was.ok_or_else(|| Error::new(format!("{from} is not here to rename")))?;
        still_as_planned(folder.root(), from, Some(was))?;
        still_as_planned(folder.root(), path, None)?;
        let old = folder.target_path(from)?;
        let new = folder.target_path(path)?;
        if let Some(parent) = new.parent() {
            fs::create_dir_all(parent).context(format_args!("creating the folder of {path}"))?;
        }
        fs::rename(&old, &new).context(format_args!("renaming {from} to {path}"))?;
        let mtime = crate::folder::file_time(r.mtime_ns);
        filetime::set_file_mtime(&new, mtime).ok();
        fs::set_permissions(&new, fs::Permissions::from_mode(r.perm())).ok();
        changes.push((path.to_string(), Some(r.clone())));
        changes.push((from.to_string(), None));
        rep.renamed += 1;
        self.log(
            &rep.peer,
            &format!("sync rename {from} -> {path}"),
            "ok (no bytes sent)",
            0,
        );
        Ok(())
    }
}

/// Refuse to touch a local path that changed since the round's plan was
/// made (a file still being written, or edited meanwhile).
pub(super) fn still_as_planned(
    root: &Path,
    path: &str,
    expected: Option<&FileState>,
) -> Result<()> {
    let now = fs::symlink_metadata(root.join(path)).ok();
    as_planned(now.map(|m| Glance::of(&m)), expected)
}

/// [`still_as_planned`], given what the path holds `now`.
pub(super) fn as_planned(now: Option<Glance>, expected: Option<&FileState>) -> Result<()> {
    let same = match (now, expected) {
        (None, None) => true,
        (Some(m), Some(e)) => m.is_dir || (m.size == e.size && m.mtime_ns == e.mtime_ns),
        _ => false,
    };
    if !same {
        bail!("changed here while syncing; left for the next round");
    }
    Ok(())
}

/// Refuse a pull whose bytes could not land: one of the folders of `path`
/// is a file (or anything else but a folder) here. `folders` holds the
/// folders already seen to be folders all the way down in this plan (a
/// thousand files in one folder cost one look).
fn can_land(root: &Path, path: &str, folders: &mut HashSet<String>) -> Result<()> {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return Ok(());
    };
    if folders.contains(parent) {
        return Ok(());
    }
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = parent.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match fs::metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is a file here, not a folder; not pulled",
                parts[..=i].join("/")
            ),
            // Not there yet: the pull makes it.
            Err(_) => return Ok(()),
        }
    }
    folders.insert(parent.to_string());
    Ok(())
}
