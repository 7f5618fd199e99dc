//! A shell line becomes a [`Command`] value: words split like a shell
//! (quotes allowed), arguments checked (regexes compiled, dates read, names
//! made safe), all without I/O. Also the help text.

mod deposit;
pub use deposit::DepositCmd;

use chrono::{DateTime, TimeZone, Utc};

use crate::display::escape;
use crate::names::clean_name;
use crate::timestamp::parse_range;
use crate::{Error, Result, bail};

/// How a download travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// One parsed shell command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An empty line or a comment.
    Nothing,
    IndexLonglist,
    IndexShortlist {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    IndexRegex(String),
    HashVerify(String),
    HashCheckall,
    Download {
        protocol: Protocol,
        name: String,
    },
    Upload {
        name: String,
        force: bool,
    },
    History(Option<usize>),
    /// `sync` (a round now), `sync status`, `sync confirm`.
    Sync(SyncVerb),
    Peers,
    PeerUse(String),
    /// Forget the id seen at an address (it changed, as expected).
    PeerForget(String),
    /// This peer's full id.
    Id,
    /// `deposit`, `retrieve`, `replicas`, `forget`.
    Deposit(DepositCmd),
    Help(Option<String>),
    Exit,
}

/// What `sync` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncVerb {
    Now,
    Status,
    Confirm,
}

/// Every command word, for completion and help.
pub const COMMANDS: &[&str] = &[
    "index", "hash", "download", "upload", "sync", "history", "peers", "peer", "id", "deposit",
    "retrieve", "replicas", "copies", "repair", "forget", "help", "exit", "quit",
];

/// Parse one shell line; naive timestamps are read in `tz`, relative ones
/// (`-2h`, `today`) from `now`.
pub fn parse_line<Tz: TimeZone>(line: &str, tz: &Tz, now: DateTime<Utc>) -> Result<Command> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Command::Nothing);
    }
    if let Some(expr) = regex_argument(trimmed) {
        regex::Regex::new(&expr).map_err(|e| {
            Error::new(format!(
                "bad regular expression '{}': {}",
                escape(&expr),
                first_line(&e.to_string())
            ))
        })?;
        return Ok(Command::IndexRegex(expr));
    }
    let words = shell_words::split(trimmed)
        .map_err(|e| Error::new(format!("cannot split the line into words: {e}")))?;
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    if let Some(cmd) = deposit::parse(&w) {
        return cmd;
    }
    let usage = |cmd: &str| Error::new(format!("usage: {}", usage_of(cmd)));
    match w.as_slice() {
        ["index", "longlist"] => Ok(Command::IndexLonglist),
        ["index", "shortlist", start, end] => {
            let (start, end) = parse_range(start, end, tz, now)?;
            Ok(Command::IndexShortlist { start, end })
        }
        ["index", ..] => Err(usage("index")),
        ["hash", "verify", _, _, ..] | ["download", _, _, _, ..] => Err(unquoted_name(&w, 2)),
        ["upload", "--force"] => Err(usage("upload")),
        ["upload", flag, ..] if flag.starts_with("--") && *flag != "--force" => bail!(
            "upload has no option {flag:?}; usage: {}",
            usage_of("upload")
        ),
        ["upload", "--force", _, _, ..] => Err(unquoted_name(&w, 2)),
        ["upload", _, _, ..] if !w.contains(&"--force") => Err(unquoted_name(&w, 1)),
        ["hash", "verify", name] => Ok(Command::HashVerify(clean_name(name)?)),
        ["hash", "checkall"] => Ok(Command::HashCheckall),
        ["hash", ..] => Err(usage("hash")),
        ["download", proto, name] => {
            let protocol = match proto.to_ascii_uppercase().as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => bail!(
                    "unknown protocol {proto:?}; usage: {}",
                    usage_of("download")
                ),
            };
            Ok(Command::Download {
                protocol,
                name: clean_name(name)?,
            })
        }
        ["download", ..] => Err(usage("download")),
        ["upload", name] => Ok(Command::Upload {
            name: clean_name(name)?,
            force: false,
        }),
        ["upload", "--force", name] | ["upload", name, "--force"] => Ok(Command::Upload {
            name: clean_name(name)?,
            force: true,
        }),
        ["upload", ..] => Err(usage("upload")),
        ["sync"] => Ok(Command::Sync(SyncVerb::Now)),
        ["sync", "status"] => Ok(Command::Sync(SyncVerb::Status)),
        ["sync", "confirm"] => Ok(Command::Sync(SyncVerb::Confirm)),
        ["sync", ..] => Err(usage("sync")),
        ["history"] => Ok(Command::History(None)),
        ["history", n] => match n.parse::<usize>() {
            Ok(n) => Ok(Command::History(Some(n))),
            Err(_) => bail!(
                "history takes a count, not {n:?}; usage: {}",
                usage_of("history")
            ),
        },
        ["history", ..] => Err(usage("history")),
        ["peers"] => Ok(Command::Peers),
        ["peer", "use", addr] => Ok(Command::PeerUse(addr.to_string())),
        ["peer", "forget", addr] => Ok(Command::PeerForget(addr.to_string())),
        ["peer", ..] => Err(usage("peer")),
        ["id"] => Ok(Command::Id),
        ["help"] => Ok(Command::Help(None)),
        ["help", topic] => Ok(Command::Help(Some(topic.to_string()))),
        ["help", ..] => Err(usage("help")),
        ["exit" | "quit"] => Ok(Command::Exit),
        [cmd @ ("peers" | "id" | "exit" | "quit"), ..] => {
            let topic = if *cmd == "quit" { "exit" } else { cmd };
            bail!("{cmd} takes no arguments; usage: {}", usage_of(topic))
        }
        [other, ..] => bail!("unknown command {other:?}; type `help` for the list"),
        [] => Ok(Command::Nothing),
    }
}

