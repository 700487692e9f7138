//! One log as a stream of timed IP packets: the log reader feeds [`Tcp`], and each
//! segment it yields is built into an IPv4 or IPv6 packet, checksums included, by
//! etherparse.
//!
//! The stream holds the packets of one piece of one record's payload at a time
//! (about 64 KiB), so a log of any size, with records of any size, exports in a
//! few MiB. A log cut short or still open ends the stream
//! early but cleanly, with [`Conversation::ending`] saying so; a corrupt log is an
//! error.

use std::collections::VecDeque;
use std::io::Read;

use anyhow::Context;
use etherparse::{PacketBuilder, TcpHeader};

use super::placement::Placement;
use super::tcp::{Flags, Segment, Tcp};
use crate::log::{Event, Micros, ReadError, Reader, Record};

/// The IP packet size the segments are cut to fit: Ethernet's MTU, so the packets
/// look like ones that crossed a real network.
pub const MTU: usize = 1500;

/// The TTL or hop limit of every packet.
const TTL: u8 = 64;

/// How many full segments of payload are read and built at once: about 64 KiB.
const SEGMENTS_PER_PIECE: usize = 44;

/// The receive window every segment advertises. Receivers ACK at least every
/// second segment, so it is never full.
const WINDOW: u16 = 65_535;

/// A packet with the Unix time, in microseconds, at which it was sent.
#[derive(Debug)]
pub struct Packet {
    pub unix_us: u64,
    pub bytes: Vec<u8>,
}

/// How the log behind a conversation ended.
#[derive(Debug)]
pub enum Ending {
    /// Not read to its end yet.
    Reading,
    /// Both sides hung up, or one failed: the export shows the close or the reset.
    Closed,
    /// The log ends between records without a close: the connection was still open
    /// when it was read, or the recorder stopped without closing it.
    Open,
    /// The file ends inside a record; everything before it was exported.
    Truncated(ReadError),
}

/// One log's packets, in time order.
pub struct Conversation<R> {
    reader: Reader<R>,
    tcp: Tcp,
    placement: Placement,
    segments: Vec<Segment>,
    packets: VecDeque<Packet>,
    ending: Ending,
    /// Whether reading stopped at bytes that break the format.
    corrupt: bool,
    /// The data record whose payload is being read.
    in_payload: Option<Record>,
}

impl<R: Read> Conversation<R> {
    /// Exports the log read from `log`, placed at `placement`.
    pub fn new(log: R, placement: Placement) -> Conversation<R> {
        let ip_header = if placement.endpoints.is_ipv6() { 40 } else { 20 };
        Conversation {
            reader: Reader::new(log).keep_payload(false),
            tcp: Tcp::new(MTU - ip_header - TcpHeader::MIN_LEN),
            placement,
            segments: Vec::new(),
            packets: VecDeque::new(),
            ending: Ending::Reading,
            corrupt: false,
            in_payload: None,
        }
    }

