//! dropbox-shell: every process is a peer that shares a folder and talks to
//! other peers.
//!
//! The crate is split the way the data flows. Pure parts take values and
//! return values: [`names`] (safe relative names), [`timestamp`] (the time
//! forms `index shortlist` accepts), [`cli`] (a shell line to a [`cli::Command`]),
//! [`proto`] (TCP messages and framing), [`transfer`] (the UDP sender and
//! receiver state machines), [`display`] (control characters made visible
//! for the terminal), [`limits`] (what a peer can make us spend, and the
//! budget connections share). I/O parts drive them: [`folder`] (the shared
//! folder on disk: only regular files opened, MD5 cache, temp-then-rename
//! writes), [`identity`] (the peer id, tied to its folder), [`server`] (TCP
//! and UDP listeners), [`client`] (requests to a peer), [`history`] (request
//! log), [`peer`] (one running peer, or a client only), [`session`]
//! (commands run against peers), [`render`] (tables and JSON), [`shell`]
//! (the interactive loop) and [`sync`] (two-way folder sync: a pure plan, a
//! database, an actor, a local control socket).

pub mod cli;
pub mod client;
pub mod display;
pub mod error;
pub mod events;
pub mod folder;
pub mod history;
pub mod identity;
pub mod limits;
pub mod names;
pub mod peer;
pub mod proto;
pub mod relay;
pub mod render;
pub mod server;
pub mod session;
pub mod shell;
pub mod signals;
pub mod stream;
pub mod sync;
pub mod timestamp;
pub mod transfer;

pub use error::{Context, Error, ErrorKind, Result};