/// More words than the command takes, the name last: most likely a name
/// with spaces, not quoted. Say so, with the line quoted as it should be.
fn unquoted_name(w: &[&str], before_name: usize) -> Error {
    let (head, name) = w.split_at(before_name);
    Error::new(format!(
        "too many words for {}; quote a name with spaces: {} '{}'",
        w[0],
        head.join(" "),
        name.join(" ")
    ))
}

/// The raw expression of `index regex <expr>`: backslashes are the regex's,
/// not the shell's, so the rest of the line is taken as written (without
/// the quotes when the whole expression is quoted). A `#` after whitespace,
/// outside the quotes, starts a comment, as in a shell.
fn regex_argument(line: &str) -> Option<String> {
    let rest = line.strip_prefix("index")?;
    let rest = rest.trim_start().strip_prefix("regex")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let expr = rest.trim();
    for q in ['"', '\'', '`'] {
        let Some(body) = expr.strip_prefix(q) else {
            continue;
        };
        // The closing quote is the first one followed by nothing but an
        // optional comment.
        let closing = body.match_indices(q).find(|(i, _)| {
            let after = &body[i + q.len_utf8()..];
            after.trim().is_empty()
                || (after.starts_with(char::is_whitespace) && after.trim_start().starts_with('#'))
        });
        if let Some((i, _)) = closing {
            return Some(body[..i].to_string());
        }
    }
    let expr = without_comment(expr);
    (!expr.is_empty()).then(|| expr.to_string())
}

