//! The shell: reads command lines (interactively with rustyline, or from
//! `-c` and standard input), runs them through a [`Session`] and prints the
//! result as a table or JSON. Interactive use adds history across sessions,
//! tab completion of commands and of the peer's file names, a progress bar
//! on transfers, and server messages printed above the prompt. Whatever it
//! prints in text mode that peers or the disk wrote (events, errors) is
//! escaped for the terminal ([`crate::display`]); completion leaves out
//! names with control characters.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Local;
use indicatif::{ProgressBar, ProgressStyle};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter, Helper};

use crate::cli::{COMMANDS, Command, parse_line};
use crate::display::{escape, has_control};
use crate::proto::Kind;
use crate::render;
use crate::session::{Output, Session};
use crate::signals::SignalWatch;

fn print_out(s: &str) {
    if s.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// Run one line; returns (succeeded, asked to exit).
fn run_line(
    session: &mut Session,
    line: &str,
    json: bool,
    signals: &SignalWatch,
    bars: bool,
) -> (bool, bool) {
    if signals.quitting.load(Ordering::SeqCst) {
        return (true, true);
    }
    let cmd = match parse_line(line, &Local, chrono::Utc::now()) {
        Ok(c) => c,
        Err(e) => {
            report_error(&e, json);
            return (false, false);
        }
    };
    let transfer = matches!(cmd, Command::Download { .. } | Command::Upload { .. });
    let mut bar: Option<ProgressBar> = None;
    let mut progress = |done: u64, total: u64| {
        if !(bars && transfer) {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style);
            }
            b
        });
        b.set_position(done);
    };
    signals.cancel.store(false, Ordering::SeqCst);
    signals.busy.store(true, Ordering::SeqCst);
    let result = session.run(cmd, line, &mut progress);
    signals.busy.store(false, Ordering::SeqCst);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // A signal during the command: it was cancelled and the shell leaves.
    let quitting = signals.quitting.load(Ordering::SeqCst);
    match result {
        Ok(Output::Exit) => (true, true),
        Err(e) if quitting => {
            report_error(&e, json);
            (false, true)
        }
        Ok(Output::Partial { out, error }) if !json => {
            print_out(&render::text(&out, None));
            report_error(&error, false);
            (false, quitting)
        }
        Ok(out @ Output::Partial { .. }) => {
            print_out(&String::from_utf8_lossy(&render::json_bytes(&out)));
            (false, quitting)
        }
        Ok(out) => {
            if json {
                if !matches!(out, Output::Nothing) {
                    print_out(&String::from_utf8_lossy(&render::json_bytes(&out)));
                }
            } else {
                print_out(&render::text(&out, None));
            }
            (true, quitting)
        }
        Err(e) => {
            report_error(&e, json);
            (false, false)
        }
    }
}

/// An error as the user sees it: JSON on stdout (exact), or one line on
/// stderr with what peers and the disk wrote in it escaped.
fn report_error(e: &crate::Error, json: bool) {
    if json {
        print_out(&render::json_error(e).to_string());
    } else {
        eprintln!("{}", error_line(e));
    }
}

fn error_line(e: &crate::Error) -> String {
    format!("error: {}", escape(&e.to_string()))
}

/// A background thread's note as printed above the prompt: its label, then
/// its text escaped (it names files and peers that others chose).
fn event_line(ev: &crate::events::Event) -> String {
    format!("{} {}", ev.label(), escape(&ev.text))
}

/// A `forget` without `--yes` asks first: the line with `--yes` when the
/// user says yes, `None` when not. Other lines pass as they are.
fn confirmed<H: rustyline::Helper>(
    rl: &mut Editor<H, FileHistory>,
    line: String,
) -> Option<String> {
    use crate::cli::DepositCmd;
    let Ok(Command::Deposit(DepositCmd::Forget { name, yes: false })) =
        parse_line(&line, &Local, chrono::Utc::now())
    else {
        return Some(line);
    };
    let question = format!(
        "remove every copy of {} on every store? [y/N] ",
        escape(&name)
    );
    match rl.readline(&question) {
        Ok(a) if matches!(a.trim(), "y" | "Y" | "yes") => {
            Some(format!("{} --yes", line.trim_end()))
        }
        _ => {
            println!("nothing removed");
            None
        }
    }
}

