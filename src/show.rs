//! `netrecord show`: recorded conversations as a person reads them.
//!
//! Each record becomes one header line, `<time> <side> <what>`, and a data record's
//! payload follows, indented, as escaped text (`payload::TextWriter`) or as a hex
//! dump whose offsets count the bytes of that side's stream (`payload::HexWriter`).
//! The FORMAT.md example shows as:
//!
//! ```text
//! 0.000104 client connected
//! 0.000231 client 6 bytes
//!     PING\r\n
//! 0.000390 server 7 bytes
//!     +PONG\r\n
//! 1.204551 client hung up
//! 1.204602 server hung up
//! ```
//!
//! Several logs are shown one after the other under `==> <path> <==` headings, or,
//! with `--merge`, as one timeline (all files of a run share one clock, and the
//! runs of a root are put in wall-clock order from the run index: [`run_starts`])
//! in which every line starts with its connection's tag, `[N]`. `--raw` writes one
//! side's payload bytes alone, and `--json` one JSON object per record, for
//! scripts ([`json`]). Each of these is a [`Form`]: the same readers feed them.
//! `--follow` shows a log, or a whole run, as it is written ([`follow`]).
//!
//! Everything streams, within a record too: a payload is read and written in
//! pieces of at most [`PIECE`] bytes, and a payload of a side that is not shown
//! is skipped unread, so memory stays the same whatever the size of a record.
//! A log that ends before its connection did (still open, or cut short inside a
//! record) is shown to its end with a note, the bytes of a record cut short
//! included; a corrupt one is shown up to the bad record, then the error is
//! noted and reported, and the exit status is 1.

mod follow;
mod json;
mod payload;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anstyle::{AnsiColor, Style};
use anyhow::Context;

use crate::cli::{ColorChoice, ShowArgs};
use crate::escape;
use crate::log::{Event, ReadError, Reader, Record, Side, connection_numbers, logs_in_order};
use crate::process::say;
use crate::runs::Found;
use json::Json;
use payload::{HexWriter, Paint, TextWriter};

/// How to show records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Payloads as hex dumps instead of escaped text.
    pub hex: bool,
    /// Show only this side's records.
    pub side: Option<Side>,
    /// Paint the two sides in two colours with ANSI escapes.
    pub color: bool,
}

/// How showing a log ended.
#[derive(Debug)]
pub enum End {
    /// The log was read to its end: the connection ended, or is still open.
    Clean,
    /// The log is cut short inside a record; everything before it was shown.
    Truncated(ReadError),
    /// The log is corrupt or could not be read from the error's offset on.
    Failed(ReadError),
}

/// The most payload bytes read and written at once: small enough that memory
/// stays a few MiB whatever the size of a record, large enough that a large log
/// shows at disk speed.
pub const PIECE: usize = 64 * 1024;

/// The read buffer of each of many logs read side by side; payload pieces
/// ([`PIECE`]) are read past it.
const SIDE_BY_SIDE_BUFFER: usize = 16 * 1024;

/// Shows one log read from `input`.
///
/// Errors are only those of writing to `out`; what is wrong with the log itself is
/// noted in the output and returned as the [`End`].
pub fn render(input: impl Read, out: &mut impl Write, opts: &Options) -> io::Result<End> {
    let mut form = Text::new(opts);
    show_one(&mut form, Conversation::new(input, Label::plain(1)), out)
}

/// Shows several logs of one run as one timeline, ordered by time (records with
/// equal times in the order of `logs`). Each log comes with its connection number,
/// which tags every line it contributes. Returns each log's end, in order.
pub fn render_merged<R: Read>(logs: Vec<(u64, R)>, out: &mut impl Write, opts: &Options) -> io::Result<Vec<End>> {
    let width = tag_width(logs.iter().map(|(n, _)| *n));
    let convs = logs
        .into_iter()
        .map(|(n, input)| Conversation::side_by_side(input, Label::tagged(n, width)))
        .collect();
    show_merged(&mut Text::new(opts), convs, out)
}