    /// The next packet, or `None` after the last. A corrupt log or a failed read is
    /// an error; the caller names the file.
    pub fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        while self.packets.is_empty() && matches!(self.ending, Ending::Reading) {
            self.segments.clear();
            if let Some(record) = self.in_payload {
                self.next_piece(record)?;
                continue;
            }
            match self.reader.next_record() {
                Ok(Some(record)) => {
                    self.tcp
                        .record(record.side, record.time, record.event, &mut self.segments);
                    if let Event::Data(_) = record.event {
                        self.in_payload = Some(record);
                    }
                }
                Ok(None) => {
                    self.tcp.finish(&mut self.segments);
                    self.ending = if self.reader.summary().is_complete() {
                        Ending::Closed
                    } else {
                        Ending::Open
                    };
                }
                Err(e) => self.read_failed(e)?,
            }
            for segment in &self.segments {
                let packet = build(&self.placement, segment, &[])?;
                self.packets.push_back(packet);
            }
        }
        Ok(self.packets.pop_front())
    }

    /// Makes the packets of the next piece of `record`'s payload: a whole number
    /// of segments, so that a record of any size is held a piece at a time.
    fn next_piece(&mut self, record: Record) -> anyhow::Result<()> {
        let want = self.tcp.mss() * SEGMENTS_PER_PIECE;
        let len = match self.reader.payload_piece(want) {
            Ok(piece) => piece.len(),
            Err(e) => {
                self.in_payload = None;
                return self.read_failed(e);
            }
        };
        // A short piece is where the file ends: the record's last.
        let last = self.reader.payload_left() == 0 || len < want;
        let piece = self.reader.payload();
        if last {
            self.in_payload = None;
        }
        self.tcp.data(&mut self.segments, record.side, record.time, len, last);
        for segment in &self.segments {
            let packet = build(&self.placement, segment, &piece[segment.payload.clone()])?;
            self.packets.push_back(packet);
        }
        Ok(())
    }

    /// Ends the stream where the log is cut short; any other reading error is
    /// the export's.
    fn read_failed(&mut self, e: ReadError) -> anyhow::Result<()> {
        match e {
            ReadError::Truncated { .. } => {
                self.tcp.finish(&mut self.segments);
                self.ending = Ending::Truncated(e);
                Ok(())
            }
            e => {
                self.corrupt = true;
                Err(e.into())
            }
        }
    }

    /// How the log ended, once [`Conversation::next_packet`] has returned `None`.
    pub fn ending(&self) -> &Ending {
        &self.ending
    }

    /// Whether [`Conversation::next_packet`] failed because the log is corrupt
    /// (rather than because it cannot be exported).
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    /// The records read so far.
    pub fn records(&self) -> u64 {
        self.reader.summary().records
    }
}

/// Builds one segment into an IP packet with valid checksums.
fn build(placement: &Placement, segment: &Segment, payload: &[u8]) -> anyhow::Result<Packet> {
    let ends = &placement.endpoints;
    let (src, dst) = match segment.from {
        crate::log::Side::Client => (ends.client, ends.server),
        crate::log::Side::Server => (ends.server, ends.client),
    };
    let mut tcp = TcpHeader::new(src.port(), dst.port(), segment.seq, WINDOW);
    tcp.syn = segment.flags.contains(Flags::SYN);
    tcp.fin = segment.flags.contains(Flags::FIN);
    tcp.rst = segment.flags.contains(Flags::RST);
    tcp.psh = segment.flags.contains(Flags::PSH);
    tcp.ack = segment.flags.contains(Flags::ACK);
    tcp.acknowledgment_number = segment.ack;
    if tcp.rst {
        tcp.window_size = 0;
    }
    let builder = match (src.ip(), dst.ip()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), TTL),
        (s, d) => PacketBuilder::ipv6(to_v6(s).octets(), to_v6(d).octets(), TTL),
    }
    .tcp_header(tcp);
    let mut bytes = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write_to_vec(&mut bytes, payload)
        .context("failed to build a packet")?;
    Ok(Packet {
        unix_us: packet_time(placement.epoch_us, segment.time)?,
        bytes,
    })
}

/// The Unix time of a packet sent at `time` on a log clock that read zero at
/// `epoch_us`. A time so far past the start that the sum overflows, or passes
/// what a pcap timestamp holds (32-bit seconds: early 2106), is an error rather
/// than a wrapped time.
fn packet_time(epoch_us: u64, time: Micros) -> anyhow::Result<u64> {
    epoch_us
        .checked_add(time.0)
        .filter(|us| us / 1_000_000 <= u64::from(u32::MAX))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "a record at {time} s on the log's clock would be sent after 2106, \
                 the last time a pcap file can hold"
            )
        })
}