/// Run lines in order (from `-c` or standard input); returns the exit status.
pub fn run_lines(
    session: &mut Session,
    lines: impl Iterator<Item = String>,
    json: bool,
    signals: &SignalWatch,
) -> i32 {
    let mut status = 0;
    for line in lines {
        let (ok, exit) = run_line(session, &line, json, signals, false);
        if !ok {
            status = 1;
        }
        if exit {
            break;
        }
    }
    status
}

/// Completion of commands, their words, and the peer's (or own) file names.
struct ShellHelper {
    shared: Arc<crate::peer::Shared>,
    peer: Arc<Mutex<Option<String>>>,
    cache: Mutex<Option<(String, Instant, Vec<String>)>>,
}

impl ShellHelper {
    fn remote_files(&self) -> Vec<String> {
        let Some(peer) = self.peer.lock().ok().and_then(|p| p.clone()) else {
            return Vec::new();
        };
        if let Ok(cache) = self.cache.lock()
            && let Some((p, at, names)) = cache.as_ref()
            && *p == peer
            && at.elapsed() < Duration::from_secs(5)
        {
            return names.clone();
        }
        let names = crate::session::remote_files(&peer, &self.shared.identity.credentials());
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((peer, Instant::now(), names.clone()));
        }
        names
    }

    fn local_files(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.shared.folder.walk(|e| {
            if e.kind == Kind::File {
                v.push(e.name)
            }
        });
        v
    }
}

/// The word under the cursor: where it starts, its text without quotes,
/// and how many words come before it.
fn current_word(before: &str) -> (usize, String, usize) {
    let mut words = 0;
    let mut start = None;
    let mut quote: Option<char> = None;
    let mut text = String::new();
    for (i, c) in before.char_indices() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if start.take().is_some() {
                    words += 1;
                    text.clear();
                }
            }
            (None, '"' | '\'') => {
                start.get_or_insert(i);
                quote = Some(c);
            }
            (Some(q), c) if c == q => quote = None,
            (_, c) => {
                start.get_or_insert(i);
                text.push(c);
            }
        }
    }
    (start.unwrap_or(before.len()), text, words)
}

fn quote_if_needed(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || "'\"\\$`#;&|<>()*?".contains(c))
    {
        shell_words::quote(s).into_owned()
    } else {
        s.to_string()
    }
}

/// The candidates that start with `partial`, sorted, each quoted as needed.
/// Names with control characters are left out: the line editor would show
/// them raw, and no quoting lets one type them back.
fn completions(candidates: Vec<String>, partial: &str) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = candidates
        .into_iter()
        .filter(|c| c.starts_with(partial) && !has_control(c))
        .map(|c| Pair {
            replacement: quote_if_needed(&c),
            display: c,
        })
        .collect();
    pairs.sort_by(|a, b| a.display.cmp(&b.display));
    pairs.dedup_by(|a, b| a.display == b.display);
    pairs
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, partial, nth) = current_word(before);
        let words = shell_words::split(before).unwrap_or_default();
        let first = words.first().map(String::as_str).unwrap_or("");
        let second = words.get(1).map(String::as_str).unwrap_or("");
        let words_of = |ws: &[&str]| ws.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let candidates: Vec<String> = match (nth, first) {
            (0, _) => words_of(COMMANDS),
            (1, "index") => words_of(&["longlist", "shortlist", "regex"]),
            (1, "hash") => words_of(&["verify", "checkall"]),
            (1, "download") => words_of(&["TCP", "UDP"]),
            (1, "peer") => words_of(&["use", "forget"]),
            (1, "sync") => words_of(&["status", "confirm"]),
            (1, "help") => words_of(COMMANDS),
            (1, "upload") => {
                let mut v = self.local_files();
                v.push("--force".into());
                v
            }
            (2, "upload") if second == "--force" => self.local_files(),
            (2, "hash") if second == "verify" => self.remote_files(),
            (2, "download") => self.remote_files(),
            // Peers found on the LAN: by id (and address), and the flags'.
            (2, "peer") if second == "use" => {
                let mut v: Vec<String> = (self.shared.discovered().iter())
                    .flat_map(|f| [f.id.to_string(), f.addr.to_string()])
                    .collect();
                v.extend(self.shared.config.peers.iter().cloned());
                v
            }
            _ => Vec::new(),
        };
        Ok((start, completions(candidates, &partial)))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// The interactive loop; returns the exit status.
