//! The TCP bookkeeping of an exported conversation: which segments, with which
//! sequence and acknowledgement numbers, stand for each record of a log.
//!
//! A log holds only what each side sent and when; TCP needs a handshake, numbers
//! that count every byte in both directions, and acknowledgements. [`Tcp`] turns
//! records into [`Segment`]s, one record at a time, and knows nothing of addresses
//! or packet bytes: [`super::conversation`] puts the segments into IP packets.
//!
//! What each record becomes:
//!
//! - `c con`: the client's SYN. The server's SYN-ACK and the client's ACK follow at
//!   the same time, once the next record shows that the server was reached.
//! - `s err` right after `con` (netrecord could not connect to the server): the SYN
//!   is answered by a RST at the time of the `err`.
//! - data: segments of at most one MSS, PSH on the last one; the receiver ACKs every
//!   second segment and the last, as a delayed-ACK stack would, so the bytes in
//!   flight never exceed the advertised window and Wireshark sees a tidy transfer.
//! - `hup`: a FIN from that side, ACKed by the other.
//! - `err`: a RST from the side whose connection failed; nothing follows.
//!
//! Every segment of a record carries the record's time: the log has no finer
//! timing to offer.

use std::fmt;
use std::ops::{BitOr, Range};

use crate::log::{Event, Micros, Side};

/// The client's initial sequence number. Any value works (Wireshark shows numbers
/// relative to it); a fixed one makes exports reproducible.
pub const CLIENT_ISN: u32 = 0x1000_0000;

/// The server's initial sequence number.
pub const SERVER_ISN: u32 = 0x2000_0000;

/// TCP header flags, as the bits they are on the wire.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);

    /// Whether every flag of `other` is set here.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// Lists the flags set, as tcpdump names them: `SYN|ACK`.
impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
            (Flags::PSH, "PSH"),
            (Flags::ACK, "ACK"),
        ];
        let set: Vec<_> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{}", set.join("|"))
    }
}

/// One TCP segment to put into a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// When it was sent: the time of the record it stands for.
    pub time: Micros,
    /// The side that sent it.
    pub from: Side,
    pub seq: u32,
    /// The acknowledgement number; zero when `flags` has no ACK.
    pub ack: u32,
    pub flags: Flags,
    /// The bytes of the record's payload that the segment carries.
    pub payload: Range<usize>,
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No `con` yet.
    Idle,
    /// The client's SYN is out; whether the server answers depends on the next record.
    SynSent { at: Micros },
    /// The handshake is done.
    Established,
    /// A RST ended the connection.
    Reset,
}

/// The sequence-number state of one conversation.
#[derive(Debug)]
pub struct Tcp {
    /// The largest payload of one segment.
    mss: usize,
    /// The next sequence number each side sends, indexed by [`Side::index`]: also
    /// what the other side acknowledges once it has seen everything.
    next: [u32; 2],
    phase: Phase,
    /// Segments sent so far for the payload of the current data record: the
    /// receiver ACKs every second one.
    segments_in_record: u64,
}

impl Tcp {
    /// A conversation whose segments carry at most `mss` payload bytes.
    pub fn new(mss: usize) -> Tcp {
        assert!(mss > 0, "a segment must be able to carry a byte");
        Tcp {
            mss,
            next: [CLIENT_ISN, SERVER_ISN],
            phase: Phase::Idle,
            segments_in_record: 0,
        }
    }

    /// Appends to `out` the segments that stand for one record.
    pub fn record(&mut self, side: Side, time: Micros, event: Event, out: &mut Vec<Segment>) {
        match event {
            Event::Con => {
                self.send(out, time, Side::Client, Flags::SYN, 0..0);
                self.phase = Phase::SynSent { at: time };
            }
            Event::Err if side == Side::Server && matches!(self.phase, Phase::SynSent { .. }) => {
                // The server refused or never answered. A RST answering a SYN
                // takes its sequence number from the SYN's ACK field, which a SYN
                // does not have: zero, acknowledging the SYN.
                out.push(Segment {
                    time,
                    from: Side::Server,
                    seq: 0,
                    ack: self.next[Side::Client.index()],
                    flags: Flags::RST | Flags::ACK,
                    payload: 0..0,
                });
                self.phase = Phase::Reset;
            }
            Event::Data(_) => {
                // The payload's segments come from [`Tcp::data`], piece by piece.
                self.establish(out);
                self.segments_in_record = 0;
            }
            Event::Hup => {
                self.establish(out);
                self.send(out, time, side, Flags::FIN | Flags::ACK, 0..0);
                self.send(out, time, side.other(), Flags::ACK, 0..0);
            }
            Event::Err => {
                self.establish(out);
                self.send(out, time, side, Flags::RST | Flags::ACK, 0..0);
                self.phase = Phase::Reset;
            }
        }
    }

