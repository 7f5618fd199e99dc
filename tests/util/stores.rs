//! Helpers for deposit tests: stores in named zones, an owner's commands
//! against all of them, and what each store holds on its disk.

use std::path::Path;

use super::{Peer, bin};

/// One store per zone, each told about the first.
pub fn stores(zones: &[&str], extra: &[&str]) -> Vec<Peer> {
    zones
        .iter()
        .map(|z| {
            let mut args = vec!["--store", "--zone", z];
            args.extend_from_slice(extra);
            Peer::start(&args)
        })
        .collect()
}

/// Run `cmds` with `--json` from an owner whose folder is `dir`, with
/// every store of `at` as a peer, and `extra` flags.
pub fn owner(
    dir: &Path,
    at: &[&Peer],
    cmds: &[&str],
    extra: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    let mut c = bin();
    c.args(["--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(dir);
    for p in at {
        c.args(["--peer", &p.addr]);
    }
    c.args(extra);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    super::json_lines(&c.stdin(std::process::Stdio::null()).output().unwrap())
}

/// What a store keeps on its disk of deposit `name`: (version, state,
/// MD5 of the blob of that version if it is there); none for a tombstone.
pub fn held(store: &Peer, name: &str) -> Option<(u64, String, Option<String>)> {
    let root = store.path(".dropbox-shell/store");
    for owner in std::fs::read_dir(&root).ok()?.flatten() {
        for dep in std::fs::read_dir(owner.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read(dep.path().join("meta.json")) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_slice(&text).unwrap();
            // A tombstone (a forgotten deposit) holds nothing.
            if meta["record"]["name"] != name || meta["record"]["deleted"] == true {
                continue;
            }
            let v = meta["record"]["version"].as_u64().unwrap();
            let blob = std::fs::read(dep.path().join(format!("blob-{v}"))).ok();
            return Some((
                v,
                meta["state"].as_str().unwrap().to_string(),
                blob.map(|b| super::md5_hex(&b)),
            ));
        }
    }
    None
}

/// The blob file of `name` on `store` (its current version).
pub fn blob_path(store: &Peer, name: &str) -> std::path::PathBuf {
    let (v, _, _) = held(store, name).expect("held");
    let root = store.path(".dropbox-shell/store");
    for owner in std::fs::read_dir(&root).unwrap().flatten() {
        for dep in std::fs::read_dir(owner.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = dep.path().join(format!("blob-{v}"));
            if p.exists()
                && std::fs::read_to_string(dep.path().join("meta.json"))
                    .unwrap()
                    .contains(&format!("\"name\":{}", serde_json::json!(name)))
            {
                return p;
            }
        }
    }
    panic!("no blob of {name}");
}

/// Kill store `i` at once (SIGKILL), keeping its folder and address for a
/// restart; a plain peer holds its place meanwhile.
pub fn take_down(all: &mut [Peer], i: usize) -> (tempfile::TempDir, String) {
    let addr = all[i].addr.clone();
    let dir = std::mem::replace(&mut all[i], Peer::start(&[])).stop("-KILL");
    (dir, addr)
}

/// Indexes of the stores that hold `name`.
pub fn holders(all: &[Peer], name: &str) -> Vec<usize> {
    (0..all.len())
        .filter(|&i| held(&all[i], name).is_some())
        .collect()
}

/// Files in a store's `tmp/` (transfers under way or cut short).
pub fn tmp_files(store: &Peer) -> usize {
    std::fs::read_dir(store.path(".dropbox-shell/store/tmp")).map_or(0, |d| d.count())
}
