//! Loading a recording into a replay script: what the side we play does, step by
//! step, and what the live peer is expected to send, each tied to what the other
//! side must have done first.
//!
//! The log's record order is the only causality a recording has: bytes that one
//! side sent after the proxy had seen some bytes of the other side may depend on
//! them. So each step of ours waits for the peer's bytes (and hang-up) recorded
//! before it, and nothing else: the peer's bytes are read as a stream whenever they
//! come, however the peer splits them into chunks.
//!
//! The whole log is read up front, before listening or connecting, so a corrupt log
//! is an error before anything happens. Its payloads stay in memory as the script,
//! each side's concatenated into one buffer, plus a few words per record: the
//! log's payload size once, and never twice. So the log is read in two passes: the
//! reader checks every record and skips the payloads, noting where each lies in
//! the file, then each side's buffer is allocated at its final size and the
//! payloads are read straight into it. Copying them out of the reader instead
//! would hold the largest record twice while it is copied (a 2.5 GiB record took
//! 5 GiB), and growing the buffers as records come would copy them again. A
//! replayed recording is one connection, and holding it once is cheaper than
//! re-reading the log for every client.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::count;
use super::mask::Mask;
use crate::log::{Event, Micros, ReadError, Reader, Side};

/// How far one side has got: bytes sent, and whether it has hung up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    pub bytes: u64,
    pub hup: bool,
}

impl Mark {
    /// Whether a side that has got to `self` has done everything `need` asks.
    pub fn reaches(self, need: Mark) -> bool {
        self.bytes >= need.bytes && (self.hup || !need.hup)
    }
}

/// Something the side we play does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes of our recorded stream.
    Send(Range<usize>),
    /// Close our sending half (`hup`).
    Hup,
    /// Abort the connection with a reset (`err`: our side's connection failed).
    Reset,
}

/// One record of ours, to replay once the peer has reached `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// The peer's progress recorded before this step.
    pub after: Mark,
    /// The recorded time from the record before this one to this one.
    pub gap: Duration,
}

/// A point the peer's stream is expected to reach, and our progress recorded before
/// it: the peer is only late once we have sent what it may have been waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub until: Mark,
    pub after: Mark,
}

/// One recorded connection, seen from the side we play.
#[derive(Debug)]
pub struct Script {
    /// The side we play.
    pub us: Side,
    /// Our records, in order.
    pub steps: Vec<Step>,
    /// The peer's records, consecutive ones with the same `after` merged.
    pub expects: Vec<Expect>,
    ours: Vec<u8>,
    theirs: Vec<u8>,
    their_hup: bool,
    /// Where the peer's stream is cut into segments: the end of each run of its
    /// bytes that came with no record of ours between (a request, a reply).
    ends: Vec<u64>,
    /// The masked spans of the peer's stream, in order, each inside one segment.
    spans: Vec<Range<u64>>,
    records: u64,
    /// When the connection was accepted, on the run's clock.
    pub start: Micros,
    /// Why the replay stops short of a whole connection, when it does.
    pub note: Option<String>,
}

impl Script {
    /// Reads the log at `path` and builds the script for playing `us`.
    pub fn load(path: &Path, us: Side) -> anyhow::Result<Script> {
        // A directory opens as a file on Unix and fails only when read: say what
        // it is instead.
        if path.is_dir() {
            bail!("{} is a directory, not a log", path.display());
        }
        let file = File::open(path).with_context(|| format!("failed to open log {}", path.display()))?;
        Script::read(file, path, us)
    }

    /// Builds the script from a log read from `source`, which is read twice (see
    /// the module doc); `path` only names the log in messages.
    pub fn read<R: Read + Seek>(mut source: R, path: &Path, us: Side) -> anyhow::Result<Script> {
        let failed = || format!("failed to read log {}", path.display());
        let start = source.stream_position().with_context(failed)?;
        let end = source.seek(std::io::SeekFrom::End(0)).with_context(failed)?;
        source.seek(std::io::SeekFrom::Start(start)).with_context(failed)?;
        let mut payloads = Payloads::default();
        let script = Script::headers(
            Reader::new(&mut source).keep_payload(false),
            path,
            us,
            (start, end),
            &mut payloads,
        )?;
        payloads.fill(script, source).with_context(failed)
    }