    /// Appends what the end of the log implies: a SYN still unanswered when the log
    /// ends was accepted (the client's connection to netrecord was up), so the
    /// handshake completes. No FIN is made up for a connection the log leaves open.
    pub fn finish(&mut self, out: &mut Vec<Segment>) {
        self.establish(out);
    }

    /// Completes a pending handshake, at the time of the SYN.
    fn establish(&mut self, out: &mut Vec<Segment>) {
        if let Phase::SynSent { at } = self.phase {
            self.send(out, at, Side::Server, Flags::SYN | Flags::ACK, 0..0);
            self.send(out, at, Side::Client, Flags::ACK, 0..0);
            self.phase = Phase::Established;
        }
    }

    /// Appends the segments of the next `len` bytes of the payload of the data
    /// record just recorded, with the receiver's ACKs; segment payload ranges
    /// count from the start of this piece. A payload can come in several pieces,
    /// each a whole number of segments long but the `last`, and gives the same
    /// segments as in one piece: the pieces let an export hold only a piece of a
    /// large record at a time.
    pub fn data(&mut self, out: &mut Vec<Segment>, side: Side, time: Micros, len: usize, last: bool) {
        let mut start = 0;
        while start < len {
            let end = len.min(start + self.mss);
            let final_segment = last && end == len;
            let flags = if final_segment {
                Flags::ACK | Flags::PSH
            } else {
                Flags::ACK
            };
            self.send(out, time, side, flags, start..end);
            self.segments_in_record += 1;
            if final_segment || self.segments_in_record.is_multiple_of(2) {
                self.send(out, time, side.other(), Flags::ACK, 0..0);
            }
            start = end;
        }
    }

