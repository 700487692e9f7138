//! Where and when an exported conversation happens: the addresses and ports its
//! packets carry, and the wall-clock time its log's clock started.
//!
//! A log holds neither; the run index does. For a log `<root>_N` the index is
//! `<root>_index.jsonl`, and the log's entry is the one with connection number N
//! and the same file name (the directory may have moved since). The entry gives
//! the real client and upstream addresses, and the run's wall-clock start:
//! `start_unix_us - start_us`, the Unix time at which the log's clock read zero.
//!
//! Without an index entry a log gets placeholders: client 10.0.0.1 on port
//! 49152 + its position on the command line (so the logs of one export stay
//! separate TCP streams), server 10.0.0.2 port 40000 (no Wireshark dissector claims
//! it), and times counted from 2000-01-01 00:00:00 UTC ([`PLACEHOLDER_EPOCH_US`]).
//! `--server-port` replaces the server port either way.
//!
//! Finding the entry and the start of its run is [`crate::runs`]'s: the logs of
//! one run share one start, so packets of different logs keep the order of the
//! log clock, and the logs of different runs (an index that a restarted recorder
//! appended to) are placed at their own runs' times.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::escape;
use crate::runs::{Found, Runs};

/// Packet times of a log without an index entry count from 2000-01-01 00:00:00 UTC,
/// an obviously made-up date.
pub const PLACEHOLDER_EPOCH_US: u64 = 946_684_800_000_000;

/// The placeholder client address.
pub const PLACEHOLDER_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The placeholder server address.
pub const PLACEHOLDER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// The placeholder server port: one no Wireshark dissector claims, so the payload
/// shows as plain data until `--server-port` or Wireshark's "Decode As" says more.
pub const PLACEHOLDER_SERVER_PORT: u16 = 40_000;

/// The placeholder client port of the first log; the next ones count up.
const FIRST_CLIENT_PORT: u16 = 49_152;

/// The two ends of a conversation, in one IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl Endpoints {
    /// Puts both addresses in one family, as packets need: IPv4-mapped IPv6
    /// addresses become IPv4, and if one end is still IPv6 the other is mapped into
    /// IPv6 (a proxy listening on `::1` may forward to an IPv4 server).
    pub fn new(client: SocketAddr, server: SocketAddr) -> Endpoints {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (client, server) = (canonical(client), canonical(server));
        let v6 = |a: SocketAddr| match a.ip() {
            IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        if client.is_ipv4() == server.is_ipv4() {
            Endpoints { client, server }
        } else {
            Endpoints {
                client: v6(client),
                server: v6(server),
            }
        }
    }

    /// Whether the packets are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }
}

/// Where and when one log's conversation is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub endpoints: Endpoints,
    /// The Unix time, in microseconds, at which the log's clock read zero: a
    /// record's packet time is this plus the record's time.
    pub epoch_us: u64,
}

/// Places logs, reading each run index once.
#[derive(Debug)]
pub struct Placer {
    server_port: Option<u16>,
    runs: Runs,
    /// The indexes whose absence has been noted.
    noted: HashSet<PathBuf>,
}

impl Placer {
    /// A placer that puts `server_port`, when given, on every server.
    pub fn new(server_port: Option<u16>) -> Placer {
        Placer {
            server_port,
            runs: Runs::new(),
            noted: HashSet::new(),
        }
    }