/// Writes the payload bytes of `side`'s data records, and nothing else, to `out`.
pub fn write_raw(input: impl Read, side: Side, out: &mut impl Write) -> io::Result<End> {
    show_one(&mut Raw { side }, Conversation::new(input, Label::plain(1)), out)
}

/// Shows every record of one log in `form`.
fn show_one<R: Read>(form: &mut impl Form, mut conv: Conversation<R>, out: &mut impl Write) -> io::Result<End> {
    while conv.advance() {
        show_record(form, &mut conv, out)?;
    }
    let end = conv.take_end();
    form.note(out, &conv.label, &end)?;
    Ok(end.into())
}

/// Shows the records of several logs as one timeline: the earliest next record
/// of any log first.
fn show_merged<R: Read>(
    form: &mut impl Form,
    mut convs: Vec<Conversation<R>>,
    out: &mut impl Write,
) -> io::Result<Vec<End>> {
    let mut ends: Vec<Option<End>> = convs.iter().map(|_| None).collect();
    // The next record of every log that has one, earliest first. A log is read
    // on only after its record has been shown, so at most one piece of payload
    // per log is held at a time.
    let mut next = BinaryHeap::new();
    for (i, conv) in convs.iter_mut().enumerate() {
        if conv.advance() {
            next.push(Reverse((conv.current_key(), i)));
        } else {
            let end = conv.take_end();
            form.note(out, &conv.label, &end)?;
            ends[i] = Some(end.into());
        }
    }
    while let Some(Reverse((_, i))) = next.pop() {
        let conv = &mut convs[i];
        show_record(form, conv, out)?;
        if conv.advance() {
            next.push(Reverse((conv.current_key(), i)));
        } else {
            // The end is noted right after the log's last record, where it
            // belongs in the timeline.
            let end = conv.take_end();
            form.note(out, &conv.label, &end)?;
            ends[i] = Some(end.into());
        }
    }
    Ok(ends.into_iter().map(|e| e.unwrap_or(End::Clean)).collect())
}

/// Shows the conversation's current record: its header, then its payload piece
/// by piece. A record of a side the form leaves out is skipped, payload unread.
fn show_record<R: Read>(form: &mut impl Form, conv: &mut Conversation<R>, out: &mut impl Write) -> io::Result<()> {
    // A log read to its end never has to wait for the rest of a payload.
    show_record_waiting(form, conv, out, &mut |_| Ok(false)).map(|_| ())
}

/// [`show_record`] for a log being followed: where the rest of a payload is not
/// written yet, `wait` is called (with the output, to flush) and says whether to
/// go on. Returns false if it said not to (the record is left unfinished).
fn show_record_waiting<R: Read, W: Write>(
    form: &mut impl Form,
    conv: &mut Conversation<R>,
    out: &mut W,
    wait: &mut dyn FnMut(&mut W) -> io::Result<bool>,
) -> io::Result<bool> {
    let Some(rec) = conv.current else { return Ok(true) };
    if !form.shows(rec.side) {
        return Ok(true);
    }
    form.header(out, &conv.label, &rec, conv.stream[rec.side.index()])?;
    if let Event::Data(_) = rec.event {
        loop {
            match conv.piece() {
                Piece::Bytes(piece) => form.piece(out, piece)?,
                Piece::Done => break,
                Piece::NotYet => {
                    if !wait(out)? {
                        return Ok(false);
                    }
                }
            }
        }
        form.end_payload(out)?;
    }
    Ok(true)
}

/// One way of writing records out: text or hex for people, raw bytes.
trait Form {
    /// Whether records of `side` are written at all.
    fn shows(&self, side: Side) -> bool;

    /// Writes a record's header. `stream` is how many bytes its side sent before
    /// it, where a data record's payload starts in that side's stream.
    fn header(&mut self, out: &mut dyn Write, log: &Label, rec: &Record, stream: u64) -> io::Result<()>;

    /// Writes the next piece of the payload of the data record just started.
    fn piece(&mut self, out: &mut dyn Write, piece: &[u8]) -> io::Result<()>;

    /// Ends the payload of the data record just started.
    fn end_payload(&mut self, out: &mut dyn Write) -> io::Result<()>;

