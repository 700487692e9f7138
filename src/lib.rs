//! netrecord: a TCP proxy that records every connection it forwards.
//!
//! The binary listens on a port, forwards each accepted connection to one server,
//! and writes both directions, with timestamps, into a log file per connection.
//! Readers of those logs (show, check, pcap export, replay) live in the same crate.
//!
//! Modules, in the order data flows through them:
//!
//! - [`cli`]: the command line (the original four positionals, and subcommands).
//! - [`proxy`]: startup checks, the listener and accept loop, per-connection setup,
//!   signals and shutdown.
//! - [`conn`]: one connection's shared state: its log behind a mutex, how each side
//!   ended, byte counts.
//! - [`threads`]: the reusable blocking threads that run connections.
//! - [`relay`]: one direction of a connection: recv, record, send; half-close and
//!   teardown.
//! - [`log`]: the log format (its spec is the module doc), the writer and the
//!   streaming reader.
//! - [`index`]: the run index `<root>_index.jsonl`, one JSON line per connection.
//! - [`show`], [`check`], [`pcap`], [`replay`]: the subcommands that read logs.
//! - [`net`]: resolving a server's name and connecting to the first address that answers.
//! - [`process`]: the open-files limit and stop signals.
//! - [`generate`]: the man page and shell completions.
//! - [`demo`]: `make demo`, a recording of a short exchange on loopback.

pub mod check;
pub mod cli;
pub mod conn;
pub mod demo;
pub mod generate;
pub mod index;
pub mod log;
pub mod net;
pub mod pcap;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod replay;
pub mod show;
pub mod threads;