    /// Places the log at `log`, given as the `position`th (from 0) of the export.
    /// Reasons for falling back to placeholders go to `note`, once per index.
    pub fn place(&mut self, log: &Path, position: usize, note: &mut dyn FnMut(String)) -> Placement {
        let client_port = FIRST_CLIENT_PORT + (position % usize::from(u16::MAX - FIRST_CLIENT_PORT + 1)) as u16;
        let mut placement = Placement {
            endpoints: Endpoints::new(
                SocketAddr::new(PLACEHOLDER_CLIENT.into(), client_port),
                SocketAddr::new(PLACEHOLDER_SERVER.into(), PLACEHOLDER_SERVER_PORT),
            ),
            epoch_us: PLACEHOLDER_EPOCH_US,
        };
        let placeholders = "placeholder addresses and times from 2000-01-01 UTC";
        match self.runs.find(log, note) {
            Found::NotNamed => note(format!(
                "{} is not named <root>_<N>, so it has no run index: {placeholders}",
                escape::path(log)
            )),
            Found::Missing { index } => {
                if self.noted.insert(index.to_path_buf()) {
                    note(format!(
                        "no run index {}: its logs get placeholder addresses and times from 2000-01-01 UTC",
                        escape::path(index)
                    ));
                }
            }
            Found::Unreadable { index, error } => {
                if self.noted.insert(index.to_path_buf()) {
                    note(format!("ignoring run index {}: {error}", escape::path(index)));
                }
            }
            Found::Entry { entry, epoch_us } => {
                // A connection that reached no server keeps the port it was for,
                // so it is dissected with its service.
                let mut server = placement.endpoints.server;
                if let Some(port) = entry.upstream_name.as_deref().and_then(name_port) {
                    server.set_port(port);
                }
                let server = entry.upstream.unwrap_or(server);
                placement.endpoints = Endpoints::new(entry.client, server);
                placement.epoch_us = epoch_us;
            }
            Found::NoEntry { index, starts } => {
                // A connection still open has no entry yet; if the index holds
                // one run, that run is surely this log's too.
                let times = if let [start] = starts {
                    placement.epoch_us = *start;
                    "the run's times"
                } else {
                    "times from 2000-01-01 UTC"
                };
                note(format!(
                    "no entry for {} in {} (is the connection still open?): placeholder addresses and {times}",
                    escape::path(log),
                    escape::path(index)
                ));
            }
        }
        if let Some(port) = self.server_port {
            placement.endpoints.server.set_port(port);
        }
        placement
    }
}

/// The port of a server named `host:port` or `[v6]:port`.
fn name_port(name: &str) -> Option<u16> {
    name.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::write_test_index;

    fn place(placer: &mut Placer, log: &Path, position: usize) -> (Placement, Vec<String>) {
        let mut notes = Vec::new();
        let placement = placer.place(log, position, &mut |n| notes.push(n));
        (placement, notes)
    }

    #[test]
    fn entries_give_addresses_and_one_start_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        // Two connections of one run (starts 3 µs apart), one of a later run.
        write_test_index(&root);
        let mut placer = Placer::new(None);
        let (one, notes) = place(&mut placer, &root.with_file_name("rec_1"), 0);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(one.endpoints.client, "127.0.0.1:50312".parse().unwrap());
        assert_eq!(one.endpoints.server, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(one.epoch_us, 5_000_000);
        let (two, _) = place(&mut placer, &root.with_file_name("rec_2"), 1);
        assert_eq!(two.epoch_us, 5_000_000);
        // Matched by number and file name, although the directory differs.
        let (three, _) = place(&mut placer, &root.with_file_name("rec_3"), 2);
        assert_eq!(three.epoch_us, 9_000_000);
        // No entry (still open) in an index of two runs: placeholders.
        let (four, notes) = place(&mut placer, &root.with_file_name("rec_4"), 3);
        assert_eq!(four.epoch_us, PLACEHOLDER_EPOCH_US);
        assert_eq!(four.endpoints.client, "10.0.0.1:49155".parse().unwrap());
        assert!(notes[0].contains("no entry for"), "{notes:?}");
    }

    #[test]
    fn without_an_index_logs_get_distinct_placeholders_and_the_port_override() {
        let dir = tempfile::tempdir().unwrap();
        let mut placer = Placer::new(Some(6379));
        let (a, notes) = place(&mut placer, &dir.path().join("rec_1"), 0);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("no run index"), "{notes:?}");
        let (b, notes) = place(&mut placer, &dir.path().join("rec_2"), 1);
        assert!(notes.is_empty(), "one note per index: {notes:?}");
        assert_eq!(a.endpoints.client, "10.0.0.1:49152".parse().unwrap());
        assert_eq!(b.endpoints.client, "10.0.0.1:49153".parse().unwrap());
        assert_eq!(a.endpoints.server, "10.0.0.2:6379".parse().unwrap());
        assert_eq!(a.epoch_us, PLACEHOLDER_EPOCH_US);
    }

    #[test]
    fn mixed_families_become_ipv6_and_mapped_addresses_ipv4() {
        let e = Endpoints::new("[::1]:5000".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(e.server, "[::ffff:127.0.0.1]:80".parse().unwrap());
        assert!(e.is_ipv6());
        let e = Endpoints::new(
            "[::ffff:10.1.2.3]:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(e.client, "10.1.2.3:5000".parse().unwrap());
        assert!(!e.is_ipv6());
    }
}
