//! dropbox-shell: every process is a peer that shares a folder and talks to
//! other peers.
//!
//! The crate is layered; each layer imports only from the ones below it
//! (`tests/layering.rs` checks that no module imports one that imports it
//! back):
//!
//! ```text
//! 6 main.rs                                 flags -> a running peer
//! 5 shell, session, render, signals         the user's side: commands, tables, JSON
//! 4 peer                                    assembles one peer (or a client only)
//! 3 server (tcp, conn, handlers, udp), sync (engine, scan, exchange, db, local, remote, control, ...)
//! 2 client, transfer::driver, stream        requests, a UDP download, a file's bytes
//! 1 folder, history, identity, events       the disk, the log, the key pair, notes for the shell
//! 0 error, names, limits, display, timestamp, proto, cli, secure (keys and ids),
//!   transfer (wire, machines, sim), sync::plan/guard/stuck/schedule/dirty   pure: values in, values out
//! ```
//!
//! A part is given the narrow context it needs, never the whole peer: the
//! server a [`server::ServerContext`] (folder, history, events, settings, the
//! id, a [`server::SyncAnswer`]), the UDP loop a [`server::udp::ServeContext`],
//! the sync engine a [`sync::SyncContext`]. The transfer machines
//! ([`transfer::sender::FileSender`], [`transfer::receiver::FileReceiver`])
//! speak datagrams and never touch a socket or the clock, so the driver, the
//! UDP server and the simulated [`transfer::sim::Pair`] share one conversion.

pub mod cli;
pub mod client;
pub mod deposit;
pub mod discovery;
pub mod display;
pub mod error;
pub mod events;
pub mod folder;
pub mod history;
pub mod identity;
pub mod limits;
pub mod names;
pub mod peer;
pub mod placement;
pub mod proto;
pub mod relay;
pub mod render;
pub mod secure;
pub mod server;
pub mod session;
pub mod shell;
pub mod signals;
pub mod store;
pub mod stream;
pub mod sync;
pub mod timestamp;
pub mod transfer;

pub use error::{Context, Error, ErrorKind, Result};