    /// Notes how a log ended, where the form has room for that.
    fn note(&mut self, out: &mut dyn Write, log: &Label, end: &Finished) -> io::Result<()>;

    /// Notes, while following a run, that a log's connection has ended.
    fn ended(&mut self, _out: &mut dyn Write, _log: &Label) -> io::Result<()> {
        Ok(())
    }
}

/// How a log is named in what is shown.
#[derive(Clone, Debug)]
struct Label {
    /// What every text line of this log starts with: its `[N] ` tag when merging.
    tag: String,
    /// Its connection number: the `N` of `<root>_N`, or its place in the list.
    conn: u64,
}

impl Label {
    /// A log shown on its own: no tag.
    fn plain(conn: u64) -> Label {
        Label {
            tag: String::new(),
            conn,
        }
    }

    /// A log merged with others: tagged `[N]`, padded to `width` digits.
    fn tagged(conn: u64, width: usize) -> Label {
        Label {
            tag: format!("{:<w$} ", format!("[{conn}]"), w = width + 2),
            conn,
        }
    }
}

/// The digits of the longest of `numbers`, for tags that line up.
fn tag_width(numbers: impl Iterator<Item = u64>) -> usize {
    numbers.map(|n| n.to_string().len()).max().unwrap_or(1)
}

/// One log being read: its reader, the record just read, and where each side's
/// stream stands.
struct Conversation<R> {
    reader: Reader<R>,
    label: Label,
    /// The record just read, whose payload the reader is at.
    current: Option<Record>,
    /// Bytes each side sent before the current record: hex dump offsets.
    stream: [u64; 2],
    /// Why reading stopped, once it has.
    end: Option<Result<(), ReadError>>,
    /// The Unix time (µs) at which the log's clock read zero, when merging logs
    /// whose runs are known; else 0.
    epoch_us: u64,
    /// Whether the log is still being written, and its end is only where the
    /// bytes written so far end.
    following: bool,
}

/// What [`Conversation::step`] found.
enum Step {
    /// A record: the conversation's current one.
    Record,
    /// Nothing more yet (only while following).
    NotYet,
    /// The log has ended, or reading it has failed.
    End,
}

/// What [`Conversation::piece`] found.
enum Piece<'a> {
    Bytes(&'a [u8]),
    /// The payload has been read.
    Done,
    /// The rest of the payload is not written yet (only while following).
    NotYet,
}

impl<R: Read> Conversation<R> {
    fn new(input: R, label: Label) -> Conversation<R> {
        Conversation::with_reader(Reader::new(input), label)
    }

    /// A conversation that is one of many read side by side (merged, or a run
    /// followed): with a small read buffer, so that a thousand logs hold 16 MiB.
    fn side_by_side(input: R, label: Label) -> Conversation<R> {
        Conversation::with_reader(Reader::with_buffer(input, SIDE_BY_SIDE_BUFFER), label)
    }

    fn with_reader(reader: Reader<R>, label: Label) -> Conversation<R> {
        Conversation {
            reader: reader.keep_payload(false),
            label,
            current: None,
            stream: [0; 2],
            end: None,
            epoch_us: 0,
            following: false,
        }
    }

    /// Reads the log as it is written (see [`Reader::follow`]).
    fn follow(mut self) -> Conversation<R> {
        self.reader = self.reader.follow(true);
        self.following = true;
        self
    }

    /// Reads the next record; false once the log has ended.
    fn advance(&mut self) -> bool {
        matches!(self.step(), Step::Record)
    }

    /// Reads the next record, if it is there.
    fn step(&mut self) -> Step {
        if let Some(Record {
            side,
            event: Event::Data(n),
            ..
        }) = self.current
        {
            self.stream[side.index()] += n as u64;
        }
        self.current = None;
        if self.end.is_some() {
            return Step::End;
        }
        match self.reader.next_record() {
            Ok(Some(rec)) => {
                self.current = Some(rec);
                Step::Record
            }
            Ok(None) if self.following => Step::NotYet,
            Ok(None) => {
                self.end = Some(Ok(()));
                Step::End
            }
            Err(e) => {
                self.end = Some(Err(e));
                Step::End
            }
        }
    }

