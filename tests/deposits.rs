//! Deposits with real stores on loopback, each in its own `--zone`: where
//! copies land, retrieval with a holder down or a copy corrupt, quotas,
//! ownership (another identity sees nothing; the same identity elsewhere
//! rebuilds everything from the stores), new versions and forget.

mod util;

use std::fs;

use util::stores::*;
use util::*;

fn copies_zones(doc: &serde_json::Value) -> Vec<String> {
    let mut z: Vec<String> = doc["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "ok")
        .map(|c| c["zone"].as_str().unwrap().to_string())
        .collect();
    z.sort();
    z
}

#[test]
fn three_copies_land_in_three_zones_with_matching_md5s() {
    let s = stores(&["z1", "z2", "z3", "z4"], &[]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(1, 3 << 20);
    fs::write(own.path().join("big.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, docs, err) = owner(own.path(), &at, &["deposit big.bin --copies 3"], &[]);
    assert_eq!(code, 0, "{docs:?} {err}");
    assert_eq!(docs[0]["copies_made"], 3);
    assert_eq!(docs[0]["md5"], md5_hex(&data).as_str());
    let zones = copies_zones(&docs[0]);
    let mut distinct = zones.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{zones:?}");
    let h = holders(&s, "big.bin");
    assert_eq!(h.len(), 3);
    for &i in &h {
        assert_eq!(
            held(&s[i], "big.bin").unwrap(),
            (1, "ok".into(), Some(md5_hex(&data)))
        );
        // Never in the store's shared folder: index lists nothing of it.
        let (_, listing, _) = run_json(
            tempfile::tempdir().unwrap().path(),
            &s[i].addr,
            &["index longlist"],
        );
        assert_eq!(
            listing[0]["files"].as_array().unwrap().len(),
            0,
            "{listing:?}"
        );
    }
    // A client only (no --listen) deposits too, and leaves nothing in its folder.
    let client = tempfile::tempdir().unwrap();
    fs::write(client.path().join("c.txt"), b"from a client").unwrap();
    let out = bin()
        .args([
            "--json",
            "--peer",
            &s[0].addr,
            "-c",
            "deposit c.txt --copies 1",
            "--dir",
        ])
        .arg(client.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!client.path().join(".dropbox-shell").exists());
    // The same placement again: nothing moves, nothing is sent twice.
    let (code, again, _) = owner(own.path(), &at, &["deposit big.bin --copies 3"], &[]);
    assert_eq!(code, 0);
    assert_eq!(copies_zones(&again[0]), zones);
    assert_eq!(again[0]["version"], 1);
    let (code, docs, err) = owner(
        own.path(),
        &at,
        &["replicas", "retrieve big.bin back.bin"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let d = &docs[0]["deposits"][0];
    assert_eq!(
        (
            d["name"].as_str(),
            d["copies_found"].as_u64(),
            d["status"].as_str()
        ),
        (Some("big.bin"), Some(3), Some("ok"))
    );
    assert_eq!(docs[1]["md5"], md5_hex(&data).as_str());
    assert_eq!(fs::read(own.path().join("back.bin")).unwrap(), data);
}

#[test]
fn two_stores_of_one_zone_never_both_hold_a_copy() {
    let s = stores(&["a", "a", "b", "c"], &[]);
    let own = tempfile::tempdir().unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let names: Vec<String> = (0..8).map(|i| format!("f{i}.txt")).collect();
    let mut cmds = Vec::new();
    for n in &names {
        fs::write(own.path().join(n), n.as_bytes()).unwrap();
        cmds.push(format!("deposit {n} --copies 3"));
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (code, docs, err) = owner(own.path(), &at, &cmds, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs.len(), names.len());
    for n in &names {
        let h = holders(&s, n);
        assert_eq!(h.len(), 3, "{n}");
        assert!(
            !(h.contains(&0) && h.contains(&1)),
            "{n}: both stores of zone a"
        );
    }
    // Four copies, three zones: three, a clear message, exit 1.
    fs::write(own.path().join("four.txt"), b"4").unwrap();
    let (code, docs, _) = owner(own.path(), &at, &["deposit four.txt --copies 4"], &[]);
    assert_eq!(code, 1);
    assert_eq!(docs[0]["copies_made"], 3);
    assert_eq!(
        docs[0]["error"], "3 of 4 copies: only 3 zones reachable",
        "{docs:?}"
    );
    assert_eq!(holders(&s, "four.txt").len(), 3);
}

#[test]
fn retrieve_passes_over_a_dead_holder_and_a_corrupt_copy() {
    let mut s = stores(&["z1", "z2", "z3"], &[]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(2, 1 << 20);
    fs::write(own.path().join("doc.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit doc.bin --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    // Where it would come from first, then the next one.
    let (_, docs, _) = owner(own.path(), &at, &["retrieve doc.bin first.bin"], &[]);
    let first = docs[0]["from"]["address"].as_str().unwrap().to_string();
    let i = s.iter().position(|p| p.addr == first).unwrap();
    let dead = s.remove(i);
    drop(dead); // killed
    let at: Vec<&Peer> = s.iter().collect();
    // The user still names the dead store.
    let extra = ["--peer", first.as_str()];
    let (code, docs, err) = owner(own.path(), &at, &["retrieve doc.bin second.bin"], &extra);
    assert_eq!(code, 0, "{err}");
    let second = docs[0]["from"]["address"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(fs::read(own.path().join("second.bin")).unwrap(), data);
    // The dead holder shows as unreachable.
    let (_, docs, _) = owner(own.path(), &at, &["replicas doc.bin"], &extra);
    let states: Vec<&str> = docs[0]["deposits"][0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"unreachable") && states.iter().filter(|s| **s == "ok").count() == 2,
        "{states:?}"
    );
    // The next holder's copy goes bad on its disk (same size): passed over.
    let j = s.iter().position(|p| p.addr == second).unwrap();
    let blob = blob_path(&s[j], "doc.bin");
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    fs::write(own.path().join("third.bin"), b"old contents").unwrap();
    let (code, docs, err) = owner(own.path(), &at, &["retrieve doc.bin third.bin"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(docs[0]["from"]["address"], second.as_str());
    let over = &docs[0]["passed_over"][0];
    assert_eq!(over["address"], second.as_str());
    assert!(
        over["reason"].as_str().unwrap().contains("corrupt"),
        "{over}"
    );
    assert_eq!(fs::read(own.path().join("third.bin")).unwrap(), data);
    // The store marked its copy, and replicas says so.
    assert_eq!(held(&s[j], "doc.bin").unwrap().1, "corrupt");
    let (_, docs, _) = owner(own.path(), &at, &["replicas doc.bin"], &[]);
    let d = &docs[0]["deposits"][0];
    assert_eq!(d["status"], "degraded 1/3", "{d}");
    // With no good copy left, the old file stays as it was.
    let k = 1 - j;
    let blob = blob_path(&s[k], "doc.bin");
    fs::write(&blob, &bytes).unwrap();
    let (code, docs, _) = owner(own.path(), &at, &["retrieve doc.bin third.bin"], &[]);
    assert_eq!(code, 1, "{docs:?}");
    assert_eq!(fs::read(own.path().join("third.bin")).unwrap(), data);
    assert_eq!(
        visible_files(own.path())
            .iter()
            .filter(|n| n.contains("dbsh"))
            .count(),
        0
    );
}

#[test]
fn a_store_over_its_quota_refuses_clearly() {
    let s = stores(&["q"], &["--store-quota", "1M"]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("big.bin"), random_bytes(3, 2 << 20)).unwrap();
    fs::write(own.path().join("small.bin"), b"fits").unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, docs, _) = owner(
        own.path(),
        &at,
        &[
            "deposit big.bin --copies 1",
            "deposit small.bin --copies 1",
            "peers",
        ],
        &[],
    );
    assert_eq!(code, 1);
    // Placement passes over a store without room: no zone can take it.
    assert_eq!(docs[0]["copies_made"], 0, "{docs:?}");
    assert!(
        docs[0]["error"].as_str().unwrap().contains("0 of 1 copies"),
        "{docs:?}"
    );
    assert_eq!(docs[1]["copies_made"], 1);
    assert_eq!(tmp_files(&s[0]), 0);
    assert!(held(&s[0], "big.bin").is_none());
    let free = docs[2]["peers"][0]["free"].as_u64().unwrap();
    assert_eq!(free, (1 << 20) - 4);
    // A store asked directly (a stale free count) refuses with the quota's words.
    let keys = dropbox_shell::secure::Keypair::generate().unwrap();
    let signer = dropbox_shell::secure::sign::Signer::of(&keys).unwrap();
    let mut raw = dropbox_shell::client::Client::connect(
        &s[0].addr,
        &dropbox_shell::secure::Credentials::open(keys.clone()),
        Default::default(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mut record = dropbox_shell::proto::Record {
        name: "x".into(),
        size: 2 << 20,
        md5: "0".repeat(32),
        mtime_ns: 0,
        mode: 0o644,
        copies: 1,
        version: 1,
        made_ns: 0,
        deleted: false,
        owner: keys.id().to_string(),
        signer: signer.public_hex(),
        sig: String::new(),
    };
    record.sig = signer.sign(&record.signed_bytes());
    let file = fs::File::open(own.path().join("big.bin")).unwrap();
    let e = raw
        .deposit_put(&record, Some(file), None, &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("quota is 1.0 MiB"), "{e}");
    assert_eq!(tmp_files(&s[0]), 0);
    // Bad flags stop the start.
    for bad in [
        &["--store", "--store-quota", "5X"][..],
        &["--store-quota", "1G"],
        &["--store", "--zone", "a b"],
    ] {
        let out = bin()
            .args(["--listen", "127.0.0.1:0", "--headless", "--dir"])
            .arg(own.path())
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let out = bin()
        .args(["--store", "-c", "id", "--dir"])
        .arg(own.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn only_the_owner_sees_its_deposits_and_it_does_from_anywhere() {
    let s = stores(&["z1", "z2"], &[]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(4, 100_000);
    fs::write(own.path().join("secret.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit secret.bin"], &[]);
    assert_eq!(code, 0, "{err}");
    // Someone else: nothing there, and the same words as a name never deposited.
    let stranger = tempfile::tempdir().unwrap();
    let (_, docs, _) = owner(
        stranger.path(),
        &at,
        &[
            "replicas",
            "retrieve secret.bin",
            "retrieve never.bin",
            "forget secret.bin --yes",
        ],
        &[],
    );
    assert_eq!(docs[0]["deposits"].as_array().unwrap().len(), 0, "{docs:?}");
    let said = |d: &serde_json::Value, n: &str| d["error"].as_str().unwrap().replace(n, "NAME");
    assert_eq!(said(&docs[1], "secret.bin"), said(&docs[2], "never.bin"));
    assert!(docs[3]["error"].as_str().unwrap().contains("no deposit"));
    assert_eq!(holders(&s, "secret.bin").len(), 2);
    // The owner's identity in an empty folder, told of one store only.
    let elsewhere = tempfile::tempdir().unwrap();
    let identity = own.path().join(".dropbox-shell/identity");
    let id = identity.to_str().unwrap();
    let (code, docs, err) = owner(
        elsewhere.path(),
        &at[..1],
        &["replicas", "retrieve secret.bin"],
        &["--identity", id],
    );
    // Told of one store, it sees that store's copy (and retrieves from it).
    assert_eq!(code, 0, "{docs:?} {err}");
    assert_eq!(docs[0]["deposits"][0]["status"], "degraded 1/2");
    assert_eq!(fs::read(elsewhere.path().join("secret.bin")).unwrap(), data);
    fs::remove_file(elsewhere.path().join("secret.bin")).unwrap();
    let (code, docs, err) = owner(
        elsewhere.path(),
        &at,
        &["replicas", "retrieve secret.bin"],
        &["--identity", id],
    );
    assert_eq!(code, 0, "{err}");
    let d = &docs[0]["deposits"][0];
    assert_eq!(
        (d["name"].as_str(), d["copies_found"].as_u64()),
        (Some("secret.bin"), Some(2))
    );
    assert_eq!(fs::read(elsewhere.path().join("secret.bin")).unwrap(), data);
}

#[test]
fn a_new_version_replaces_the_old_and_forget_removes_every_copy() {
    let mut s = stores(&["z1", "z2", "z3", "z4"], &[]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("v.txt"), b"version one").unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, _) = owner(own.path(), &at, &["deposit v.txt --copies 3"], &[]);
    assert_eq!(code, 0);
    let before = holders(&s, "v.txt");
    // One holder is down while the new version is made.
    let down = before[0];
    let (kept_dir, listen) = take_down(&mut s, down);
    let at: Vec<&Peer> = s
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != down)
        .map(|(_, p)| p)
        .collect();
    fs::write(own.path().join("v.txt"), b"version two, longer").unwrap();
    let (code, docs, err) = owner(own.path(), &at, &["deposit v.txt --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["version"], 2);
    for i in holders(&s, "v.txt") {
        if i != down {
            assert_eq!(
                held(&s[i], "v.txt").unwrap().0,
                2,
                "store {i} still holds the old version"
            );
        }
    }
    // It comes back with version 1: never served as current.
    s[down] = Peer::start_at(kept_dir, &listen, &["--store", "--zone", "z1"]);
    let at: Vec<&Peer> = s.iter().collect();
    for _ in 0..3 {
        let (code, docs, err) = owner(own.path(), &at, &["retrieve v.txt got.txt"], &[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(docs[0]["version"], 2);
        assert_eq!(
            fs::read(own.path().join("got.txt")).unwrap(),
            b"version two, longer"
        );
    }
    let (_, docs, _) = owner(own.path(), &at, &["replicas v.txt"], &[]);
    let copies = docs[0]["deposits"][0]["copies"].as_array().unwrap().clone();
    let old = copies.iter().find(|c| c["address"] == listen.as_str());
    if let Some(old) = old {
        assert_eq!(
            old["state"], "missing",
            "an old version counts as missing: {copies:?}"
        );
    }
    // forget: scripts must say --yes; then every copy goes.
    let (code, docs, _) = owner(own.path(), &at, &["forget v.txt"], &[]);
    assert_eq!(code, 1);
    assert!(docs[0]["error"].as_str().unwrap().contains("--yes"));
    assert!(!holders(&s, "v.txt").is_empty());
    let (code, docs, err) = owner(
        own.path(),
        &at,
        &["forget v.txt --yes", "replicas", "retrieve v.txt"],
        &[],
    );
    assert_eq!(code, 1, "retrieve fails after forget: {docs:?} {err}");
    assert!(
        docs[0]["removed"].as_array().unwrap().len() >= 3,
        "{docs:?}"
    );
    assert_eq!(docs[1]["deposits"].as_array().unwrap().len(), 0);
    assert!(docs[2]["error"].as_str().unwrap().contains("no deposit"));
    assert!(holders(&s, "v.txt").is_empty());
}

#[test]
fn a_store_killed_mid_deposit_keeps_no_half_copy() {
    let s = stores(&["k"], &[]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("huge.bin"), random_bytes(5, 256 << 20)).unwrap();
    let addr = s[0].addr.clone();
    let mut c = bin();
    c.args(["--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(own.path())
        .args(["--peer", &addr, "-c", "deposit huge.bin --copies 1"]);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = s[0].path(".dropbox-shell/store/tmp");
    assert!(wait_for_part_file(&tmp), "no transfer started");
    let mut s = s;
    let dir = s.remove(0).stop("-KILL");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let back = Peer::start_at(dir, &addr, &["--store", "--zone", "k"]);
    assert_eq!(tmp_files(&back), 0);
    assert!(held(&back, "huge.bin").is_none());
}

#[test]
fn copies_go_down_and_up_and_repair_fills_what_is_missing() {
    let mut s = stores(&["z1", "z2", "z3", "z4"], &[]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(6, 500_000);
    fs::write(own.path().join("c.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit c.bin --copies 2"], &[]);
    assert_eq!(code, 0, "{err}");
    // Down to one: the surplus goes once the kept one is verified.
    let (code, docs, err) = owner(own.path(), &at, &["copies c.bin 1"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        docs[0]["deposits"][0]["removed"].as_array().unwrap().len(),
        1
    );
    assert_eq!(holders(&s, "c.bin").len(), 1);
    // The owner's own file is gone: new copies come from a store.
    fs::remove_file(own.path().join("c.bin")).unwrap();
    // A store that does not hold it is down: four wanted, three zones up.
    let holder = holders(&s, "c.bin")[0];
    let down = (0..4).find(|i| *i != holder).unwrap();
    let (dir, listen) = take_down(&mut s, down);
    let up: Vec<&Peer> = s
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != down)
        .map(|(_, p)| p)
        .collect();
    let (code, docs, _) = owner(own.path(), &up, &["copies c.bin 4"], &[]);
    assert_eq!(code, 1, "{docs:?}");
    assert_eq!(docs[0]["error"], "3 of 4 copies: only 3 zones reachable");
    assert_eq!(holders(&s, "c.bin").len(), 3);
    for i in holders(&s, "c.bin") {
        assert_eq!(held(&s[i], "c.bin").unwrap().2, Some(md5_hex(&data)));
    }
    // The zone comes back: repair makes the fourth copy.
    s[down] = Peer::start_at(dir, &listen, &["--store", "--zone", "z9"]);
    let at: Vec<&Peer> = s.iter().collect();
    let (code, docs, err) = owner(own.path(), &at, &["repair"], &[]);
    assert_eq!(code, 0, "{docs:?} {err}");
    assert_eq!(holders(&s, "c.bin").len(), 4);
    // A copy goes bad on its disk: repair finds it and makes it good.
    let bad = holders(&s, "c.bin")[1];
    let blob = blob_path(&s[bad], "c.bin");
    let mut bytes = fs::read(&blob).unwrap();
    bytes[7] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    let (code, docs, err) = owner(own.path(), &at, &["repair", "replicas c.bin"], &[]);
    assert_eq!(code, 0, "{err}");
    let c = &docs[0]["deposits"][0];
    assert_eq!(
        (c["corrupt"].as_u64(), c["copies_found"].as_u64()),
        (Some(1), Some(4)),
        "{c}"
    );
    assert_eq!(
        held(&s[bad], "c.bin").unwrap(),
        (1, "ok".into(), Some(md5_hex(&data)))
    );
    assert_eq!(docs[1]["deposits"][0]["status"], "ok");
    // Nothing of the copies' temporary folders is left with the owner.
    let state = fs::read_dir(own.path().join(".dropbox-shell")).unwrap();
    assert!(
        state
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".deposit-"))
    );
}

/// Stores that find each other: the first alone, the others told of it.
fn gossiping(zones: &[&str]) -> Vec<Peer> {
    let first = Peer::start(&["--store", "--zone", zones[0], "--repair-interval", "1"]);
    let addr = first.addr.clone();
    let mut all = vec![first];
    for z in &zones[1..] {
        all.push(Peer::start(&[
            "--store",
            "--zone",
            z,
            "--repair-interval",
            "1",
            "--peer",
            &addr,
        ]));
    }
    all
}

#[test]
fn stores_find_each_other_and_a_new_store_takes_the_missing_copy_by_itself() {
    let mut s = gossiping(&["z1", "z2", "z3"]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("g.bin"), random_bytes(7, 200_000)).unwrap();
    // Told of one store only, the owner finds the others through it.
    let mut last = Vec::new();
    let found = wait_for(EVENTUALLY, || {
        let (_, docs, _) = owner(own.path(), &[&s[0]], &["deposit g.bin --copies 4"], &[]);
        last = docs;
        last[0]["copies_made"] == 3
    });
    assert!(found, "{last:?}");
    assert_eq!(last[0]["error"], "3 of 4 copies: only 3 zones reachable");
    // A fourth zone appears, told of the first store; the owner is gone.
    s.push(Peer::start(&[
        "--store",
        "--zone",
        "z4",
        "--repair-interval",
        "1",
        "--peer",
        &s[0].addr,
    ]));
    assert!(
        wait_for(EVENTUALLY, || holders(&s, "g.bin").len() == 4),
        "the fourth copy never came: {:?}",
        holders(&s, "g.bin")
    );
    let (v, state, md5) = held(&s[3], "g.bin").unwrap();
    assert_eq!((v, state.as_str()), (1, "ok"));
    assert_eq!(md5, held(&s[0], "g.bin").unwrap().2);
}

#[test]
fn a_store_that_was_down_drops_its_old_version_by_itself() {
    let mut s = gossiping(&["z1", "z2", "z3", "z4"]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("v.txt"), b"first").unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit v.txt --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    let down = holders(&s, "v.txt")[0];
    let zone = format!("z{}", down + 1);
    let (dir, listen) = take_down(&mut s, down);
    let at: Vec<&Peer> = s
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != down)
        .map(|(_, p)| p)
        .collect();
    fs::write(own.path().join("v.txt"), b"second").unwrap();
    let (code, docs, err) = owner(own.path(), &at, &["deposit v.txt --copies 3"], &[]);
    assert_eq!(code, 0, "{docs:?} {err}");
    let mut extra = vec!["--store", "--zone", zone.as_str(), "--repair-interval", "1"];
    let first = s[0].addr.clone();
    if down != 0 {
        extra.extend(["--peer", first.as_str()]);
    }
    s[down] = Peer::start_at(dir, &listen, &extra);
    assert_eq!(
        held(&s[down], "v.txt").unwrap().0,
        1,
        "it comes back with the old version"
    );
    assert!(
        wait_for(EVENTUALLY, || held(&s[down], "v.txt").map(|h| h.0)
            != Some(1)),
        "the old version stayed on store {down}: {:?}",
        (0..4).map(|i| held(&s[i], "v.txt")).collect::<Vec<_>>()
    );
    // What is held anywhere is the new version (a store that saw too few
    // others may have put a surplus copy of it there: never fewer).
    let versions: Vec<u64> = holders(&s, "v.txt")
        .iter()
        .map(|&i| held(&s[i], "v.txt").unwrap().0)
        .collect();
    assert!(
        versions.len() >= 3 && versions.iter().all(|v| *v == 2),
        "{versions:?}"
    );
}

#[test]
fn an_owner_that_stays_up_repairs_its_deposits_by_itself() {
    // Stores that do not know each other: only the owner can heal.
    let s = stores(&["z1", "z2", "z3"], &[]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(8, 300_000);
    fs::write(own.path().join("o.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit o.bin --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    let bad = holders(&s, "o.bin")[0];
    let blob = blob_path(&s[bad], "o.bin");
    let mut bytes = fs::read(&blob).unwrap();
    bytes[5] ^= 0x40;
    fs::write(&blob, &bytes).unwrap();
    let mut args = vec!["--repair-interval", "1"];
    for p in &s {
        args.extend(["--peer", p.addr.as_str()]);
    }
    let _up = Peer::start_in(own, &args);
    assert!(
        wait_for(EVENTUALLY, || held(&s[bad], "o.bin")
            == Some((1, "ok".into(), Some(md5_hex(&data))))),
        "the corrupt copy was not made good: {:?}",
        held(&s[bad], "o.bin")
    );
}

#[test]
fn stores_find_and_replace_a_rotten_copy_with_the_owner_away() {
    let s = gossiping(&["z1", "z2", "z3"]);
    let own = tempfile::tempdir().unwrap();
    let data = random_bytes(10, 400_000);
    fs::write(own.path().join("r.bin"), &data).unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit r.bin --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    let bad = holders(&s, "r.bin")[2];
    let blob = blob_path(&s[bad], "r.bin");
    let mut bytes = fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    assert!(
        wait_for(EVENTUALLY, || held(&s[bad], "r.bin")
            == Some((1, "ok".into(), Some(md5_hex(&data))))),
        "{:?}",
        held(&s[bad], "r.bin")
    );
}

/// A store that lies: it lists the owner's real record (copied from a real
/// store's disk) but sends other bytes under another record when asked.
fn lying_store(real: dropbox_shell::proto::Record) -> String {
    use dropbox_shell::proto::{Held, Request, Response, StoreStatus, write_msg};
    let keys = dropbox_shell::secure::Keypair::generate().unwrap();
    let id = keys.id().to_string();
    let creds = dropbox_shell::secure::Credentials::open(keys);
    fake_peer_with(creds, move |req, w| {
        let held = |record| Response::Held {
            held: Some(Held {
                record,
                state: dropbox_shell::proto::CopyState::Ok,
            }),
        };
        let answer = match req {
            Request::Info => Response::Info {
                peer_id: id.clone(),
                allow_upload: false,
                zone: Some("liar".into()),
                store: Some(StoreStatus {
                    free: 1 << 40,
                    used: 0,
                    quota: None,
                }),
            },
            Request::StoreList { .. } => Response::Stores { addrs: vec![] },
            Request::DepositStat { .. } => held(real.clone()),
            Request::DepositGet { .. } => {
                let evil = b"evil bytes, longer than the real ones".to_vec();
                let mut fake = real.clone();
                fake.size = evil.len() as u64;
                fake.md5 = md5_hex(&evil);
                let _ = write_msg(w, &held(fake));
                let _ = std::io::Write::write_all(w, &evil);
                Response::Done {
                    md5: md5_hex(&evil),
                }
            }
            _ => Response::Error {
                message: "no".into(),
            },
        };
        let _ = write_msg(w, &answer);
        let _ = std::io::Write::flush(w);
    })
}

#[test]
fn a_lying_store_cannot_put_other_bytes_in_the_owners_file() {
    let s = stores(&["z1"], &[]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("d.txt"), b"the real deposit").unwrap();
    let (code, _, err) = owner(own.path(), &[&s[0]], &["deposit d.txt --copies 1"], &[]);
    assert_eq!(code, 0, "{err}");
    // The liar knows the owner's real signed record (as a holder would).
    let meta = fs::read_dir(s[0].path(".dropbox-shell/store"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|o| fs::read_dir(o.path()).unwrap().flatten())
        .map(|d| d.path().join("meta.json"))
        .find(|p| p.exists())
        .unwrap();
    let held: serde_json::Value = serde_json::from_slice(&fs::read(meta).unwrap()).unwrap();
    let record: dropbox_shell::proto::Record =
        serde_json::from_value(held["record"].clone()).unwrap();
    let liar = lying_store(record);
    drop(s); // the honest store is gone; only the liar answers
    fs::write(own.path().join("target.txt"), b"keep me").unwrap();
    let mut c = bin();
    c.args(["--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(own.path())
        .args(["--peer", &liar, "-c", "retrieve d.txt target.txt"]);
    let (code, docs, _) = json_lines(&c.output().unwrap());
    assert_eq!(code, 1, "{docs:?}");
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("another version"),
        "{docs:?}"
    );
    assert_eq!(fs::read(own.path().join("target.txt")).unwrap(), b"keep me");
}

#[test]
fn a_store_that_was_down_during_forget_does_not_bring_the_deposit_back() {
    let mut s = gossiping(&["z1", "z2", "z3"]);
    let own = tempfile::tempdir().unwrap();
    fs::write(own.path().join("gone.txt"), b"forget me").unwrap();
    let at: Vec<&Peer> = s.iter().collect();
    let (code, _, err) = owner(own.path(), &at, &["deposit gone.txt --copies 3"], &[]);
    assert_eq!(code, 0, "{err}");
    // One holder is down while the owner forgets.
    let down = 2;
    let (dir, listen) = take_down(&mut s, down);
    let up: Vec<&Peer> = s.iter().take(2).collect();
    let (code, docs, _) = owner(own.path(), &up, &["forget gone.txt --yes"], &[]);
    assert_eq!(code, 1, "one holder did not answer: {docs:?}");
    assert_eq!(docs[0]["removed"].as_array().unwrap().len(), 2);
    // It comes back with its copy: the copy goes, and nobody gets it again.
    let first = s[0].addr.clone();
    s[down] = Peer::start_at(
        dir,
        &listen,
        &[
            "--store",
            "--zone",
            "z3",
            "--repair-interval",
            "1",
            "--peer",
            &first,
        ],
    );
    assert!(held(&s[down], "gone.txt").is_some());
    assert!(
        wait_for(EVENTUALLY, || held(&s[down], "gone.txt").is_none()),
        "the forgotten copy stayed"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        holders(&s, "gone.txt").is_empty(),
        "{:?}",
        holders(&s, "gone.txt")
    );
    let at: Vec<&Peer> = s.iter().collect();
    let (_, docs, _) = owner(own.path(), &at, &["replicas", "retrieve gone.txt"], &[]);
    assert_eq!(docs[0]["deposits"].as_array().unwrap().len(), 0, "{docs:?}");
    assert!(docs[1]["error"].as_str().unwrap().contains("no deposit"));
    // Deposited again later, it is a new version above the tombstone.
    let (code, docs, err) = owner(own.path(), &at, &["deposit gone.txt --copies 2"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["version"], 3);
}

#[test]
fn a_fifo_a_hostile_name_or_a_missing_file_is_a_clear_error() {
    let s = stores(&["z1"], &[]);
    let own = tempfile::tempdir().unwrap();
    let fifo = own.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, docs, _) = owner(
        own.path(),
        &[&s[0]],
        &[
            "deposit pipe",
            "deposit ../../etc/passwd",
            "deposit nothing.txt",
            "retrieve x ../out",
            "id",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        docs.len(),
        5,
        "every command answered, the shell went on: {docs:?}"
    );
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{docs:?}"
    );
    assert!(
        docs[1]["error"]
            .as_str()
            .unwrap()
            .contains("leaves the shared folder"),
        "{docs:?}"
    );
    assert!(docs[2]["error"].is_string(), "{docs:?}");
    assert!(
        docs[3]["error"]
            .as_str()
            .unwrap()
            .contains("leaves the shared folder"),
        "{docs:?}"
    );
    assert!(docs[4]["id"].is_string());
    assert_eq!(tmp_files(&s[0]), 0);
    assert!(holders(&s, "pipe").is_empty());
}
