//! `netrecord pcap`: export recordings as a pcap file that Wireshark and tshark
//! read as real TCP conversations, so any recorded protocol gets their dissectors.
//!
//! Each log becomes one TCP stream between the recorded client and server
//! ([`placement`] finds their addresses and the run's wall-clock start in the run
//! index), made of segments whose sequence and acknowledgement numbers add up in
//! both directions ([`tcp`]), built into IP packets with checksums
//! ([`conversation`]) and framed as pcap records ([`file`]), written to a file of
//! mode 0600 that replaces an existing one only with `--force` ([`output`]).
//!
//! The packets of all logs are merged into one time order. Logs are read as
//! streams, side by side: each log is opened up front (so that a missing file
//! fails before anything is written, and a pipe such as `<(zcat rec_1.gz)` is read
//! only once), but its reader, with its buffer, is only set up when the merge
//! reaches the log's first packet; the time of that packet comes from the first
//! header line, read ahead. A log that ends open or cut short is exported as far as
//! it goes, with a note on stderr; a corrupt log stops the export with an error
//! naming the file and the byte offset, and no output file is left behind.
//!
//! `netrecord pcap /tmp/rec_* -o rec.pcap` also matches the run index
//! `/tmp/rec_index.jsonl`; a file so named is never a log (log names end in a
//! number), so it is passed over.
//!
//! The link type is LINKTYPE_RAW: packets start at the IP header. The logs hold no
//! link layer to reproduce, so made-up MAC addresses would only be noise, and one
//! file can hold IPv4 and IPv6 conversations side by side.

mod conversation;
mod file;
mod output;
mod placement;
mod tcp;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Chain, Cursor, IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use self::conversation::{Conversation, Ending, Packet};
use self::file::{LINKTYPE_RAW, PcapWriter};
use self::output::Output;
use self::placement::{Placement, Placer};
use crate::cli::PcapArgs;
use crate::escape;
use crate::index::is_index_path;
use crate::log::MAX_HEADER;
use crate::log::Reader;
use crate::process::say;

/// The output buffer: large enough that a pcap is written at disk speed.
const OUTPUT_BUFFER: usize = 256 * 1024;