/// `text` up to a `#` that starts it or follows whitespace, trimmed.
fn without_comment(text: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        if c == '#' && prev_space {
            return text[..i].trim_end();
        }
        prev_space = c.is_whitespace();
    }
    text.trim_end()
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// The commands, their usage and what they do: (word, usage, summary).
pub const HELP: &[(&str, &str, &str)] = &[
    (
        "index",
        "index longlist | index shortlist <start> <end> | index regex <expr>",
        "list the peer's shared folder: every entry, entries with start <= mtime <= end, or entries whose path matches a regex",
    ),
    (
        "hash",
        "hash verify <file> | hash checkall",
        "MD5 and mtime of one file, or of every file, on the peer",
    ),
    (
        "download",
        "download TCP|UDP <file>",
        "copy a file from the peer into the own folder, verified by MD5",
    ),
    (
        "upload",
        "upload [--force] <file>",
        "send an own file to the peer (it must run with --allow-upload; --force replaces)",
    ),
    (
        "sync",
        "sync | sync status | sync confirm",
        "one two-way sync round with every partner now; what is pending and when the last round ran; apply deletions paused as suspicious",
    ),
    (
        "history",
        "history [N]",
        "the last N requests made and served by this peer (default 20)",
    ),
    ("peers", "peers", "list the peers and whether they answer"),
    (
        "peer",
        "peer use HOST:PORT|ID | peer forget HOST:PORT",
        "make HOST:PORT the current peer; forget the id seen at HOST:PORT (when its peer's key changed, as expected)",
    ),
    (
        "id",
        "id",
        "this peer's id: the fingerprint of its key, which other peers know it by",
    ),
    (
        "deposit",
        "deposit <file> [--copies N]",
        "keep N verified copies (default 2) of an own file on N stores in N distinct zones",
    ),
    (
        "retrieve",
        "retrieve <name> [<local path>]",
        "copy a deposit of ours back from the best store that holds it, verified by MD5",
    ),
    (
        "replicas",
        "replicas [<name>]",
        "our deposits as the stores hold them: copies wanted and found, each copy's store, zone and state",
    ),
    (
        "copies",
        "copies <name> <N>",
        "change how many copies a deposit of ours has: new ones in new zones, or surplus ones removed once the others are verified",
    ),
    (
        "repair",
        "repair",
        "every store reads its copies of our deposits and checks their MD5; missing or corrupt copies are made again on the next stores in placement order",
    ),
    (
        "forget",
        "forget <name> [--yes]",
        "remove every copy of a deposit of ours (asks first; scripts pass --yes)",
    ),
    (
        "help",
        "help [command]",
        "this list, or one command in detail",
    ),
    ("exit", "exit | quit | Ctrl-D", "leave the shell"),
];

fn usage_of(cmd: &str) -> &'static str {
    HELP.iter()
        .find(|(w, _, _)| *w == cmd)
        .map(|(_, u, _)| *u)
        .unwrap_or("help")
}

