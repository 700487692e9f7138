//! netrecord: a TCP proxy that records every connection it forwards.
//!
//! The binary listens on a port (one per forward), forwards each accepted
//! connection to its forward's server, and writes both directions, with
//! timestamps, into a log file per connection.
//! Readers of those logs (show, check, pcap export, replay) live in the same crate.
//!
//! Modules, in the order data flows through them:
//!
//! - [`cli`]: the command line (the original four positionals, and subcommands).
//! - [`proxy`]: the recorder: startup checks and the accept loop (`mod.rs`), one
//!   connection's life and shared state (`connection.rs`: its log behind a mutex,
//!   how each side ended, byte counts), one direction of a connection (`relay.rs`:
//!   recv, record, send; half-close and teardown), the size limits
//!   (`limits.rs`), and the reusable blocking threads that run connections
//!   (`threads.rs`).
//! - `peer`: a peer's plaintext stream, what the relay needs from one side of a
//!   connection (receive, send, hang up, abort with a reset), on plain TCP.
//! - `tls`: TLS on either leg or both (`--tls-listen`, `--tls-upstream`): the
//!   handshakes, netrecord's CA, and a peer's plaintext stream over rustls.
//! - [`log`]: the log format (its spec is the module doc), the writer and the
//!   streaming reader.
//! - [`index`]: the run index `<root>_index.jsonl`, one JSON line per connection.
//! - [`runs`]: which run a log belongs to and when its clock started, from the
//!   index, so that readers can order logs of different runs.
//! - [`show`], [`check`], [`pcap`], [`replay`]: the subcommands that read logs.
//! - [`net`]: resolving a server's name, connecting to the first address that
//!   answers, binding, and a listener another thread can stop.
//! - [`escape`]: bytes from logs and file names made safe to print.
//! - [`watch`]: waiting for files to change (inotify), for `show --follow`.
//! - [`process`]: the open-files limit, stop signals, and the one channel for
//!   `netrecord:` messages.
//! - [`generate`]: the man page and shell completions.
//! - [`demo`]: `make demo`, a recording of a short exchange on loopback.

pub mod check;
pub mod cli;
pub mod demo;
pub mod escape;
pub mod generate;
pub mod index;
pub mod log;
pub mod net;
pub mod pcap;
mod peer;
pub mod process;
pub mod proxy;
pub mod replay;
pub mod runs;
pub mod show;
mod tls;
pub mod watch;