/// Runs `netrecord pcap`.
pub fn run(args: &PcapArgs) -> anyhow::Result<ExitCode> {
    let to_stdout = args.output.as_os_str() == "-";
    anyhow::ensure!(
        !(to_stdout && io::stdout().is_terminal()),
        "refusing to write a pcap to a terminal: give -o a file name, or pipe stdout into tshark -r -"
    );
    let paths: Vec<&Path> = args
        .logs
        .iter()
        .map(|p| p.as_path())
        .filter(|p| !is_index_path(p))
        .collect();
    anyhow::ensure!(!paths.is_empty(), "no logs to export, only run indexes");
    crate::process::raise_open_files_limit();
    let mut placer = Placer::new(args.server_port);
    let mut logs = Vec::with_capacity(paths.len());
    for (position, path) in paths.into_iter().enumerate() {
        logs.push(Waiting::open(path, position, &mut placer)?);
    }
    logs.sort_by_key(|log| (log.start, log.position));

    let name = if to_stdout {
        "stdout".to_string()
    } else {
        escape::path(&args.output).to_string()
    };
    let written = if to_stdout {
        export(
            logs,
            BufWriter::with_capacity(OUTPUT_BUFFER, io::stdout().lock()),
            &name,
        )?
    } else {
        refuse_to_overwrite_a_log(&args.output, &args.logs)?;
        let output = Output::create(&args.output, args.force, &name)?;
        match export(logs, BufWriter::with_capacity(OUTPUT_BUFFER, output.file()), &name) {
            Ok(written) => {
                output.commit(&name)?;
                written
            }
            Err(err) => {
                output.discard();
                return Err(err);
            }
        }
    };
    say!(
        "wrote {} packets in {} TCP stream{} to {name}",
        written.packets,
        written.streams,
        if written.streams == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// What an export wrote.
#[derive(Debug)]
struct Written {
    packets: u64,
    streams: u64,
}

/// A log opened but not read past its first header line yet.
struct Waiting<'a> {
    path: &'a Path,
    /// Its place on the command line: ties between packets go to the earlier log.
    position: usize,
    placement: Placement,
    /// The Unix time of its first packet (the `con`), in microseconds; 0 when the
    /// first line is no valid `con`, so that the export meets the problem first.
    start: u64,
    /// The bytes read ahead to learn the start, given back to the reader.
    head: Vec<u8>,
    file: File,
}

impl<'a> Waiting<'a> {
    /// Opens the log at `path`, the `position`th of the command line, and places it.
    fn open(path: &'a Path, position: usize, placer: &mut Placer) -> anyhow::Result<Waiting<'a>> {
        let context = || format!("failed to open log {}", escape::path(path));
        let file = File::open(path).with_context(context)?;
        let placement = placer.place(path, position, &mut |note| say!("{note}"));
        let mut head = Vec::with_capacity(MAX_HEADER);
        (&file)
            .take(MAX_HEADER as u64)
            .read_to_end(&mut head)
            .with_context(context)?;
        let start = match Reader::new(&head[..]).next_record() {
            // Only an order: a time past what a pcap can hold is the export's error.
            Ok(Some(first)) => placement.epoch_us.saturating_add(first.time.0),
            _ => 0,
        };
        Ok(Waiting {
            path,
            position,
            placement,
            start,
            head,
            file,
        })
    }
}

/// A log being exported, with its next packet.
struct Active<'a> {
    path: &'a Path,
    conversation: Conversation<Chain<Cursor<Vec<u8>>, File>>,
    next: Packet,
}

/// Merges the packets of all `logs` (sorted by start) in time order into a pcap
/// written to `out`, called `name` in messages.
fn export<W: Write>(logs: Vec<Waiting<'_>>, out: W, name: &str) -> anyhow::Result<Written> {
    let write_failed = || format!("failed to write {name}");
    let mut pcap = PcapWriter::new(out, LINKTYPE_RAW).with_context(write_failed)?;
    let mut active: Vec<Option<Active>> = (0..logs.len()).map(|_| None).collect();
    // The next packet of every active log, as (time, position): the smallest first.
    let mut queue = BinaryHeap::new();
    let mut streams = 0;
    let mut waiting = logs.into_iter().peekable();
    loop {
        // Start every log whose first packet comes before the next one queued.
        while let Some(log) = waiting.next_if(|log| {
            queue
                .peek()
                .is_none_or(|Reverse(next)| (log.start, log.position) <= *next)
        }) {
            let mut conversation = Conversation::new(Cursor::new(log.head).chain(log.file), log.placement);
            match next_packet(&mut conversation, log.path)? {
                Some(next) => {
                    streams += 1;
                    queue.push(Reverse((next.unix_us, log.position)));
                    active[log.position] = Some(Active {
                        path: log.path,
                        conversation,
                        next,
                    });
                }
                None => report_ending(log.path, &conversation),
            }
        }
        let Some(Reverse((_, position))) = queue.pop() else {
            break;
        };
        let log = active[position].as_mut().expect("a queued log is active");
        pcap.write_packet(log.next.unix_us, &log.next.bytes)
            .with_context(write_failed)?;
        match next_packet(&mut log.conversation, log.path)? {
            Some(next) => {
                queue.push(Reverse((next.unix_us, position)));
                log.next = next;
            }
            None => {
                report_ending(log.path, &log.conversation);
                active[position] = None;
            }
        }
    }
    let packets = pcap.packets();
    pcap.finish().with_context(write_failed)?;
    Ok(Written { packets, streams })
}

fn next_packet<R: Read>(conversation: &mut Conversation<R>, path: &Path) -> anyhow::Result<Option<Packet>> {
    conversation.next_packet().with_context(|| {
        if conversation.is_corrupt() {
            format!("invalid log {}", escape::path(path))
        } else {
            format!("cannot export log {}", escape::path(path))
        }
    })
}

/// Says on stderr when a log did not end with its connection closed.
fn report_ending<R: Read>(path: &Path, conversation: &Conversation<R>) {
    let path = escape::path(path);
    match conversation.ending() {
        Ending::Reading | Ending::Closed => {}
        Ending::Open if conversation.records() == 0 => say!("log {path} is empty: nothing exported"),
        Ending::Open => say!("log {path} ends with the connection open: exported without FIN or RST"),
        Ending::Truncated(e) => {
            say!("log {path}: {e}: exported as far as it goes, without FIN or RST")
        }
    }
}

/// `-o` naming one of the logs would destroy the recording before it is read.
fn refuse_to_overwrite_a_log(output: &Path, logs: &[impl AsRef<Path>]) -> anyhow::Result<()> {
    let Ok(out) = std::fs::metadata(output) else {
        return Ok(());
    };
    for log in logs {
        if let Ok(meta) = std::fs::metadata(log)
            && (meta.dev(), meta.ino()) == (out.dev(), out.ino())
        {
            anyhow::bail!(
                "refusing to overwrite log {} with the pcap (-o names one of the logs)",
                escape::path(log.as_ref())
            );
        }
    }
    Ok(())
}