/// Help for one command or all of them.
pub fn help_text(topic: Option<&str>) -> Result<String> {
    let topic = topic.map(|t| if t == "quit" { "exit" } else { t });
    match topic {
        None => {
            let mut s = String::from("commands:\n");
            for (_, usage, what) in HELP {
                s.push_str(&format!("  {usage}\n      {what}\n"));
            }
            s.push_str(&format!(
                "times for shortlist: {}\n",
                crate::timestamp::ACCEPTED_FORMS
                    .strip_prefix("use ")
                    .unwrap_or(crate::timestamp::ACCEPTED_FORMS)
            ));
            Ok(s)
        }
        Some(t) => match HELP.iter().find(|(w, _, _)| *w == t) {
            Some((_, usage, what)) => Ok(format!("usage: {usage}\n  {what}\n")),
            None => bail!("no command {t:?}; type `help` for the list"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn p(s: &str) -> Result<Command> {
        parse_line(s, &Utc, Utc::now())
    }

    #[test]
    fn commands_parse() {
        assert_eq!(p("index longlist").unwrap(), Command::IndexLonglist);
        assert_eq!(p("  ").unwrap(), Command::Nothing);
        assert_eq!(p("# note").unwrap(), Command::Nothing);
        assert_eq!(
            p(r"index regex \.txt$").unwrap(),
            Command::IndexRegex(r"\.txt$".into())
        );
        assert_eq!(
            p(r"index regex '^a b\.md$'").unwrap(),
            Command::IndexRegex(r"^a b\.md$".into())
        );
        assert!(matches!(p("index regex").unwrap_err().to_string(), m if m.contains("usage")));
        assert_eq!(
            p("download tcp \"my file.txt\"").unwrap(),
            Command::Download {
                protocol: Protocol::Tcp,
                name: "my file.txt".into()
            }
        );
        assert_eq!(
            p("download UDP a/b").unwrap(),
            Command::Download {
                protocol: Protocol::Udp,
                name: "a/b".into()
            }
        );
        assert_eq!(
            p("upload --force x").unwrap(),
            Command::Upload {
                name: "x".into(),
                force: true
            }
        );
        assert_eq!(p("history 5").unwrap(), Command::History(Some(5)));
        assert_eq!(p("quit").unwrap(), Command::Exit);
        assert_eq!(
            p("peer use 127.0.0.1:9").unwrap(),
            Command::PeerUse("127.0.0.1:9".into())
        );
        assert_eq!(
            p("peer forget 127.0.0.1:9").unwrap(),
            Command::PeerForget("127.0.0.1:9".into())
        );
        assert!(matches!(
            p("index shortlist 2024-01-01 2024-02-01").unwrap(),
            Command::IndexShortlist { .. }
        ));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let msg = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(
            msg("download UDP my file.txt"),
            "too many words for download; quote a name with spaces: download UDP 'my file.txt'"
        );
        assert!(msg("hash verify a b").ends_with(": hash verify 'a b'"));
        assert!(msg("upload a b c").ends_with(": upload 'a b c'"));
        assert!(msg("upload --force a b").ends_with(": upload --force 'a b'"));
        assert!(msg("index regex (").contains("bad regular expression"));
        assert!(msg("index shortlist nope 2024-01-01").contains("RFC 3339"));
        assert!(msg("index shortlist 2024-02-01 2024-01-01").contains("after"));
        assert!(msg("download FTP x").contains("unknown protocol"));
        assert!(msg("download TCP ../x").contains("leaves the shared folder"));
        assert!(msg("hash verify /etc/passwd").contains("absolute"));
        assert!(msg("frobnicate").contains("unknown command"));
        assert!(msg("index").contains("usage"));
        assert!(msg("history x").contains("count"));
        assert!(msg("download TCP \"unterminated").contains("split"));
    }

    #[test]
    fn a_comment_ends_a_regex_unless_quoted() {
        let re = |s: &str| match p(s).unwrap() {
            Command::IndexRegex(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(re(r"index regex \.txt$ # text files"), r"\.txt$");
        assert_eq!(re(r"index regex \.txt$	# tab before"), r"\.txt$");
        assert_eq!(re("index regex a#b"), "a#b");
        assert_eq!(re("index regex 'a #b'"), "a #b");
        assert_eq!(re("index regex 'a #b' # note"), "a #b");
        assert_eq!(re(r#"index regex "^x y$" #note"#), "^x y$");
        assert_eq!(re("index regex ''"), "");
        assert!(
            p("index regex # nothing")
                .unwrap_err()
                .message()
                .contains("usage")
        );
    }

    #[test]
    fn commands_without_arguments_say_so() {
        let msg = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(msg("peers x"), "peers takes no arguments; usage: peers");
        assert_eq!(
            msg("exit now"),
            "exit takes no arguments; usage: exit | quit | Ctrl-D"
        );
        assert_eq!(
            msg("quit now"),
            "quit takes no arguments; usage: exit | quit | Ctrl-D"
        );
        assert_eq!(msg("upload --force"), "usage: upload [--force] <file>");
        assert!(msg("upload --forse x").starts_with("upload has no option \"--forse\""));
        assert!(msg("peer x").contains("usage: peer use"));
        assert!(msg("help a b").contains("usage: help"));
    }

    #[test]
    fn a_bad_regex_is_quoted_once_and_escaped() {
        let msg = p(r"index regex \.txt(").unwrap_err().to_string();
        assert!(
            msg.starts_with(r"bad regular expression '\.txt(': "),
            "{msg}"
        );
        let msg = p("index regex a\u{1b}[2J(").unwrap_err().to_string();
        assert!(
            msg.starts_with(r"bad regular expression 'a\e[2J(': "),
            "{msg}"
        );
    }

    #[test]
    fn shortlist_takes_the_common_time_forms() {
        for (a, b) in [
            ("yesterday", "today"),
            ("2024-05-01T10:00Z", "now"),
            ("-2h", "now"),
            ("@1714564800", "-1w"),
        ] {
            let line = format!("index shortlist {a} {b}");
            assert!(
                matches!(p(&line), Ok(Command::IndexShortlist { .. })),
                "{line}"
            );
        }
        let msg = p("index shortlist 20240501 now").unwrap_err().to_string();
        assert!(
            msg.contains("write 2024-05-01") && msg.contains("@20240501"),
            "{msg}"
        );
    }

    #[test]
    fn help_covers_every_command() {
        let all = help_text(None).unwrap();
        for (_, usage, _) in HELP {
            assert!(all.contains(usage));
        }
        assert!(help_text(Some("download")).unwrap().contains("TCP|UDP"));
        assert!(help_text(Some("nope")).is_err());
        assert!(
            all.contains("yesterday") && all.contains("@1714564800"),
            "{all}"
        );
    }
}