    /// The next piece of the current record's payload. Where the log ends inside
    /// it, or cannot be read, the payload is done and the error kept for the end
    /// of the log.
    fn piece(&mut self) -> Piece<'_> {
        let len = match self.reader.payload_piece(PIECE) {
            Ok(piece) => piece.len(),
            Err(e) => {
                self.end = Some(Err(e));
                return Piece::Done;
            }
        };
        match len {
            0 if self.reader.payload_left() > 0 => Piece::NotYet,
            0 => Piece::Done,
            // The piece just read, which the reader holds.
            _ => Piece::Bytes(self.reader.payload()),
        }
    }

    /// Whether the log holds its connection's end: both `hup`s, or an `err`.
    fn is_complete(&self) -> bool {
        self.reader.summary().is_complete()
    }

    /// Where the current record goes in a timeline of several logs: its time on
    /// the wall clock when the log's run start is known, else on the log's clock.
    fn current_key(&self) -> u64 {
        let time = self.current.map(|r| r.time).unwrap_or_default();
        self.epoch_us.saturating_add(time.0)
    }

    /// How the log ended; call once, after `advance` has returned false.
    fn take_end(&mut self) -> Finished {
        Finished {
            complete: self.reader.summary().is_complete(),
            end: self.end.take().unwrap_or(Ok(())),
        }
    }
}

/// How a log that has been read to its end ended.
struct Finished {
    /// Whether the log holds its connection's end.
    complete: bool,
    end: Result<(), ReadError>,
}

impl From<Finished> for End {
    fn from(finished: Finished) -> End {
        match finished.end {
            Ok(()) => End::Clean,
            Err(e @ ReadError::Truncated { .. }) => End::Truncated(e),
            Err(e) => End::Failed(e),
        }
    }
}

/// The styles of one side: its header lines and its payload.
#[derive(Clone, Copy, Debug, Default)]
struct SideStyle {
    header: Style,
    paint: Paint,
}

/// Records as text lines, payloads as escaped text or hex dumps.
struct Text {
    opts: Options,
    /// Indexed by [`Side::index`].
    sides: [SideStyle; 2],
    note: Style,
    /// The payload being written.
    payload: Option<Payload>,
}

/// Where a payload being written stands.
enum Payload {
    Text(TextWriter),
    Hex(HexWriter),
}

/// Indentation of payload lines under their header.
const INDENT: &str = "    ";

impl Text {
    fn new(opts: &Options) -> Text {
        let side = |color: AnsiColor| {
            let text = Style::new().fg_color(Some(color.into()));
            SideStyle {
                header: text.bold(),
                paint: Paint {
                    text,
                    escape: text.dimmed(),
                },
            }
        };
        let (sides, note) = if opts.color {
            ([side(AnsiColor::Green), side(AnsiColor::Magenta)], Style::new().bold())
        } else {
            Default::default()
        };
        Text {
            opts: *opts,
            sides,
            note,
            payload: None,
        }
    }
}

impl Form for Text {
    fn shows(&self, side: Side) -> bool {
        self.opts.side.is_none_or(|s| s == side)
    }

    fn header(&mut self, out: &mut dyn Write, log: &Label, rec: &Record, stream: u64) -> io::Result<()> {
        let tag = &log.tag;
        let style = self.sides[rec.side.index()];
        let header = style.header;
        let (time, side) = (rec.time, rec.side.name());
        match rec.event {
            Event::Con => writeln!(out, "{tag}{header}{time} {side} connected{header:#}"),
            Event::Hup => writeln!(out, "{tag}{header}{time} {side} hung up{header:#}"),
            Event::Err => writeln!(out, "{tag}{header}{time} {side} error{header:#}"),
            Event::Data(n) => {
                let unit = if n == 1 { "byte" } else { "bytes" };
                writeln!(out, "{tag}{header}{time} {side} {n} {unit}{header:#}")?;
                let prefix = format!("{tag}{INDENT}");
                self.payload = Some(if self.opts.hex {
                    Payload::Hex(HexWriter::new(stream, &prefix, style.paint))
                } else {
                    Payload::Text(TextWriter::new(&prefix, style.paint))
                });
                Ok(())
            }
        }
    }

