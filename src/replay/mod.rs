//! `netrecord replay-server` and `netrecord replay-client`: play one side of a
//! recorded connection against a live peer, and check the peer against the other
//! side of the recording.
//!
//! Data flow: [`script`] reads the log once, up front, into the steps of the side
//! we play (send these bytes, hang up, reset), each tied to how far the peer had got
//! before it in the recording, and the peer's recorded stream. [`session`] plays
//! that on one socket with two threads, a writer for our steps and a reader that
//! compares the peer's stream with the recording; [`mismatch`] describes the first
//! place they part. [`server`] listens and plays the recorded server to each client
//! in turn; [`client`] connects and plays the recorded client.

mod client;
mod mismatch;
mod script;
mod server;
mod session;

pub use client::run as run_client;
pub use server::run as run_server;

/// A count and its noun, in the singular for one and the plural otherwise:
/// `1 byte`, `0 bytes`, `2 whole records`. Every noun replay counts takes an -s.
fn count(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {noun}{s}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(super::count(1, "whole record"), "1 whole record");
        assert_eq!(super::count(0, "byte"), "0 bytes");
        assert_eq!(super::count(27, "byte"), "27 bytes");
    }
}
