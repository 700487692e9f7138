//! Masks: the parts of the peer's stream that are expected to change from run to
//! run (a `Date:` header, a session id) and compare equal whatever their bytes.
//!
//! A mask is a set of bytes regexes (`--mask REGEX`, `--mask-preset NAME`) joined
//! into one alternation. [`super::compare`] finds its matches in the recorded
//! stream and in the live one, and counts a match on one side against a match on
//! the other as equal, whatever their content and length. Unicode mode is off, so
//! a class such as `[^\r]` matches any byte but `\r`, as a binary protocol needs;
//! `(?u)` turns it back on inside a pattern.

use std::ops::Range;

use anyhow::bail;
use regex::bytes::{Regex, RegexBuilder};

use crate::cli::MaskPreset;

/// The regexes a replay masks the peer's stream with; possibly none.
#[derive(Clone, Debug, Default)]
pub struct Mask {
    regex: Option<Regex>,
}

impl MaskPreset {
    /// The regex this preset stands for.
    pub fn pattern(self) -> &'static str {
        match self {
            // Header names are case-insensitive; a header starts a line.
            MaskPreset::HttpDate => r"(?mi)^date:[^\r\n]*",
            MaskPreset::IsoTime => r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
            MaskPreset::Uuid => r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        }
    }
}

impl Mask {
    /// The mask of `patterns` and `presets`; no mask at all when both are empty.
    /// A pattern that does not parse, or that matches the empty string (it would
    /// mask nothing and everything), is an error naming it.
    pub fn new(patterns: &[String], presets: &[MaskPreset]) -> anyhow::Result<Mask> {
        let all: Vec<&str> = patterns
            .iter()
            .map(String::as_str)
            .chain(presets.iter().map(|p| p.pattern()))
            .collect();
        if all.is_empty() {
            return Ok(Mask::default());
        }
        for pattern in &all {
            if let Err(why) = Mask::check(pattern) {
                bail!("invalid mask {pattern:?}: {why}");
            }
        }
        let joined = all.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
        let regex = build(&joined).map_err(|e| anyhow::anyhow!("invalid masks: {}", reason(&e)))?;
        Ok(Mask { regex: Some(regex) })
    }

    /// Why `pattern` cannot be a mask, in one line, if it cannot.
    pub fn check(pattern: &str) -> Result<(), String> {
        let regex = build(pattern).map_err(|e| reason(&e))?;
        if regex.is_match(b"") {
            return Err("it matches the empty string".into());
        }
        Ok(())
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.regex.is_none()
    }

    /// The first non-empty match in `haystack` that starts at `from` or later.
    /// The bytes before `from` are context, for anchors such as `^` and `\b`.
    pub fn find(&self, haystack: &[u8], mut from: usize) -> Option<Range<usize>> {
        let regex = self.regex.as_ref()?;
        while from <= haystack.len() {
            let m = regex.find_at(haystack, from)?;
            if !m.is_empty() {
                return Some(m.range());
            }
            // A pattern such as `a|\b` can still match empty at some places.
            from = m.end() + 1;
        }
        None
    }

    /// Every match in `haystack`, in order.
    pub fn spans(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(span) = self.find(haystack, from) {
            from = span.end;
            spans.push(span);
        }
        spans
    }
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).unicode(false).build()
}

/// The regex crate's message, which quotes the pattern over several lines, as
/// its one line that says what is wrong.
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(patterns: &[&str]) -> Mask {
        Mask::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(), &[]).unwrap()
    }

    #[test]
    fn matches_are_found_in_bytes_with_context() {
        let m = mask(&[r"Date: [^\r]*", "id=[0-9]+"]);
        let hay = b"HTTP/1.1 200 OK\r\nDate: Mon, 1 Jan\r\nid=42;\xff";
        assert_eq!(
            m.spans(hay).iter().map(|r| &hay[r.clone()]).collect::<Vec<_>>(),
            [&b"Date: Mon, 1 Jan"[..], b"id=42"]
        );
        // Anchors see the bytes before `from`.
        let line = mask(&["(?m)^x"]);
        assert_eq!(line.find(b"ax\nx", 1), Some(3..4));
        // Unicode is off: a class matches any byte.
        assert_eq!(mask(&["[^;]+"]).find(b";\xff\xfe;", 0), Some(1..3));
    }

    #[test]
    fn presets_match_what_they_name() {
        let m = Mask::new(&[], &[MaskPreset::HttpDate, MaskPreset::IsoTime, MaskPreset::Uuid]).unwrap();
        let hay = b"HTTP/1.0 200 OK\r\ndate: Tue, 02 Dec 2025 10:00:00 GMT\r\n\
                    {\"at\":\"2025-12-02T10:00:00.5Z\",\"id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\"}";
        let found: Vec<_> = m.spans(hay).iter().map(|r| hay[r.clone()].to_vec()).collect();
        assert_eq!(
            found,
            [
                b"date: Tue, 02 Dec 2025 10:00:00 GMT".to_vec(),
                b"2025-12-02T10:00:00.5Z".to_vec(),
                b"0f8fad5b-d9cb-469f-a165-70867728950e".to_vec()
            ]
        );
    }

    #[test]
    fn bad_and_empty_matching_patterns_are_errors_in_one_line() {
        let e = Mask::new(&["(".into()], &[]).unwrap_err().to_string();
        assert_eq!(e, r#"invalid mask "(": unclosed group"#);
        let e = Mask::new(&["x*".into()], &[]).unwrap_err().to_string();
        assert!(e.contains("matches the empty string"), "{e}");
        assert!(Mask::new(&[], &[]).unwrap().is_empty());
        assert_eq!(Mask::default().find(b"abc", 0), None);
    }
}
