//! Tests of `netrecord check`: sessions recorded through the proxy, checked by the
//! built binary.

use netrecord::log::Side;

use crate::show::{arg, netrecord, records};
use crate::util::*;

#[test]
fn a_recorded_log_is_valid_and_summarised() {
    let (dir, log) = record_exchange(b"PING\r\n", b"+PONG\r\n");
    let expected = valid_log(&log);
    // As from `check rec_*`: the run index is not a log and is left out.
    let index = dir.path().join("rec_index.jsonl");
    assert!(index.exists());
    let out = netrecord(&["check", arg(&index), arg(&log)]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let text = out.text();
    let prefix = format!(
        "{}: valid, {} records, client 6 bytes, server 7 bytes, ",
        log.display(),
        expected.summary.records
    );
    assert!(text.starts_with(&prefix), "{text}");
    assert!(text.ends_with(" s, client hup, server hup\n"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn a_truncated_log_is_valid_and_says_so() {
    let (dir, log) = record_exchange(b"ping", b"pong pong");
    let (rec, header) = records(&log)
        .into_iter()
        .find(|(r, _)| r.side == Side::Server)
        .expect("a server record");
    let bytes = std::fs::read(&log).unwrap();
    let cut = dir.path().join("cut_1");
    std::fs::write(&cut, &bytes[..rec.offset as usize + header + 2]).unwrap();
    let out = netrecord(&["check", arg(&cut)]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.text();
    let ending = format!(
        ", truncated at byte {} (the payload ends after 2 of 9 bytes)\n",
        rec.offset
    );
    assert!(text.starts_with(&format!("{}: valid, ", cut.display())), "{text}");
    assert!(text.ends_with(&ending), "{text}");
}

#[test]
fn a_corrupt_log_fails_naming_the_byte_offset() {
    let (dir, log) = record_exchange(b"ping", b"pong");
    let (rec, _) = records(&log).into_iter().find(|(r, _)| r.side == Side::Server).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    // The header's time: `s 0.000123 4` becomes `s 0:000123 4`.
    let dot = rec.offset as usize + bytes[rec.offset as usize..].iter().position(|&b| b == b'.').unwrap();
    bytes[dot] = b':';
    let bad = dir.path().join("bad_1");
    std::fs::write(&bad, bytes).unwrap();
    let out = netrecord(&["check", arg(&log), arg(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&format!("{}: valid, ", log.display())), "{text}");
    assert_eq!(
        lines[1],
        format!(
            "{}: invalid, corrupt record at byte {}: expected '.', found ':'",
            bad.display(),
            rec.offset
        )
    );
    assert_eq!(out.stderr, "netrecord: 1 of 2 logs not valid\n");
}

#[test]
fn a_missing_log_is_reported_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("rec_9");
    let out = netrecord(&["check", arg(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.text()
            .starts_with(&format!("{}: unreadable, failed to open: ", missing.display())),
        "{}",
        out.text()
    );
}

#[test]
fn counts_are_the_bytes_that_are_there() {
    let (dir, log) = record_exchange(b"ping", b"hello");
    let (rec, header) = records(&log)
        .into_iter()
        .find(|(r, _)| r.side == Side::Server)
        .expect("a server record");
    assert_eq!(rec.event, netrecord::log::Event::Data(5));
    let bytes = std::fs::read(&log).unwrap();
    // Cut after 2 of the server's 5 bytes.
    let cut = dir.path().join("cut_1");
    std::fs::write(&cut, &bytes[..rec.offset as usize + header + 2]).unwrap();
    let out = netrecord(&["check", arg(&cut)]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = out.text();
    assert!(text.contains(", client 4 bytes, server 2 bytes, "), "{text}");
    assert!(text.ends_with("(the payload ends after 2 of 5 bytes)\n"), "{text}");

    // A count no file could hold is no record cut short: it is corrupt.
    let mut bad = bytes[..rec.offset as usize].to_vec();
    bad.extend_from_slice(b"s 9.000000 18446744073709551615\nhello");
    let bad_path = dir.path().join("bad_1");
    std::fs::write(&bad_path, bad).unwrap();
    let out = netrecord(&["check", arg(&bad_path)]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.text(),
        format!(
            "{}: invalid, corrupt record at byte {}: byte count 18446744073709551615 is larger than any file can hold\n",
            bad_path.display(),
            rec.offset
        )
    );
}

#[test]
fn json_says_what_the_text_says() {
    let (dir, log) = record_exchange(b"PING\r\n", b"+PONG\r\n");
    let bytes = std::fs::read(&log).unwrap();
    let (rec, header) = records(&log).into_iter().find(|(r, _)| r.side == Side::Server).unwrap();
    let cut = dir.path().join("cut_1");
    std::fs::write(&cut, &bytes[..rec.offset as usize + header + 3]).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[rec.offset as usize] = b'x';
    let bad = dir.path().join("bad_1");
    std::fs::write(&bad, corrupt).unwrap();
    let missing = dir.path().join("missing_1");
    let logs = [arg(&log), arg(&cut), arg(&bad), arg(&missing)];

    let text = netrecord(&[&["check"][..], &logs].concat());
    let json = netrecord(&[&["check", "--json"][..], &logs].concat());
    assert_eq!(json.status.code(), Some(1));
    assert_eq!(json.stderr, text.stderr);
    let lines: Vec<String> = text.text().lines().map(str::to_string).collect();
    let objects: Vec<serde_json::Value> = json
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objects.len(), 4);
    for (line, object) in lines.iter().zip(&objects) {
        assert!(
            line.starts_with(&format!("{}: ", object["log"].as_str().unwrap())),
            "{line}"
        );
        let valid = object["valid"].as_bool().unwrap();
        assert_eq!(line.contains(": valid, "), valid, "{line} / {object}");
        if !valid {
            let error = &object["error"];
            let what = error["what"].as_str().unwrap();
            match error["kind"].as_str().unwrap() {
                "corrupt" => assert!(
                    line.ends_with(&format!("invalid, corrupt record at byte {}: {what}", error["offset"])),
                    "{line} / {object}"
                ),
                "unreadable" => assert!(line.ends_with(&format!("unreadable, {what}")), "{line} / {object}"),
                kind => panic!("kind {kind}"),
            }
            continue;
        }
        let records = object["records"].as_u64().unwrap();
        let duration = object["duration_us"].as_u64().unwrap();
        let summary = format!(
            "valid, {records} records, client {} bytes, server {} bytes, {}.{:06} s, ",
            object["client_bytes"],
            object["server_bytes"],
            duration / 1_000_000,
            duration % 1_000_000
        );
        assert!(line.contains(&summary), "{line} / {object}");
        assert_eq!(
            object["last_us"].as_u64().unwrap() - object["first_us"].as_u64().unwrap(),
            duration
        );
        match object["truncated"].as_object() {
            Some(cut) => assert!(
                line.ends_with(&format!(
                    "truncated at byte {} ({})",
                    cut["offset"],
                    cut["what"].as_str().unwrap()
                )),
                "{line} / {object}"
            ),
            None => assert!(
                line.ends_with(&format!(
                    "client {}, server {}",
                    object["client_end"].as_str().unwrap(),
                    object["server_end"].as_str().unwrap()
                )),
                "{line} / {object}"
            ),
        }
    }
    assert_eq!(objects[0]["complete"], true);
    assert_eq!(objects[1]["server_bytes"], 3);
    assert_eq!(objects[2]["error"]["offset"], rec.offset);
}