    /// The largest payload of one segment.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Appends one segment from `from`, acknowledging all the other side has sent,
    /// and advances `from`'s sequence number by what the segment occupies.
    fn send(&mut self, out: &mut Vec<Segment>, time: Micros, from: Side, flags: Flags, payload: Range<usize>) {
        let me = from.index();
        let seq = self.next[me];
        let ack = if flags.contains(Flags::ACK) {
            self.next[from.other().index()]
        } else {
            0
        };
        // SYN and FIN each take one sequence number, as if they were a byte.
        let syn_fin = u32::from(flags.contains(Flags::SYN)) + u32::from(flags.contains(Flags::FIN));
        self.next[me] = seq.wrapping_add(payload.len() as u32).wrapping_add(syn_fin);
        out.push(Segment {
            time,
            from,
            seq,
            ack,
            flags,
            payload,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `records` through a [`Tcp`] and lists the segments compactly, with
    /// sequence and acknowledgement numbers relative to each side's ISN (as
    /// Wireshark shows them), e.g. `c SYN 0/0 0`.
    fn segments(mss: usize, records: &[(Side, u64, Event)]) -> Vec<String> {
        let mut tcp = Tcp::new(mss);
        let mut out = Vec::new();
        for &(side, time, event) in records {
            tcp.record(side, Micros(time), event, &mut out);
            if let Data(len) = event {
                tcp.data(&mut out, side, Micros(time), len, true);
            }
        }
        tcp.finish(&mut out);
        let isn = |side: Side| if side == Side::Client { CLIENT_ISN } else { SERVER_ISN };
        out.iter()
            .map(|s| {
                let seq = if s.flags.contains(Flags::RST) && s.seq == 0 {
                    0
                } else {
                    s.seq.wrapping_sub(isn(s.from))
                };
                let ack = if s.flags.contains(Flags::ACK) {
                    s.ack.wrapping_sub(isn(s.from.other()))
                } else {
                    0
                };
                format!(
                    "{} {} {:?} {seq}/{ack} {}..{}",
                    s.time.0,
                    s.from.letter(),
                    s.flags,
                    s.payload.start,
                    s.payload.end
                )
            })
            .collect()
    }

    use Event::*;
    use Side::{Client as C, Server as S};

    #[test]
    fn an_exchange_counts_every_byte_syn_and_fin_in_both_directions() {
        let got = segments(
            1460,
            &[
                (C, 10, Con),
                (C, 20, Data(6)),
                (S, 30, Data(7)),
                (C, 40, Hup),
                (S, 50, Hup),
            ],
        );
        assert_eq!(
            got,
            [
                "10 c SYN 0/0 0..0",
                "10 s SYN|ACK 0/1 0..0",
                "10 c ACK 1/1 0..0",
                "20 c PSH|ACK 1/1 0..6",
                "20 s ACK 1/7 0..0",
                "30 s PSH|ACK 1/7 0..7",
                "30 c ACK 7/8 0..0",
                "40 c FIN|ACK 7/8 0..0",
                "40 s ACK 8/8 0..0",
                "50 s FIN|ACK 8/8 0..0",
                "50 c ACK 8/9 0..0",
            ]
        );
    }

    #[test]
    fn a_record_larger_than_the_mss_is_split_and_acked_every_second_segment() {
        let got = segments(4, &[(C, 1, Con), (S, 2, Data(11))]);
        assert_eq!(
            got,
            [
                "1 c SYN 0/0 0..0",
                "1 s SYN|ACK 0/1 0..0",
                "1 c ACK 1/1 0..0",
                "2 s ACK 1/1 0..4",
                "2 s ACK 5/1 4..8",
                "2 c ACK 1/9 0..0",
                "2 s PSH|ACK 9/1 8..11",
                "2 c ACK 1/12 0..0",
            ]
        );
    }

    #[test]
    fn a_failed_connect_is_a_syn_answered_by_rst() {
        assert_eq!(
            segments(1460, &[(C, 5, Con), (S, 900, Err)]),
            ["5 c SYN 0/0 0..0", "900 s RST|ACK 0/1 0..0"]
        );
    }

    #[test]
    fn an_error_later_is_a_rst_from_the_failing_side() {
        assert_eq!(
            segments(1460, &[(C, 1, Con), (C, 2, Data(3)), (C, 3, Err)]),
            [
                "1 c SYN 0/0 0..0",
                "1 s SYN|ACK 0/1 0..0",
                "1 c ACK 1/1 0..0",
                "2 c PSH|ACK 1/1 0..3",
                "2 s ACK 1/4 0..0",
                "3 c RST|ACK 4/1 0..0",
            ]
        );
    }

    #[test]
    fn an_open_log_gets_its_handshake_but_no_fin() {
        assert_eq!(
            segments(1460, &[(C, 7, Con)]),
            ["7 c SYN 0/0 0..0", "7 s SYN|ACK 0/1 0..0", "7 c ACK 1/1 0..0"]
        );
        assert!(segments(1460, &[]).is_empty());
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut tcp = Tcp::new(1 << 20);
        let mut out = Vec::new();
        tcp.record(C, Micros(0), Con, &mut out);
        tcp.next[C.index()] = u32::MAX - 1;
        tcp.record(C, Micros(1), Data(5), &mut out);
        tcp.data(&mut out, C, Micros(1), 5, true);
        let acks: Vec<_> = out.iter().filter(|s| s.from == S).map(|s| s.ack).collect();
        assert_eq!(acks.last(), Some(&3));
    }

    #[test]
    fn a_payload_in_pieces_of_whole_segments_gives_the_same_segments() {
        let whole = {
            let mut tcp = Tcp::new(4);
            let mut out = Vec::new();
            tcp.record(C, Micros(1), Con, &mut out);
            tcp.record(S, Micros(2), Data(23), &mut out);
            tcp.data(&mut out, S, Micros(2), 23, true);
            out
        };
        for piece in [4, 8, 12, 20] {
            let mut tcp = Tcp::new(4);
            let mut out = Vec::new();
            tcp.record(C, Micros(1), Con, &mut out);
            tcp.record(S, Micros(2), Data(23), &mut out);
            let mut start = 0;
            while start < 23 {
                let len = piece.min(23 - start);
                let from = out.len();
                tcp.data(&mut out, S, Micros(2), len, start + len == 23);
                // Ranges count from the piece: shift them back to the payload's.
                for s in &mut out[from..] {
                    if !s.payload.is_empty() {
                        s.payload = s.payload.start + start..s.payload.end + start;
                    }
                }
                start += len;
            }
            assert_eq!(out, whole, "pieces of {piece}");
        }
    }
}
