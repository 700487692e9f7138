//! The file a pcap is written to with `-o FILE`.
//!
//! A pcap holds the recorded traffic, passwords and tokens included, so it is
//! created with mode 0600, like the logs. An existing file is never replaced
//! unless `--force` says so, and even then only once the export has succeeded:
//! the pcap is written to a new file beside it, which is renamed over the old one
//! at the end. An export that fails leaves no pcap behind, and an existing file
//! as it was.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The output file while the export is written.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    /// What the export writes into.
    file: File,
    how: How,
}

#[derive(Debug)]
enum How {
    /// `path` did not exist and was created.
    New,
    /// `path` exists and is replaced by this file, written beside it.
    Replacing(PathBuf),
    /// `path` is a FIFO or a device (`/dev/null`), written in place.
    InPlace,
}

impl Output {
    /// Creates the output at `path`; `force` allows replacing an existing file.
    /// `name` is how messages call it.
    pub fn create(path: &Path, force: bool, name: &str) -> anyhow::Result<Output> {
        let refuse = || anyhow::anyhow!("refusing to replace {name}: the file exists (give --force to replace it)");
        let (file, how) = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match new_file(path) {
                Ok(file) => (file, How::New),
                // Created by someone else since the look.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(refuse()),
                Err(e) => return Err(e).with_context(|| format!("failed to create {name}")),
            },
            Err(e) => return Err(e).with_context(|| format!("failed to look at {name}")),
            Ok(_) if !force => return Err(refuse()),
            Ok(meta) if meta.is_dir() => anyhow::bail!("cannot write the pcap to {name}: it is a directory"),
            Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => {
                let temporary = temporary_path(path);
                let file = new_file(&temporary)
                    .with_context(|| format!("failed to create a file beside {name} to write the pcap in"))?;
                (file, How::Replacing(temporary))
            }
            Ok(_) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("failed to open {name}"))?;
                (file, How::InPlace)
            }
        };
        Ok(Output {
            path: path.to_path_buf(),
            file,
            how,
        })
    }

    /// The file to write the pcap into.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes the written pcap the output: renames it over the file it replaces.
    pub fn commit(self, name: &str) -> anyhow::Result<()> {
        if let How::Replacing(temporary) = &self.how
            && let Err(e) = fs::rename(temporary, &self.path)
        {
            let _ = fs::remove_file(temporary);
            return Err(e).with_context(|| format!("failed to replace {name}"));
        }
        Ok(())
    }

    /// Removes what was written: a pcap that stops partway through would pass for
    /// the whole export.
    pub fn discard(self) {
        match &self.how {
            How::New => {
                let _ = fs::remove_file(&self.path);
            }
            How::Replacing(temporary) => {
                let _ = fs::remove_file(temporary);
            }
            How::InPlace => {}
        }
    }
}

/// Creates `path`, which must not exist yet, with mode 0600.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// A name beside `path` for the pcap that is to replace it, hidden and unique to
/// this process.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".netrecord-{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn write(output: &Output, bytes: &[u8]) {
        output.file().write_all(bytes).unwrap();
    }

    #[test]
    fn a_new_file_is_private_and_an_existing_one_is_replaced_only_when_forced_and_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pcap");
        let out = Output::create(&path, false, "out.pcap").unwrap();
        write(&out, b"first");
        out.commit("out.pcap").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let err = Output::create(&path, false, "out.pcap").unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to replace out.pcap: the file exists (give --force to replace it)"
        );
        let out = Output::create(&path, true, "out.pcap").unwrap();
        write(&out, b"second");
        // Until the export is done, the old file is untouched.
        assert_eq!(fs::read(&path).unwrap(), b"first");
        out.discard();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let out = Output::create(&path, true, "out.pcap").unwrap();
        write(&out, b"third");
        out.commit("out.pcap").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"third");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.pcap"], "a temporary file was left behind");
    }

    #[test]
    fn a_device_is_written_in_place_and_a_failed_new_file_removed() {
        let out = Output::create(Path::new("/dev/null"), true, "/dev/null").unwrap();
        write(&out, b"gone");
        out.commit("/dev/null").unwrap();
        assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pcap");
        let out = Output::create(&path, false, "out.pcap").unwrap();
        out.discard();
        assert!(!path.exists());
    }
}
