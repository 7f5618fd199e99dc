//! Tables and JSON for the deposit commands: where each copy went
//! (`deposit`), where a file came from (`retrieve`), every deposit with its
//! copies (`replicas`), and what `forget` removed.

use serde_json::{Value, json};

use super::{add_row, count, escape, human_size, keep_whole, table, tables};
use crate::cli::Protocol;
use crate::deposit::CopyRow;
use crate::deposit::act::Change;
use crate::deposit::get::{Forgotten, Replica, Retrieved};
use crate::deposit::put::DepositReport;
use crate::secure::keys::short_of;

/// A table of copies: store (short id), address, zone, state.
fn copies(rows: &[CopyRow], width: Option<u16>) -> String {
    let mut t = table(&["Store", "Address", "Zone", "State"], width);
    for r in rows {
        add_row(
            &mut t,
            [
                short_of(&r.store_id),
                r.address.clone(),
                r.zone.clone(),
                r.state.clone(),
            ],
        );
    }
    t.to_string()
}

pub fn deposited(r: &DepositReport, width: Option<u16>) -> String {
    format!(
        "deposited {} ({}, MD5 {}) version {}: {} of {} copies\n{}",
        escape(&r.name),
        human_size(r.size),
        r.md5,
        r.version,
        r.copies_made,
        r.copies_wanted,
        copies(&r.copies, width)
    )
}

pub fn retrieved(r: &Retrieved, width: Option<u16>) -> String {
    let text = tables::transfer(&r.report, &Protocol::Tcp, &false, width);
    let mut text = text.replacen("downloaded", "retrieved", 1);
    text.push_str(&format!(
        "\nversion {} from store {} ({}, zone {})",
        r.version,
        short_of(&r.from.store_id),
        escape(&r.from.address),
        escape(&r.from.zone)
    ));
    for (row, why) in &r.passed_over {
        text.push_str(&format!(
            "\npassed over store {} ({}): {}",
            short_of(&row.store_id),
            escape(&row.address),
            escape(why)
        ));
    }
    text
}

pub fn replicas(all: &[Replica], width: Option<u16>) -> String {
    if all.is_empty() {
        return "no deposits of ours on the stores that answer".into();
    }
    let mut t = table(
        &[
            "Name", "Size", "MD5", "Version", "Copies", "Store", "Zone", "State",
        ],
        width,
    );
    for d in all {
        for (i, c) in d.copies.iter().enumerate() {
            let first = i == 0;
            let cell = |s: String| if first { s } else { String::new() };
            add_row(
                &mut t,
                [
                    cell(d.name.clone()),
                    cell(human_size(d.size)),
                    cell(d.md5.clone()),
                    cell(d.version.to_string()),
                    cell(format!(
                        "{}/{} {}",
                        d.copies_found,
                        d.copies_wanted,
                        if d.status == "ok" { "ok" } else { "degraded" }
                    )),
                    format!("{} {}", short_of(&c.store_id), c.address),
                    c.zone.clone(),
                    c.state.clone(),
                ],
            );
        }
    }
    keep_whole(&mut t, &[(2, 32)]);
    t.to_string()
}

pub fn forgotten(f: &Forgotten, width: Option<u16>) -> String {
    let mut rows = f.removed.clone();
    rows.extend(f.unreachable.iter().cloned());
    format!(
        "forgot {}: {} removed\n{}",
        escape(&f.name),
        count(f.removed.len(), "copy", "copies"),
        copies(&rows, width)
    )
}

pub fn changed(all: &[Change], width: Option<u16>) -> String {
    if all.is_empty() {
        return "no deposits of ours on the stores that answer".into();
    }
    let mut parts = Vec::new();
    for c in all {
        let mut head = format!(
            "{} version {}: {} of {} copies",
            escape(&c.name),
            c.version,
            c.copies_found,
            c.copies_wanted
        );
        if c.corrupt > 0 {
            head.push_str(&format!(", {} corrupt found", c.corrupt));
        }
        head.push_str(&format!(
            ", {} added, {} removed",
            c.added.len(),
            c.removed.len()
        ));
        let mut rows = c.copies.clone();
        rows.extend(c.removed.iter().cloned());
        parts.push(format!("{head}\n{}", copies(&rows, width)));
    }
    parts.join("\n")
}

/// `retrieve` under `--json`: download's keys plus where it came from.
pub fn retrieved_json(r: &Retrieved, transfer: Value) -> Value {
    let mut v = transfer;
    v["version"] = json!(r.version);
    v["from"] = json!(r.from);
    v["passed_over"] = json!(r
        .passed_over
        .iter()
        .map(|(row, why)| json!({"store_id": row.store_id, "address": row.address, "zone": row.zone, "reason": why}))
        .collect::<Vec<_>>());
    v
}
