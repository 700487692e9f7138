//! `netrecord replay-server` and `netrecord replay-client`: play one side of a
//! recorded connection against a live peer, and check the peer against the other
//! side of the recording.
//!
//! Data flow: [`script`] reads each log once, up front, into the steps of the side
//! we play (send these bytes, hang up, reset), each tied to how far the peer had got
//! before it in the recording, and the peer's recorded stream, cut into segments
//! (a request, a reply) and masked by [`mask`]. [`session`] plays a script on one
//! connection with two threads, a writer for our steps and a reader that feeds
//! the peer's stream to a [`compare`] comparer, which judges it against the
//! recording segment by segment and says how far the peer has got; [`mismatch`]
//! describes each place they part. [`server`] listens and plays the recorded
//! server to each client in turn, from the log [`choose`] picks when it serves a
//! whole run; [`client`] connects and plays the recorded client, log by log.

mod choose;
mod client;
mod compare;
mod mask;
mod mismatch;
mod script;
mod server;
mod session;

pub use client::run as run_client;
pub use mask::Mask;
pub use server::run as run_server;

/// A count and its noun, in the singular for one and the plural otherwise:
/// `1 byte`, `0 bytes`, `2 whole records`. Every noun replay counts takes an -s.
fn count(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {noun}{s}")
}

/// What the live peer sent against what the recording has, `noun` naming the
/// bytes: `received 27 bytes` when the two agree, `received 24 of 27 bytes` when
/// it sent fewer (or the replay stopped early), `client sent 29 bytes, recording
/// has 27` when it sent more.
fn tally(peer: &str, noun: &str, received: u64, recorded: u64) -> String {
    if received == recorded {
        format!("received {}", count(received, noun))
    } else if received < recorded {
        format!("received {received} of {}", count(recorded, noun))
    } else {
        format!("{peer} sent {}, recording has {recorded}", count(received, "byte"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(super::count(1, "whole record"), "1 whole record");
        assert_eq!(super::count(0, "byte"), "0 bytes");
        assert_eq!(super::count(27, "byte"), "27 bytes");
        assert_eq!(super::tally("client", "byte", 1, 1), "received 1 byte");
        assert_eq!(super::tally("client", "byte", 24, 27), "received 24 of 27 bytes");
        assert_eq!(
            super::tally("client", "byte", 29, 27),
            "client sent 29 bytes, recording has 27"
        );
    }
}