    /// The first pass: every record checked and turned into steps, with empty
    /// payload buffers; `payloads` notes where each payload lies in the source.
    fn headers<R: Read>(
        mut reader: Reader<R>,
        path: &Path,
        us: Side,
        (start, end): (u64, u64),
        payloads: &mut Payloads,
    ) -> anyhow::Result<Script> {
        let mut script = Script {
            us,
            steps: Vec::new(),
            expects: Vec::new(),
            ours: Vec::new(),
            theirs: Vec::new(),
            their_hup: false,
            ends: Vec::new(),
            spans: Vec::new(),
            records: 0,
            start: Micros::default(),
            note: None,
        };
        let (mut mine, mut peer) = (Mark::default(), Mark::default());
        let mut last_time = None;
        let cut = loop {
            let record = match reader.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => break None,
                Err(e @ ReadError::Truncated { .. }) => break Some(e),
                Err(e @ ReadError::Corrupt { .. }) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("log {} is not a valid recording", path.display()));
                }
                // The OS error alone: the reader's wrapper would repeat its text.
                Err(ReadError::Io(e)) => {
                    return Err(e).with_context(|| format!("failed to read log {}", path.display()));
                }
            };
            // Where a payload lies: after its header line, which the reader has
            // checked to be in the one form the format allows, so that written out
            // again it has the length it has in the file.
            let payload_at = match record.event {
                Event::Data(n) => {
                    let header = format!("{} {} {n}\n", record.side.letter(), record.time).len() as u64;
                    let at = start + record.offset + header;
                    if at + n as u64 > end {
                        // The payload is cut short: the record is not whole.
                        break Some(ReadError::Truncated {
                            offset: record.offset,
                            what: "the file ends inside a payload".into(),
                        });
                    }
                    at
                }
                _ => 0,
            };
            script.records += 1;
            // The reader guarantees that times never decrease.
            let gap = Duration::from_micros(record.time.0 - last_time.unwrap_or(record.time).0);
            last_time = Some(record.time);
            let ours = record.side == us;
            match record.event {
                Event::Con => script.start = record.time,
                Event::Data(n) => {
                    payloads.note(ours, payload_at, n);
                    if ours {
                        let from = mine.bytes as usize;
                        mine.bytes += n as u64;
                        script.step(Action::Send(from..mine.bytes as usize), peer, gap);
                    } else {
                        peer.bytes += n as u64;
                        script.expect(peer, mine);
                    }
                }
                Event::Hup if ours => {
                    mine.hup = true;
                    script.step(Action::Hup, peer, gap);
                }
                Event::Hup => {
                    peer.hup = true;
                    script.their_hup = true;
                    script.expect(peer, mine);
                }
                Event::Err if ours => script.step(Action::Reset, peer, gap),
                // The peer's connection failed: its stream simply ends here.
                Event::Err => {}
            }
        };
        if script.records == 0 {
            bail!("log {} is empty: there is nothing to replay", path.display());
        }
        script.ends = script
            .expects
            .iter()
            .map(|e| e.until.bytes)
            .filter(|&b| b > 0)
            .collect();
        script.ends.dedup();
        let summary = reader.summary();
        script.note = if let Some(cut) = cut {
            Some(format!(
                "log {} is cut short ({cut}): replaying the {} before it",
                path.display(),
                count(script.records, "whole record")
            ))
        } else if let Some(side) = summary.err {
            Some(format!(
                "log {} ends with `{} err` (the {}'s connection failed): replaying up to it",
                path.display(),
                side.letter(),
                side.name()
            ))
        } else if !summary.is_complete() {
            Some(format!(
                "log {} ends with the connection still open: replaying the {} it has",
                path.display(),
                count(script.records, "record")
            ))
        } else {
            None
        };
        Ok(script)
    }

    fn step(&mut self, action: Action, after: Mark, gap: Duration) {
        self.steps.push(Step { action, after, gap });
    }

    fn expect(&mut self, until: Mark, after: Mark) {
        match self.expects.last_mut() {
            // Nothing of ours came between: one point to wait for, not two.
            Some(last) if last.after == after => last.until = until,
            _ => self.expects.push(Expect { until, after }),
        }
    }

    /// Finds `mask`'s matches in the peer's recorded stream, segment by segment,
    /// as the live stream's are found.
    pub fn apply_mask(&mut self, mask: &Mask) {
        self.spans.clear();
        let mut start = 0;
        for &end in &self.ends {
            let segment = &self.theirs[start as usize..end as usize];
            let spans = mask.spans(segment);
            self.spans
                .extend(spans.into_iter().map(|r| start + r.start as u64..start + r.end as u64));
            start = end;
        }
    }

    /// Where each segment of the peer's stream ends (see [`Script::apply_mask`]).
    pub fn segment_ends(&self) -> &[u64] {
        &self.ends
    }

    /// The masked spans of the peer's stream.
    pub fn masked_spans(&self) -> &[Range<u64>] {
        &self.spans
    }

    /// Whether we are recorded to send something before the peer sent anything
    /// (a server's greeting).
    pub fn speaks_first(&self) -> bool {
        self.steps
            .first()
            .is_some_and(|s| matches!(s.action, Action::Send(_)) && s.after == Mark::default())
    }

    /// The bytes a [`Action::Send`] step sends.
    pub fn ours(&self, range: &Range<usize>) -> &[u8] {
        &self.ours[range.clone()]
    }

    /// Everything the peer is recorded to send, in order.
    pub fn theirs(&self) -> &[u8] {
        &self.theirs
    }

    /// How many bytes we are recorded to send.
    pub fn our_total(&self) -> u64 {
        self.ours.len() as u64
    }

    /// Whether the peer is recorded to hang up after its bytes.
    pub fn their_hup(&self) -> bool {
        self.their_hup
    }
}

