//! The deposit commands' words: `deposit <file> [--copies N]`,
//! `retrieve <name> [<local path>]`, `replicas [<name>]` and
//! `forget <name> [--yes]`, `copies <name> <N>` and `repair`.

use super::{Command, usage_of};
use crate::limits::MAX_COPIES;
use crate::names::clean_name;
use crate::{Error, Result, bail};

/// Copies a deposit gets unless `--copies` says otherwise.
pub const DEFAULT_COPIES: u8 = 2;

/// A deposit command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositCmd {
    Put { name: String, copies: u8 },
    Retrieve { name: String, local: Option<String> },
    Replicas(Option<String>),
    Forget { name: String, yes: bool },
    Copies { name: String, copies: u8 },
    Repair,
}

/// The command of `w` if its first word is a deposit command.
pub fn parse(w: &[&str]) -> Option<Result<Command>> {
    let usage = |cmd: &str| Error::new(format!("usage: {}", usage_of(cmd)));
    let cmd = match w {
        ["deposit", rest @ ..] => put(rest).ok_or_else(|| usage("deposit")).and_then(|r| r),
        ["retrieve", name] => name_of(name).map(|name| DepositCmd::Retrieve { name, local: None }),
        ["retrieve", name, local] => name_of(name).and_then(|name| {
            Ok(DepositCmd::Retrieve {
                name,
                local: Some(clean_name(local)?),
            })
        }),
        ["retrieve", ..] => Err(usage("retrieve")),
        ["replicas"] => Ok(DepositCmd::Replicas(None)),
        ["replicas", name] => name_of(name).map(|n| DepositCmd::Replicas(Some(n))),
        ["replicas", ..] => Err(usage("replicas")),
        ["forget", name] => name_of(name).map(|name| DepositCmd::Forget { name, yes: false }),
        ["forget", "--yes", name] | ["forget", name, "--yes"] => {
            name_of(name).map(|name| DepositCmd::Forget { name, yes: true })
        }
        ["forget", ..] => Err(usage("forget")),
        ["copies", name, n] => name_of(name).and_then(|name| {
            Ok(DepositCmd::Copies {
                name,
                copies: copies_of(n)?,
            })
        }),
        ["copies", ..] => Err(usage("copies")),
        ["repair"] => Ok(DepositCmd::Repair),
        ["repair", ..] => Err(usage("repair")),
        _ => return None,
    };
    Some(cmd.map(Command::Deposit))
}

/// A count of copies: 1 to 16.
fn copies_of(n: &str) -> Result<u8> {
    match n.parse::<u8>() {
        Ok(n) if (1..=MAX_COPIES).contains(&n) => Ok(n),
        _ => bail!("a deposit has 1 to {MAX_COPIES} copies, not {n:?}"),
    }
}

fn name_of(name: &str) -> Result<String> {
    if name.starts_with("--") {
        bail!("{name:?} is not a name here; an option goes after the name");
    }
    clean_name(name)
}

/// `deposit <file> [--copies N]`; `None` for a wrong shape.
fn put(rest: &[&str]) -> Option<Result<DepositCmd>> {
    let (name, copies) = match rest {
        [name] => (*name, None),
        ["--copies", n, name] | [name, "--copies", n] => (*name, Some(*n)),
        _ => return None,
    };
    let copies = match copies.map(copies_of) {
        None => DEFAULT_COPIES,
        Some(Ok(n)) => n,
        Some(Err(e)) => return Some(Err(e)),
    };
    Some(name_of(name).map(|name| DepositCmd::Put { name, copies }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command> {
        let w: Vec<&str> = line.split(' ').collect();
        parse(&w).expect("a deposit command")
    }

    fn put(name: &str, copies: u8) -> Command {
        Command::Deposit(DepositCmd::Put {
            name: name.into(),
            copies,
        })
    }

    #[test]
    fn deposit_words_and_their_errors() {
        assert_eq!(p("deposit a.txt").unwrap(), put("a.txt", 2));
        assert_eq!(p("deposit a.txt --copies 3").unwrap(), put("a.txt", 3));
        assert_eq!(p("deposit --copies 4 d/a.txt").unwrap(), put("d/a.txt", 4));
        for bad in [
            "deposit",
            "deposit a --copies 0",
            "deposit a --copies 17",
            "deposit a --copies x",
            "deposit ../a",
            "deposit a b",
            "deposit --copies 2",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(
            p("retrieve a.txt b/c.txt").unwrap(),
            Command::Deposit(DepositCmd::Retrieve {
                name: "a.txt".into(),
                local: Some("b/c.txt".into())
            })
        );
        assert!(p("retrieve a ../b").is_err());
        assert!(p("retrieve").is_err());
        assert_eq!(
            p("replicas").unwrap(),
            Command::Deposit(DepositCmd::Replicas(None))
        );
        assert_eq!(
            p("forget x --yes").unwrap(),
            Command::Deposit(DepositCmd::Forget {
                name: "x".into(),
                yes: true
            })
        );
        assert_eq!(
            p("forget x").unwrap(),
            Command::Deposit(DepositCmd::Forget {
                name: "x".into(),
                yes: false
            })
        );
        assert!(p("forget --yes").is_err());
        assert!(parse(&["index", "longlist"]).is_none());
        assert_eq!(
            p("copies x 4").unwrap(),
            Command::Deposit(DepositCmd::Copies {
                name: "x".into(),
                copies: 4
            })
        );
        for bad in ["copies x", "copies x 0", "copies x 99", "repair now"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(p("repair").unwrap(), Command::Deposit(DepositCmd::Repair));
    }
}