    fn piece(&mut self, mut out: &mut dyn Write, piece: &[u8]) -> io::Result<()> {
        match &mut self.payload {
            Some(Payload::Text(text)) => text.write(&mut out, piece),
            Some(Payload::Hex(hex)) => hex.write(&mut out, piece),
            None => Ok(()),
        }
    }

    fn end_payload(&mut self, mut out: &mut dyn Write) -> io::Result<()> {
        match self.payload.take() {
            Some(Payload::Text(mut text)) => text.finish(&mut out),
            Some(Payload::Hex(mut hex)) => hex.finish(&mut out),
            None => Ok(()),
        }
    }

    fn note(&mut self, out: &mut dyn Write, log: &Label, finished: &Finished) -> io::Result<()> {
        let (tag, note) = (&log.tag, self.note);
        match &finished.end {
            Ok(()) if finished.complete => Ok(()),
            Ok(()) => writeln!(
                out,
                "{tag}{note}-- the log ends here, before the connection did \
                 (still open, or the recording stopped){note:#}"
            ),
            Err(e @ ReadError::Truncated { .. }) => writeln!(out, "{tag}{note}-- the log is cut short: {e}{note:#}"),
            Err(e) => writeln!(out, "{tag}{note}-- {e}{note:#}"),
        }
    }

    fn ended(&mut self, out: &mut dyn Write, log: &Label) -> io::Result<()> {
        let (tag, note) = (&log.tag, self.note);
        writeln!(out, "{tag}{note}-- the connection has ended{note:#}")
    }
}

/// One side's payload bytes alone, as they were sent.
struct Raw {
    side: Side,
}

impl Form for Raw {
    fn shows(&self, side: Side) -> bool {
        side == self.side
    }

