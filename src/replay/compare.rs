//! Comparing the peer's live stream with its recording as the bytes arrive: the
//! judge of a replay. [`super::session`] feeds it what the peer sends and asks it
//! how far into the recording the peer has got, which decides when our next
//! recorded step goes out.
//!
//! The recorded stream is cut into segments: the runs of the peer's bytes with no
//! record of ours between them, such as one request or one reply. Within a segment
//! the two streams are compared byte for byte, except that a masked span (a match
//! of the [`Mask`]) in the recording and one in the live stream compare equal
//! whatever their bytes and lengths, so the live stream may be longer or shorter.
//!
//! After a difference, the bytes that follow are compared at the same alignment,
//! as if bytes had been replaced: once [`RESYNC`] bytes in a row agree again, the
//! difference is over and the comparison goes on as before, so that a changed
//! length field and a changed timestamp in one reply are two differences. If they
//! never agree again before the recorded segment ends (bytes were inserted or
//! left out), the rest of the segment is not compared. A segment with a difference
//! ends, and the live peer counts as having sent it, once the peer has sent as
//! many bytes as the recorded segment has, or has been quiet for the settle time,
//! or has hung up: the next segment is then compared afresh. So a request shorter
//! than recorded is answered after the settle time instead of the whole timeout,
//! and every request of a session is judged on its own.
//!
//! A live match can grow with the next bytes (`Date: [^\r]*` before its `\r` has
//! come), and live bytes may be the start of a match not yet complete. So where
//! the recording has a masked span and the live stream has plain bytes, the
//! difference is only taken as one once [`LOOKAHEAD`] bytes follow it, or the peer
//! has been quiet for the settle time or has hung up; a live match that reaches
//! the end of what has come waits the same way. Without masks every difference is
//! final at once.

use std::ops::Range;

use super::mask::Mask;
use super::mismatch::{EXCERPT, Kind, Mismatch};
use super::script::Script;
use crate::log::Side;

/// With masks, the live bytes that must follow a difference (or a match) before
/// more bytes can no longer change it: longer than any masked value is expected
/// to be, and it bounds what is held waiting.
const LOOKAHEAD: usize = 64 * 1024;

/// How many bytes in a row must agree again, after a difference, for the
/// difference to be over: more than a chance agreement of binary bytes, fewer than
/// a header name.
const RESYNC: usize = 8;

/// Where the comparison of the current segment stands after a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Diverged {
    /// No difference open.
    No,
    /// In a difference: bytes compared at the same alignment, `agreed` of the
    /// last ones equal.
    Run { agreed: usize },
    /// The recorded segment ended inside a difference: its remaining live bytes
    /// are not compared.
    Skip,
}

/// The comparison of one live stream with the recording, as far as it has come.
pub struct Comparer<'a> {
    recorded: &'a [u8],
    ends: &'a [u64],
    spans: &'a [Range<u64>],
    their_hup: bool,
    mask: &'a Mask,
    peer: Side,
    /// The current segment, and where it starts in the recording and live.
    seg: usize,
    seg_start: u64,
    seg_live_start: u64,
    /// How far the recording has been compared, and its next masked span.
    r: u64,
    span: usize,
    /// Live bytes from offset `base` on: one byte of context for anchors, then
    /// from `cursor` the bytes not compared yet.
    pending: Vec<u8>,
    base: u64,
    cursor: usize,
    received: u64,
    /// Whether a difference is open in the current segment.
    diverged: Diverged,
    /// The last comparison stopped where more bytes, or quiet, will decide.
    waiting: bool,
    /// Bytes past a recorded hang-up were reported.
    extra: bool,
    masked: u64,
    found: Vec<Mismatch>,
    differences: u64,
    max: usize,
    /// The last difference's excerpt still takes the bytes that follow it.
    following: bool,
}

