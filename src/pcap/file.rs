//! The pcap file framing: a global header, then a record header before each packet.
//!
//! This is the classic libpcap format (not pcapng), which every tool reads. Fields
//! are written little-endian; readers tell the byte order from the magic number.
//! The magic `0xa1b2c3d4` says timestamps are in microseconds, the resolution of
//! the log's clock.
//!
//! ```text
//! global header (24 bytes): magic u32, version 2 u16, 4 u16, thiszone i32 (0),
//!                           sigfigs u32 (0), snaplen u32, link type u32
//! record header (16 bytes): seconds u32, microseconds u32, captured length u32,
//!                           original length u32; then the packet's bytes
//! ```

use std::io::{self, Write};

/// The magic number of a pcap file with microsecond timestamps.
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;

/// LINKTYPE_RAW: each packet starts with its IPv4 or IPv6 header, told apart by
/// the version nibble, with no link-layer header before it.
pub const LINKTYPE_RAW: u32 = 101;

/// The largest packet a file declares it may hold.
pub const SNAPLEN: u32 = 65_535;

/// Writes packets into a pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header for packets of `link_type` to `out`.
    pub fn new(mut out: W, link_type: u32) -> io::Result<PcapWriter<W>> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&link_type.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, packets: 0 })
    }

    /// Appends one whole packet, captured at `unix_us` microseconds since the Unix
    /// epoch.
    pub fn write_packet(&mut self, unix_us: u64, packet: &[u8]) -> io::Result<()> {
        let seconds = u32::try_from(unix_us / 1_000_000).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "packet time is past 2106, the last second a pcap file can hold",
            )
        })?;
        let len = u32::try_from(packet.len())
            .ok()
            .filter(|&len| len <= SNAPLEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("packet of {} bytes is larger than the snap length", packet.len()),
                )
            })?;
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&seconds.to_le_bytes());
        header[4..8].copy_from_slice(&((unix_us % 1_000_000) as u32).to_le_bytes());
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(packet)?;
        self.packets += 1;
        Ok(())
    }

    /// How many packets have been written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_header_is_little_endian_microsecond_pcap() {
        let out = PcapWriter::new(Vec::new(), LINKTYPE_RAW).unwrap().finish().unwrap();
        assert_eq!(
            out,
            [
                0xd4, 0xc3, 0xb2, 0xa1, // magic
                2, 0, 4, 0, // version 2.4
                0, 0, 0, 0, // thiszone
                0, 0, 0, 0, // sigfigs
                0xff, 0xff, 0, 0, // snaplen 65535
                101, 0, 0, 0, // LINKTYPE_RAW
            ]
        );
    }

    #[test]
    fn a_record_header_holds_seconds_micros_and_lengths() {
        let mut pcap = PcapWriter::new(Vec::new(), LINKTYPE_RAW).unwrap();
        pcap.write_packet(1_795_710_633_123_456, b"abc").unwrap();
        assert_eq!(pcap.packets(), 1);
        let out = pcap.finish().unwrap();
        let record = &out[24..];
        assert_eq!(u32::from_le_bytes(record[0..4].try_into().unwrap()), 1_795_710_633);
        assert_eq!(u32::from_le_bytes(record[4..8].try_into().unwrap()), 123_456);
        assert_eq!(&record[8..16], &[3, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&record[16..], b"abc");
    }

    #[test]
    fn times_and_sizes_a_pcap_cannot_hold_are_errors() {
        let mut pcap = PcapWriter::new(Vec::new(), LINKTYPE_RAW).unwrap();
        assert!(pcap.write_packet((u32::MAX as u64 + 1) * 1_000_000, b"x").is_err());
        assert!(pcap.write_packet(0, &vec![0; SNAPLEN as usize + 1]).is_err());
        assert_eq!(pcap.packets(), 0);
    }
}