    fn header(&mut self, _: &mut dyn Write, _: &Label, _: &Record, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn piece(&mut self, out: &mut dyn Write, piece: &[u8]) -> io::Result<()> {
        out.write_all(piece)
    }

    fn end_payload(&mut self, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    /// Raw output has no room for notes: [`Problems::report`] gives them on stderr.
    fn note(&mut self, _: &mut dyn Write, _: &Label, _: &Finished) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `netrecord show`.
pub fn run(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => anstream::AutoStream::choice(&stdout) != anstream::ColorChoice::Never,
    };
    let opts = Options {
        hex: args.hex,
        side: args.side.map(Side::from),
        color,
    };
    let logs = logs_in_order(&args.logs);
    let mut form = match (args.raw, args.json) {
        (Some(side), _) => AnyForm::Raw(Raw { side: side.into() }),
        (None, true) => AnyForm::Json(Json::new(opts.side)),
        (None, false) => AnyForm::Text(Text::new(&opts)),
    };
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    if args.follow {
        return follow::run(&args.logs, form, &mut out);
    }
    let mut problems = Problems::default();
    let numbers = connection_numbers(&logs);
    if args.merge {
        crate::process::raise_open_files_limit();
        if numbers.is_none() && matches!(form, AnyForm::Text(_)) {
            // Without a `_N` on every file (or with repeated ones) the tags are
            // positions, so say which file each one is.
            for (i, path) in logs.iter().enumerate() {
                writeln!(out, "==> [{}] {} <==", i + 1, escape::path(path)).context("failed to write to stdout")?;
            }
        }
        let numbers = numbers.unwrap_or_else(|| (1..=logs.len() as u64).collect());
        let width = tag_width(numbers.iter().copied());
        let epochs = run_starts(&logs);
        let mut convs = Vec::new();
        let mut paths = Vec::new();
        for ((path, n), epoch_us) in logs.iter().zip(numbers).zip(epochs) {
            if let Some(file) = problems.open(path) {
                let mut conv = Conversation::side_by_side(file, Label::tagged(n, width));
                conv.epoch_us = epoch_us;
                convs.push(conv);
                paths.push(path);
            }
        }
        let ends = show_merged(&mut form, convs, &mut out).context("failed to write to stdout")?;
        for (path, end) in paths.into_iter().zip(ends) {
            problems.add(path, end);
        }
    } else {
        let numbers = numbers.unwrap_or_else(|| (1..=logs.len() as u64).collect());
        for (i, (path, n)) in logs.iter().zip(numbers).enumerate() {
            if logs.len() > 1 && matches!(form, AnyForm::Text(_)) {
                let gap = if i > 0 { "\n" } else { "" };
                writeln!(out, "{gap}==> {} <==", escape::path(path)).context("failed to write to stdout")?;
            }
            if let Some(file) = problems.open(path) {
                let conv = Conversation::new(file, Label::plain(n));
                let end = show_one(&mut form, conv, &mut out).context("failed to write to stdout")?;
                problems.add(path, end);
            }
        }
    }
    out.flush().context("failed to write to stdout")?;
    Ok(problems.report(!matches!(form, AnyForm::Text(_))))
}

/// The form `show` writes in, chosen by the options.
enum AnyForm {
    Text(Text),
    Raw(Raw),
    Json(Json),
}

impl AnyForm {
    fn form(&mut self) -> &mut dyn Form {
        match self {
            AnyForm::Text(f) => f,
            AnyForm::Raw(f) => f,
            AnyForm::Json(f) => f,
        }
    }
}

impl Form for AnyForm {
    fn shows(&self, side: Side) -> bool {
        match self {
            AnyForm::Text(f) => f.shows(side),
            AnyForm::Raw(f) => f.shows(side),
            AnyForm::Json(f) => f.shows(side),
        }
    }

    fn header(&mut self, out: &mut dyn Write, log: &Label, rec: &Record, stream: u64) -> io::Result<()> {
        self.form().header(out, log, rec, stream)
    }

    fn piece(&mut self, out: &mut dyn Write, piece: &[u8]) -> io::Result<()> {
        self.form().piece(out, piece)
    }

    fn end_payload(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.form().end_payload(out)
    }

    fn note(&mut self, out: &mut dyn Write, log: &Label, end: &Finished) -> io::Result<()> {
        self.form().note(out, log, end)
    }

    fn ended(&mut self, out: &mut dyn Write, log: &Label) -> io::Result<()> {
        self.form().ended(out, log)
    }
}

/// When, on the wall clock, the clock of each log's run started (µs since the
/// Unix epoch), so that logs of different runs (a restart on the same root starts
/// a new clock at zero) merge in the order they happened; from the run indexes.
///
/// A log without an entry (still open) in an index of one run is taken to be of
/// that run; in an index of several, of the latest (with a note); in an index
/// with no entries yet, of the one run there has been. When some log's run
/// cannot be known, every log is merged by its own clock (all zeros), and one
/// note says that logs of different runs cannot be ordered against each other.
fn run_starts(logs: &[impl AsRef<Path>]) -> Vec<u64> {
    if logs.len() < 2 {
        return vec![0; logs.len()];
    }
    let mut runs = crate::runs::Runs::new();
    let mut starts = Vec::with_capacity(logs.len());
    let mut guessed: Option<(PathBuf, usize)> = None;
    let mut unknown = None;
    for log in logs {
        let log = log.as_ref();
        let start = match runs.find(log, &mut |note| say!("{note}")) {
            Found::Entry { epoch_us, .. } => Ok(Some(epoch_us)),
            Found::NoEntry { index, starts } => match starts {
                // An index without entries is that of a run whose connections
                // are all still open: the one run there has been.
                [] => Ok(None),
                [start] => Ok(Some(*start)),
                [.., latest] => {
                    guessed.get_or_insert_with(|| (index.to_path_buf(), 0)).1 += 1;
                    Ok(Some(*latest))
                }
            },
            Found::NotNamed => Err(format!(
                "{} is not named <root>_<N>, so it has no run index",
                escape::path(log)
            )),
            Found::Missing { index } => Err(format!("there is no run index {}", escape::path(index))),
            Found::Unreadable { index, error } => Err(format!(
                "the run index {} cannot be read ({error})",
                escape::path(index)
            )),
        };
        match start {
            Ok(start) => starts.push(start),
            Err(why) => {
                unknown.get_or_insert(why);
                starts.push(None);
            }
        }
    }
    let cannot = "logs of different runs cannot be ordered against each other";
    if let Some(why) = unknown {
        say!("{why}: the logs are merged by their own clocks, which start at zero with each run; {cannot}");
        return vec![0; logs.len()];
    }
    if starts.iter().all(Option::is_none) {
        // Logs of one run without any entry yet: their own clock is the run's.
        return vec![0; logs.len()];
    }
    if starts.iter().any(Option::is_none) {
        say!(
            "some logs are of a run with no entries in its index yet, others of runs with entries: \
             the logs are merged by their own clocks, which start at zero with each run; {cannot}"
        );
        return vec![0; logs.len()];
    }
    if let Some((index, n)) = guessed {
        say!(
            "{n} of the logs have no entry in {} (still open?): they are merged as part of its latest run; \
             if they are of another, {cannot}",
            escape::path(&index)
        );
    }
    starts.into_iter().map(|s| s.unwrap_or(0)).collect()
}

/// What went wrong with which log, reported on stderr after the output.
#[derive(Default)]
struct Problems {
    /// Logs cut short: not errors, but worth a note where the output has none.
    truncated: Vec<String>,
    failed: Vec<String>,
}

impl Problems {
    fn open(&mut self, path: &Path) -> Option<File> {
        match File::open(path) {
            Ok(file) => Some(file),
            Err(e) => {
                self.failed
                    .push(format!("failed to open log {}: {e}", escape::path(path)));
                None
            }
        }
    }

    fn add(&mut self, path: &Path, end: End) {
        match end {
            End::Clean => {}
            End::Truncated(e) => self
                .truncated
                .push(format!("log {} is cut short: {e}", escape::path(path))),
            End::Failed(e @ ReadError::Io(_)) => self
                .failed
                .push(format!("failed to read log {}: {e}", escape::path(path))),
            End::Failed(e) => self.failed.push(format!("invalid log {}: {e}", escape::path(path))),
        }
    }

    /// Prints the problems and gives the exit status. Cut-short logs are noted
    /// only for raw and JSON output (`quiet`), whose stdout has no room for a note.
    fn report(&self, quiet: bool) -> ExitCode {
        if quiet {
            for line in &self.truncated {
                say!("{line}");
            }
        }
        for line in &self.failed {
            say!("{line}");
        }
        if self.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] =
        b"c 0.000104 con\nc 0.000231 6\nPING\r\ns 0.000390 7\n+PONG\r\nc 1.204551 hup\ns 1.204602 hup\n";

    fn show(log: &[u8], opts: Options) -> (String, End) {
        let mut out = Vec::new();
        let end = render(log, &mut out, &opts).unwrap();
        (String::from_utf8(out).unwrap(), end)
    }

    #[test]
    fn text_shows_headers_and_escaped_payloads() {
        let (out, end) = show(EXAMPLE, Options::default());
        assert!(matches!(end, End::Clean));
        assert_eq!(
            out,
            "0.000104 client connected\n\
             0.000231 client 6 bytes\n    PING\\r\\n\n\
             0.000390 server 7 bytes\n    +PONG\\r\\n\n\
             1.204551 client hung up\n\
             1.204602 server hung up\n"
        );
    }

    #[test]
    fn side_filter_keeps_one_side() {
        let opts = Options {
            side: Some(Side::Server),
            ..Options::default()
        };
        let (out, _) = show(EXAMPLE, opts);
        assert_eq!(
            out,
            "0.000390 server 7 bytes\n    +PONG\\r\\n\n1.204602 server hung up\n"
        );
    }

    #[test]
    fn hex_offsets_count_each_side_stream() {
        let log = b"c 0.000001 con\nc 0.000002 3\nabcs 0.000003 2\nxyc 0.000004 2\nde";
        let opts = Options {
            hex: true,
            ..Options::default()
        };
        let (out, _) = show(log, opts);
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(INDENT)).collect();
        assert_eq!(rows.len(), 3);
        // Client bytes 0-2, server bytes 0-1, then client bytes 3-4 in the same row
        // of the client stream, after three blank columns.
        assert!(rows[0].starts_with("    00000000  61 62 63  "), "{}", rows[0]);
        assert!(rows[1].starts_with("    00000000  78 79  "), "{}", rows[1]);
        assert!(rows[2].starts_with("    00000000           64 65  "), "{}", rows[2]);
        assert!(rows[2].ends_with("|   de|"), "{}", rows[2]);
    }

    #[test]
    fn raw_writes_exactly_one_side() {
        let mut payloads = Vec::new();
        let mut log = b"c 0.000001 con\n".to_vec();
        for i in 0..=255u8 {
            let side = if i % 3 == 0 { 's' } else { 'c' };
            log.extend_from_slice(format!("{side} 0.{:06} 2\n", u32::from(i) + 2).as_bytes());
            log.extend_from_slice(&[i, 255 - i]);
            if side == 's' {
                payloads.extend_from_slice(&[i, 255 - i]);
            }
        }
        let mut out = Vec::new();
        let end = write_raw(&log[..], Side::Server, &mut out).unwrap();
        assert!(matches!(end, End::Clean), "{end:?}");
        assert_eq!(out, payloads);
    }

    #[test]
    fn an_open_or_cut_log_is_shown_with_a_note() {
        let (out, end) = show(&EXAMPLE[..54], Options::default());
        assert!(matches!(end, End::Clean));
        assert!(out.ends_with("    +PONG\\r\\n\n-- the log ends here, before the connection did (still open, or the recording stopped)\n"), "{out}");
        let (out, end) = show(&EXAMPLE[..50], Options::default());
        assert!(
            matches!(end, End::Truncated(ReadError::Truncated { offset: 34, .. })),
            "{end:?}"
        );
        // The bytes of the record cut short are shown, then the note.
        assert!(out.ends_with("    PING\\r\\n\n0.000390 server 7 bytes\n    +PO\n-- the log is cut short: truncated record at byte 34: the payload ends after 3 of 7 bytes\n"), "{out}");
    }

    #[test]
    fn a_corrupt_log_is_shown_up_to_the_bad_record() {
        let mut log = EXAMPLE.to_vec();
        log[34] = b'x';
        let (out, end) = show(&log, Options::default());
        assert!(
            matches!(end, End::Failed(ReadError::Corrupt { offset: 34, .. })),
            "{end:?}"
        );
        assert!(
            out.ends_with("    PING\\r\\n\n-- corrupt record at byte 34: side is 'x', not `c` or `s`\n"),
            "{out}"
        );
    }

    #[test]
    fn color_paints_the_sides_differently_and_only_when_asked() {
        let (plain, _) = show(EXAMPLE, Options::default());
        assert!(!plain.contains('\x1b'));
        let opts = Options {
            color: true,
            ..Options::default()
        };
        let (colored, _) = show(EXAMPLE, opts);
        let client = colored.lines().find(|l| l.contains("client 6 bytes")).unwrap();
        let server = colored.lines().find(|l| l.contains("server 7 bytes")).unwrap();
        assert!(client.starts_with("\x1b[") && server.starts_with("\x1b["));
        assert_ne!(client.split("0.").next(), server.split("0.").next());
    }

    #[test]
    fn merge_orders_by_time_and_tags_every_line() {
        let a = b"c 0.000001 con\nc 0.000005 2\nhic 0.000009 hup\ns 0.000009 hup\n";
        let b = b"c 0.000003 con\ns 0.000005 3\nyo\nc 0.000006 hup\n";
        let mut out = Vec::new();
        let ends = render_merged(vec![(1, &a[..]), (12, &b[..])], &mut out, &Options::default()).unwrap();
        assert!(matches!(ends[..], [End::Clean, End::Clean]));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1]  0.000001 client connected\n\
             [12] 0.000003 client connected\n\
             [1]  0.000005 client 2 bytes\n\
             [1]      hi\n\
             [12] 0.000005 server 3 bytes\n\
             [12]     yo\\n\n\
             [12] 0.000006 client hung up\n\
             [12] -- the log ends here, before the connection did (still open, or the recording stopped)\n\
             [1]  0.000009 client hung up\n\
             [1]  0.000009 server hung up\n"
        );
    }
}