/// Where the payloads of a log lie in its file, in order, and how much each side
/// sent: what the second pass of [`Script::read`] reads.
#[derive(Default)]
struct Payloads {
    /// (ours, file offset, length) per data record.
    pieces: Vec<(bool, u64, usize)>,
    /// Bytes per side: ours, theirs.
    totals: [usize; 2],
}

impl Payloads {
    fn note(&mut self, ours: bool, offset: u64, len: usize) {
        self.pieces.push((ours, offset, len));
        self.totals[usize::from(!ours)] += len;
    }

    /// The second pass: reads every payload into buffers of their final size.
    fn fill<R: Read + Seek>(self, mut script: Script, source: R) -> std::io::Result<Script> {
        // Zeroed allocations map pages lazily: memory grows only as payloads are read.
        script.ours = vec![0; self.totals[0]];
        script.theirs = vec![0; self.totals[1]];
        let mut source = BufReader::new(source);
        let mut at = source.seek(SeekFrom::Start(self.pieces.first().map_or(0, |p| p.1)))?;
        let mut filled = [0usize; 2];
        for (ours, offset, len) in self.pieces {
            // Headers lie between payloads: skip them within the buffer.
            source.seek_relative((offset - at) as i64)?;
            let side = usize::from(!ours);
            let buffer = if ours { &mut script.ours } else { &mut script.theirs };
            source.read_exact(&mut buffer[filled[side]..filled[side] + len])?;
            filled[side] += len;
            at = offset + len as u64;
        }
        Ok(script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const EXAMPLE: &[u8] =
        b"c 0.000104 con\nc 0.000231 6\nPING\r\ns 0.000390 7\n+PONG\r\nc 1.204551 hup\ns 1.204602 hup\n";

    fn script(log: &[u8], us: Side) -> Script {
        Script::read(Cursor::new(log), Path::new("test"), us).unwrap()
    }

    fn mark(bytes: u64, hup: bool) -> Mark {
        Mark { bytes, hup }
    }

    #[test]
    fn server_waits_for_the_client_bytes_recorded_before() {
        let s = script(EXAMPLE, Side::Server);
        assert_eq!(s.note, None);
        assert_eq!(
            s.steps,
            vec![
                Step {
                    action: Action::Send(0..7),
                    after: mark(6, false),
                    gap: Duration::from_micros(159),
                },
                Step {
                    action: Action::Hup,
                    after: mark(6, true),
                    gap: Duration::from_micros(51),
                },
            ]
        );
        assert_eq!(
            s.expects,
            vec![
                Expect {
                    until: mark(6, false),
                    after: mark(0, false),
                },
                Expect {
                    until: mark(6, true),
                    after: mark(7, false),
                },
            ]
        );
        assert_eq!(s.theirs(), b"PING\r\n");
        assert_eq!(s.ours(&(0..7)), b"+PONG\r\n");
        assert!(s.their_hup());
    }

    #[test]
    fn the_peer_stream_is_cut_where_we_act_and_masked_per_segment() {
        let log =
            b"c 0.000001 con\nc 0.000002 4\nid=1c 0.000003 2\n;\ns 0.000004 2\nokc 0.000005 5\nid=22c 0.000006 hup\n";
        let mut s = script(log, Side::Server);
        assert_eq!(s.segment_ends(), [6, 11]);
        assert_eq!(s.start, Micros(1));
        assert!(!s.speaks_first());
        s.apply_mask(&Mask::new(&["id=[0-9]+".into()], &[]).unwrap());
        assert_eq!(s.masked_spans(), [0..4, 6..11]);
        assert!(script(EXAMPLE, Side::Client).speaks_first());
    }

    #[test]
    fn client_script_mirrors_the_server_script() {
        let s = script(EXAMPLE, Side::Client);
        let actions: Vec<_> = s.steps.iter().map(|st| (st.action.clone(), st.after)).collect();
        assert_eq!(
            actions,
            vec![(Action::Send(0..6), mark(0, false)), (Action::Hup, mark(7, false))]
        );
        assert_eq!(s.theirs(), b"+PONG\r\n");
        assert_eq!(s.our_total(), 6);
    }

    #[test]
    fn consecutive_peer_records_merge_into_one_expectation() {
        let log = b"c 0.000001 con\ns 0.000002 3\n220s 0.000003 2\n\r\nc 0.000004 1\nQ";
        let s = script(log, Side::Server);
        assert_eq!(s.steps.len(), 2);
        assert_eq!(
            s.steps.iter().map(|st| st.after).collect::<Vec<_>>(),
            vec![mark(0, false); 2]
        );
        assert_eq!(
            s.expects,
            vec![Expect {
                until: mark(1, false),
                after: mark(5, false),
            }]
        );
        assert!(s.note.as_deref().unwrap().contains("still open"), "{:?}", s.note);
    }

    #[test]
    fn a_cut_log_replays_its_whole_records_and_says_so() {
        let cut = &EXAMPLE[..EXAMPLE.len() - 20];
        let s = script(cut, Side::Server);
        assert_eq!(s.steps.len(), 1);
        assert!(s.note.as_deref().unwrap().contains("cut short"), "{:?}", s.note);
    }

    #[test]
    fn a_record_cut_inside_its_payload_is_left_out() {
        let cut = &EXAMPLE[..EXAMPLE.len() - 34];
        assert!(cut.ends_with(b"+PO"));
        let s = script(cut, Side::Client);
        assert_eq!(s.theirs(), b"");
        assert_eq!(s.ours(&(0..6)), b"PING\r\n");
        assert!(
            s.note.as_deref().unwrap().contains("replaying the 2 whole records"),
            "{:?}",
            s.note
        );
    }

    #[test]
    fn corrupt_and_empty_logs_are_errors() {
        let e = Script::read(Cursor::new(b"hello world\n"), Path::new("x"), Side::Server).unwrap_err();
        assert!(format!("{e:#}").starts_with("log x is not a valid recording: corrupt record at byte 0"));
        let e = Script::read(Cursor::new(b""), Path::new("x"), Side::Server).unwrap_err();
        assert!(format!("{e:#}").contains("empty"));
    }

    #[test]
    fn our_err_becomes_a_reset() {
        let log = b"c 0.000001 con\nc 0.000002 1\nxs 0.000003 err\n";
        let s = script(log, Side::Server);
        assert_eq!(s.steps.last().unwrap().action, Action::Reset);
        assert!(s.note.as_deref().unwrap().contains("`s err`"));
    }
}