pub fn run_interactive(session: &mut Session, signals: &SignalWatch) -> i32 {
    let config = Config::builder()
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .max_history_size(2000)
        .map(|b| b.build())
        .unwrap_or_default();
    let mut rl: Editor<ShellHelper, FileHistory> = match Editor::with_config(config) {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return 1;
        }
    };
    let current = Arc::new(Mutex::new(session.current_address().map(String::from)));
    rl.set_helper(Some(ShellHelper {
        shared: session.shared().clone(),
        peer: current.clone(),
        cache: Mutex::new(None),
    }));
    let history_path = session.shared().private_dir().join("shell_history");
    let _ = rl.load_history(&history_path);

    // Server messages go through the external printer, above the prompt.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let printer_thread = rl.create_external_printer().ok().map(|mut printer| {
        let events = session.shared().events.receiver();
        std::thread::Builder::new()
            .name("shell-printer".into())
            .spawn(move || {
                loop {
                    crossbeam_channel::select! {
                        recv(events) -> msg => match msg {
                            Ok(ev) => { let _ = printer.print(event_line(&ev)); }
                            Err(_) => break,
                        },
                        recv(stop_rx) -> _ => break,
                    }
                }
            })
    });

    println!("dropbox-shell: type `help` for commands, Ctrl-D to leave");
    let mut status = 0;
    loop {
        let prompt = format!(
            "dropbox-shell {}> ",
            session.current_address().unwrap_or("(no peer)")
        );
        match rl.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                    let _ = rl.save_history(&history_path);
                }
                let line = match confirmed(&mut rl, line) {
                    Some(line) => line,
                    None => continue,
                };
                let (ok, exit) = run_line(
                    session,
                    &line,
                    false,
                    signals,
                    std::io::stdout().is_terminal(),
                );
                status = if ok { 0 } else { 1 };
                if let Ok(mut p) = current.lock() {
                    *p = session.current_address().map(String::from);
                }
                if exit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                status = 1;
                break;
            }
        }
    }
    let _ = rl.save_history(&history_path);
    drop(stop_tx);
    if let Some(Ok(t)) = printer_thread {
        let _ = t.join();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_under_the_cursor() {
        assert_eq!(current_word("dow"), (0, "dow".into(), 0));
        assert_eq!(current_word("download TCP "), (13, "".into(), 2));
        assert_eq!(current_word("download TCP \"my f"), (13, "my f".into(), 2));
        assert_eq!(current_word("hash verify a/b"), (12, "a/b".into(), 2));
    }

    #[test]
    fn events_and_errors_reach_the_terminal_escaped() {
        use crate::events::{Event, EventSource};
        let hostile = "served download x\u{1b}]2;PWNED\u{7}\u{1b}[2J to p: error: no such file";
        let ev = Event {
            source: EventSource::Server,
            text: hostile.into(),
        };
        assert_eq!(
            event_line(&ev),
            r"[server] served download x\e]2;PWNED\x07\e[2J to p: error: no such file"
        );
        let e = crate::Error::new("no such file: a\nb\u{9b}");
        assert_eq!(error_line(&e), r"error: no such file: a\nb\u{9b}");
    }

    #[test]
    fn completion_offers_no_name_with_control_characters() {
        let names = ["my file.txt", "my\u{1b}]2;PWNED\u{7}", "my\nrow", "other"];
        let pairs = completions(names.iter().map(|s| s.to_string()).collect(), "my");
        let shown: Vec<&str> = pairs.iter().map(|p| p.display.as_str()).collect();
        assert_eq!(shown, ["my file.txt"]);
        assert_eq!(pairs[0].replacement, "'my file.txt'");
    }

    #[test]
    fn names_with_spaces_are_quoted() {
        assert_eq!(quote_if_needed("a.txt"), "a.txt");
        assert_eq!(quote_if_needed("my file.txt"), "'my file.txt'");
    }
}