impl<'a> Comparer<'a> {
    /// A comparison of the peer's stream recorded in `script` (with the spans of
    /// `mask` applied to it), keeping the first `max` differences found.
    pub fn new(script: &'a Script, mask: &'a Mask, max: usize) -> Comparer<'a> {
        Comparer {
            recorded: script.theirs(),
            ends: script.segment_ends(),
            spans: script.masked_spans(),
            their_hup: script.their_hup(),
            mask,
            peer: script.us.other(),
            seg: 0,
            seg_start: 0,
            seg_live_start: 0,
            r: 0,
            span: 0,
            pending: Vec::new(),
            base: 0,
            cursor: 0,
            received: 0,
            diverged: Diverged::No,
            waiting: false,
            extra: false,
            masked: 0,
            found: Vec::new(),
            differences: 0,
            max: max.max(1),
            following: false,
        }
    }

    /// Compares the next bytes the peer sent.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        self.pending.extend_from_slice(bytes);
        self.walk(false);
        self.compact();
    }

    /// The peer has been quiet for the settle time: what was waiting is decided.
    pub fn quiet(&mut self) {
        self.walk(true);
        self.compact();
    }

    /// The peer hung up: everything is decided, and recorded bytes it never sent
    /// are a difference.
    pub fn hang_up(&mut self) {
        self.walk(true);
        if self.seg < self.ends.len() {
            let m = self.mismatch(Kind::HungUpEarly {
                recorded: self.recorded.len() as u64,
            });
            self.push(m);
        }
        self.compact();
    }

    /// Adds a departure the session saw (the peer went silent, the connection
    /// failed) to the differences.
    pub fn report(&mut self, kind: Kind) {
        let m = self.mismatch(kind);
        self.push(m);
        self.following = false;
    }

    /// How far into the recorded stream the peer has got.
    pub fn progress(&self) -> u64 {
        self.r
    }

    /// The live offset compared up to.
    pub fn live_offset(&self) -> u64 {
        self.base + self.cursor as u64
    }

    /// Bytes received from the peer, compared or not.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Masked spans that compared equal.
    pub fn masked(&self) -> u64 {
        self.masked
    }

    /// Differences found, reported or not.
    pub fn differences(&self) -> u64 {
        self.differences
    }

    /// Whether the peer's quiet would decide something now open.
    pub fn needs_quiet(&self) -> bool {
        self.waiting || self.diverged != Diverged::No
    }

    /// Whether the bytes are compared in lockstep with the recording, so that no
    /// more than the recording's remaining bytes need be read.
    pub fn in_lockstep(&self) -> bool {
        self.mask.is_empty() && self.diverged == Diverged::No
    }

    /// Whether the first segment was sent as recorded: the whole of it, nothing
    /// differing.
    pub fn first_segment_matched(&self) -> bool {
        self.differences == 0 && (self.seg > 0 || self.ends.is_empty())
    }

    /// The recorded bytes the peer matched before its first difference.
    pub fn matched_before_difference(&self) -> u64 {
        self.found.first().map_or(self.r, |m| m.offset)
    }

    /// The differences kept (the first `max`) and their total count.
    pub fn into_differences(self) -> (Vec<Mismatch>, u64) {
        (self.found, self.differences)
    }

    /// Compares what has come, as far as it can be decided; `settle` decides what
    /// would otherwise wait for more bytes.
    fn walk(&mut self, settle: bool) {
        self.waiting = false;
        loop {
            let avail = self.pending.len() - self.cursor;
            let Some(&end) = self.ends.get(self.seg) else {
                self.past_the_end(avail);
                return;
            };
            match self.diverged {
                Diverged::No => {}
                Diverged::Run { agreed } => {
                    if self.r == end {
                        self.diverged = Diverged::Skip;
                    } else if avail == 0 {
                        if !settle {
                            return;
                        }
                        self.close_segment();
                    } else {
                        self.run(agreed, end);
                    }
                    continue;
                }
                Diverged::Skip => {
                    // The rest of the segment takes the bytes as they come, up to
                    // whole reads: a request sent at once is judged at once.
                    let live_len = self.live_offset() + avail as u64 - self.seg_live_start;
                    self.consume(avail);
                    if live_len >= end - self.seg_start || settle {
                        self.close_segment();
                        continue;
                    }
                    return;
                }
            }
            if self.r == end {
                self.close_segment();
                continue;
            }
            if avail == 0 {
                return;
            }
            let recorded_span = self.spans.get(self.span).filter(|s| s.start < end).cloned();
            let rs = recorded_span.as_ref().map_or(end, |s| s.start);
            let live_match = self.live_match();
            let ls = live_match.as_ref().map_or(self.pending.len(), |m| m.start);
            // The recording has a masked span here, the live stream a match.
            let recorded_masked = self.r == rs;
            let live_masked = self.cursor == ls;
            match (recorded_span, live_match) {
                _ if !recorded_masked && !live_masked => {
                    let n = ((rs - self.r) as usize).min(ls - self.cursor);
                    let recorded = &self.recorded[self.r as usize..][..n];
                    let live = &self.pending[self.cursor..][..n];
                    let same = recorded.iter().zip(live).position(|(a, b)| a != b).unwrap_or(n);
                    self.r += same as u64;
                    self.cursor += same;
                    if same < n {
                        // Plain bytes against plain bytes: no later byte changes that.
                        self.differ();
                    }
                }
                (Some(span), Some(m)) if recorded_masked && live_masked => {
                    if m.end == self.pending.len() && !settle && m.len() < LOOKAHEAD {
                        self.waiting = true;
                        return;
                    }
                    self.masked += 1;
                    self.r = span.end;
                    self.span += 1;
                    self.cursor = m.end;
                }
                _ if recorded_masked && !settle && avail < LOOKAHEAD => {
                    // Plain bytes live where a span was recorded: they may yet
                    // become the start of a match.
                    self.waiting = true;
                    return;
                }
                _ => self.differ(),
            }
        }
    }

    /// Goes on through a difference at the same alignment, until [`RESYNC`] bytes
    /// agree, or the recorded segment (at `end`) or the bytes come to an end.
    fn run(&mut self, mut agreed: usize, end: u64) {
        let n = ((end - self.r) as usize).min(self.pending.len() - self.cursor);
        let recorded = &self.recorded[self.r as usize..][..n];
        let live = &self.pending[self.cursor..][..n];
        let mut taken = n;
        for (i, (a, b)) in recorded.iter().zip(live).enumerate() {
            agreed = if a == b { agreed + 1 } else { 0 };
            if agreed == RESYNC {
                taken = i + 1;
                break;
            }
        }
        self.r += taken as u64;
        self.consume(taken);
        if agreed == RESYNC {
            self.diverged = Diverged::No;
            self.following = false;
            // Spans the difference ran into are passed.
            while self.spans.get(self.span).is_some_and(|s| s.start < self.r) {
                self.span += 1;
            }
        } else {
            self.diverged = Diverged::Run { agreed };
        }
    }

    /// The first live match at or after the cursor, in `pending`'s indices. The
    /// haystack starts at the segment's start, as the recorded one does.
    fn live_match(&self) -> Option<Range<usize>> {
        let from = self.seg_live_start.saturating_sub(self.base) as usize;
        let m = self.mask.find(&self.pending[from..], self.cursor - from)?;
        Some(m.start + from..m.end + from)
    }

    /// Records a difference at the current offsets, and starts going through it.
    /// The excerpt expected ends with the segment: the recorded reply, not the
    /// next one.
    fn differ(&mut self) {
        let avail = self.pending.len() - self.cursor;
        let (r, end) = (self.r as usize, self.ends[self.seg] as usize);
        let kind = Kind::Differs {
            expected: self.recorded[r..(r + EXCERPT).min(end)].to_vec(),
            got: self.pending[self.cursor..][..avail.min(EXCERPT)].to_vec(),
        };
        let m = self.mismatch(kind);
        self.push(m);
        self.diverged = Diverged::Run { agreed: 0 };
    }

    /// Bytes after the whole recorded stream: a difference if the recording has
    /// the peer hang up there, and not ours to judge if it does not.
    fn past_the_end(&mut self, avail: usize) {
        if avail == 0 {
            return;
        }
        if self.their_hup && !self.extra {
            self.extra = true;
            let got = self.pending[self.cursor..][..avail.min(EXCERPT)].to_vec();
            let m = self.mismatch(Kind::Extra { got });
            self.push(m);
        }
        self.consume(avail);
    }

    fn close_segment(&mut self) {
        let end = self.ends[self.seg];
        self.r = end;
        while self.spans.get(self.span).is_some_and(|s| s.start < end) {
            self.span += 1;
        }
        self.seg += 1;
        self.seg_start = end;
        self.seg_live_start = self.live_offset();
        self.diverged = Diverged::No;
        self.following = false;
    }

    /// Moves the cursor over `n` bytes that are not compared, adding them to the
    /// last difference's excerpt if it still takes bytes.
    fn consume(&mut self, n: usize) {
        if self.following
            && let Some(last) = self.found.last_mut()
        {
            last.follow(self.base + self.cursor as u64, &self.pending[self.cursor..][..n]);
        }
        self.cursor += n;
    }

    /// Drops compared bytes, keeping one byte of context inside the segment.
    fn compact(&mut self) {
        let keep_context = self.cursor > 0 && self.live_offset() > self.seg_live_start;
        let drop = self.cursor - usize::from(keep_context);
        if drop > 0 {
            self.pending.drain(..drop);
            self.base += drop as u64;
            self.cursor -= drop;
        }
    }

    fn mismatch(&self, kind: Kind) -> Mismatch {
        Mismatch {
            side: self.peer,
            offset: self.r,
            live: self.live_offset(),
            kind,
        }
    }

    fn push(&mut self, m: Mismatch) {
        self.differences += 1;
        self.following = self.found.len() < self.max;
        if self.following {
            self.found.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;

    use super::*;

    /// A server script whose client sends `requests`, each answered with `ok`,
    /// and then hangs up.
    fn script(requests: &[&[u8]], mask: &Mask) -> Script {
        let mut log = b"c 0.000001 con\n".to_vec();
        for r in requests {
            log.extend_from_slice(format!("c 0.000002 {}\n", r.len()).as_bytes());
            log.extend_from_slice(r);
            log.extend_from_slice(b"s 0.000002 2\nok");
        }
        log.extend_from_slice(b"c 0.000003 hup\ns 0.000004 hup\n");
        let mut s = Script::read(Cursor::new(log), Path::new("t"), Side::Server).unwrap();
        s.apply_mask(mask);
        s
    }

    fn mask(p: &str) -> Mask {
        Mask::new(&[p.to_owned()], &[]).unwrap()
    }

    fn shown(c: Comparer) -> Vec<String> {
        c.into_differences().0.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn equal_streams_match_however_they_are_split() {
        let none = Mask::default();
        let s = script(&[b"GET a\r\n", b"GET b\r\n"], &none);
        let mut c = Comparer::new(&s, &none, 20);
        for b in b"GET a\r\nGET b\r\n" {
            c.feed(&[*b]);
        }
        assert_eq!(c.progress(), 14);
        c.hang_up();
        assert_eq!(c.differences(), 0);
        assert!(!c.needs_quiet());
    }

    #[test]
    fn masked_spans_compare_equal_whatever_their_length() {
        let m = mask("id=[0-9]+");
        let s = script(&[b"GET id=1;\r\n"], &m);
        let mut c = Comparer::new(&s, &m, 20);
        // The live match may grow until a byte after it has come.
        c.feed(b"GET id=12");
        assert_eq!(c.progress(), 4);
        assert!(c.needs_quiet());
        c.feed(b"345;\r\n");
        assert_eq!(c.progress(), 11);
        assert_eq!((c.differences(), c.masked()), (0, 1));
    }

    #[test]
    fn plain_bytes_where_a_span_was_recorded_wait_for_more_then_differ() {
        let m = mask("Date: [^\r]*");
        let s = script(&[b"x\r\nDate: Mon\r\n"], &m);
        let mut c = Comparer::new(&s, &m, 20);
        c.feed(b"x\r\nDa");
        assert_eq!(c.differences(), 0, "a match may still start here");
        c.feed(b"te: Tuesday\r\n");
        assert_eq!((c.differences(), c.masked(), c.progress()), (0, 1, 14));

        let mut c = Comparer::new(&s, &m, 20);
        c.feed(b"x\r\nNo date\r\n");
        assert_eq!(c.differences(), 0);
        c.quiet();
        assert_eq!(
            shown(c),
            [
                r#"client stream differs at offset 3: expected "Date: Mon\r\n" (44 61 74 65 3a 20 4d 6f 6e 0d 0a), got "No date\r\n" (4e 6f 20 64 61 74 65 0d 0a)"#
            ]
        );
    }

    #[test]
    fn a_differing_segment_ends_at_its_length_or_when_the_peer_is_quiet() {
        let none = Mask::default();
        let s = script(&[b"get greeting\r\n", b"PING\r\n"], &none);
        // Shorter: it ends when the peer is quiet, and the next one is compared afresh.
        let mut c = Comparer::new(&s, &none, 20);
        c.feed(b"get other\r\n");
        assert_eq!(c.differences(), 1);
        assert!(c.progress() < 14 && c.needs_quiet());
        c.quiet();
        assert_eq!(c.progress(), 14);
        c.feed(b"PING\r\n");
        assert_eq!((c.differences(), c.progress()), (1, 20));
        // Longer: the read that reaches the recorded length belongs to the segment.
        let mut c = Comparer::new(&s, &none, 20);
        c.feed(b"get greeting12\r\n");
        assert_eq!((c.differences(), c.progress()), (1, 14));
        c.feed(b"PONG\r\n");
        c.hang_up();
        let (found, count) = c.into_differences();
        assert_eq!(count, 2);
        assert_eq!((found[1].offset, found[1].live), (15, 17));
        assert!(found[0].to_string().contains(r#"got "12\r\n""#), "{}", found[0]);
    }

    #[test]
    fn the_excerpt_follows_bytes_after_a_difference_and_extra_bytes_are_reported() {
        let none = Mask::default();
        let s = script(&[b"hello world\r\n"], &none);
        let mut c = Comparer::new(&s, &none, 20);
        c.feed(b"hello w");
        c.feed(b"X");
        c.feed(b"rld\r\n");
        c.feed(b"more");
        c.hang_up();
        assert_eq!(
            shown(c),
            [
                r#"client stream differs at offset 7: expected "orld\r\n" (6f 72 6c 64 0d 0a), got "Xrld\r\n" (58 72 6c 64 0d 0a)"#,
                r#"client sent more than recorded: it hung up at offset 13 in the recording, but sent "more" (6d 6f 72 65)"#
            ]
        );
    }

    #[test]
    fn bytes_that_agree_again_end_a_difference() {
        let none = Mask::default();
        let s = script(&[b"Length: 16\r\nModified: 21:44:58\r\nhello over http\n"], &none);
        let mut c = Comparer::new(&s, &none, 20);
        c.feed(b"Length: 12\r\nModified: 21:45:07\r\nhello again\n");
        c.quiet();
        let found: Vec<_> = c.into_differences().0.iter().map(|m| (m.offset, m.live)).collect();
        // The length, the time, then the text that is shorter: the rest of it.
        assert_eq!(found, [(9, 9), (26, 26), (38, 38)]);
    }

    #[test]
    fn differences_beyond_the_limit_are_counted() {
        let none = Mask::default();
        let s = script(&[b"a\n", b"b\n", b"c\n"], &none);
        let mut c = Comparer::new(&s, &none, 2);
        for r in [b"x\n", b"y\n", b"z\n"] {
            c.feed(r);
        }
        c.hang_up();
        let (found, count) = c.into_differences();
        assert_eq!((found.len(), count), (2, 3));
    }
}