/// An address as IPv6; [`super::placement::Endpoints`] keeps both ends in one
/// family, so this only ever sees IPv6 addresses.
fn to_v6(ip: std::net::IpAddr) -> std::net::Ipv6Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::placement::Endpoints;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const EXAMPLE: &[u8] =
        b"c 0.000104 con\nc 0.000231 6\nPING\r\ns 0.000390 7\n+PONG\r\nc 1.204551 hup\ns 1.204602 hup\n";

    fn placement(client: &str, server: &str) -> Placement {
        Placement {
            endpoints: Endpoints::new(client.parse().unwrap(), server.parse().unwrap()),
            epoch_us: 1_000_000_000,
        }
    }

    fn packets(log: &[u8], placement: Placement) -> (Vec<Packet>, Ending) {
        let mut conv = Conversation::new(log, placement);
        let mut out = Vec::new();
        while let Some(p) = conv.next_packet().unwrap() {
            out.push(p);
        }
        (out, std::mem::replace(&mut conv.ending, Ending::Reading))
    }

    #[test]
    fn packets_parse_back_with_addresses_payload_and_times() {
        let (packets, ending) = packets(EXAMPLE, placement("192.0.2.1:50000", "192.0.2.2:6379"));
        assert!(matches!(ending, Ending::Closed));
        assert_eq!(packets.len(), 11);
        assert_eq!(packets[0].unix_us, 1_000_000_104);
        let data = &packets[3];
        assert_eq!(data.unix_us, 1_000_000_231);
        let sliced = SlicedPacket::from_ip(&data.bytes).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), [192, 0, 2, 1]);
        assert_eq!(ip.header().destination(), [192, 0, 2, 2]);
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            panic!("not TCP")
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), (50000, 6379));
        assert_eq!(tcp.payload(), b"PING\r\n");
        assert!(tcp.psh() && tcp.ack());
        // The checksum etherparse wrote is the one a receiver would compute.
        let header = tcp.to_header();
        let ipv4 = ip.header().to_header();
        assert_eq!(
            header.checksum,
            header.calc_checksum_ipv4(&ipv4, tcp.payload()).unwrap()
        );
    }

    #[test]
    fn ipv6_segments_fit_the_mtu() {
        let mut log = b"c 0.000001 con\ns 0.000002 5000\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 5000));
        let (packets, ending) = packets(&log, placement("[::1]:50000", "[::1]:6379"));
        assert!(matches!(ending, Ending::Open));
        let sizes: Vec<usize> = packets.iter().map(|p| p.bytes.len()).collect();
        assert!(sizes.iter().all(|&n| n <= MTU), "{sizes:?}");
        assert!(sizes.contains(&MTU), "{sizes:?}");
        let payload: usize = packets
            .iter()
            .map(|p| match SlicedPacket::from_ip(&p.bytes).unwrap().transport {
                Some(TransportSlice::Tcp(tcp)) => tcp.payload().len(),
                _ => panic!("not TCP"),
            })
            .sum();
        assert_eq!(payload, 5000);
        assert_eq!(packets[0].bytes[0] >> 4, 6);
    }

    #[test]
    fn a_truncated_log_exports_its_whole_records_and_a_corrupt_one_fails() {
        let (packets, ending) = packets(&EXAMPLE[..40], placement("10.0.0.1:1", "10.0.0.2:2"));
        assert!(matches!(
            ending,
            Ending::Truncated(ReadError::Truncated { offset: 34, .. })
        ));
        assert_eq!(packets.len(), 5);
        let mut conv = Conversation::new(
            &b"c 0.000001 con\nc 0.000000 hup\n"[..],
            placement("10.0.0.1:1", "10.0.0.2:2"),
        );
        let err = loop {
            match conv.next_packet() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a corrupt log read to its end"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("corrupt record at byte 15"), "{err}");
    }

    #[test]
    fn a_time_past_what_a_pcap_holds_is_an_error_not_a_wrap() {
        assert_eq!(packet_time(1_000_000, Micros(5)).unwrap(), 1_000_005);
        let last = u64::from(u32::MAX) * 1_000_000 + 999_999;
        assert_eq!(packet_time(last - 7, Micros(7)).unwrap(), last);
        assert!(packet_time(last - 7, Micros(8)).is_err());
        let err = packet_time(1_795_710_633_123_456, Micros(u64::MAX)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a record at 18446744073709.551615 s on the log's clock would be sent after 2106, \
             the last time a pcap file can hold"
        );
    }
}
