//! Tests of installing netrecord: the generated man page renders and documents
//! every subcommand and the exit statuses, the completions work, and
//! `make install` / `make uninstall` put in and take out exactly the installed files.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use clap::CommandFactory;

use crate::util::{BIN, have_tool, skip, wait_child};

/// Runs `cmd` to completion within the deadline; returns its status, stdout and
/// stderr. Output goes through files so a chatty command cannot block on a pipe.
fn run(cmd: &mut Command) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_child(&mut child);
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned();
    (status, read(&out_path), read(&err_path))
}

/// Runs `netrecord generate <what> <dir>` and checks it succeeded quietly.
fn generate(what: &str, dir: &Path) {
    let (status, stdout, stderr) = run(Command::new(BIN).arg("generate").arg(what).arg(dir));
    assert!(status.success(), "generate {what} failed: {stderr}");
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "generate {what} is not quiet"
    );
}

/// The subcommands a user can see, from the clap definition.
fn visible_subcommands() -> Vec<clap::Command> {
    let mut cmd = netrecord::cli::Cli::command();
    cmd.build();
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect()
}

/// One section of a page rendered by `man`/`groff`: the lines after the heading
/// `name` (flush left) up to the next heading.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != name);
    assert!(lines.next().is_some(), "no {name} section in:\n{text}");
    lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn the_man_page_renders_and_documents_every_subcommand_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    generate("man", dir.path());
    let page = dir.path().join("netrecord.1");
    if !have_tool("groff") {
        skip("groff is not installed (CI installs groff-base)");
        return;
    }
    // A wide line and no hyphenation, so no name is split across lines; -P-cbou
    // gives plain text without bold and underline sequences.
    let (status, text, stderr) = run(Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou", "-rLL=200n", "-rHY=0"])
        .arg(&page));
    assert!(status.success(), "groff failed: {stderr}");
    assert_eq!(stderr, "", "groff warned about the page");
    // groff may print a dash as a Unicode hyphen or minus.
    let text = text.replace(['\u{2010}', '\u{2011}', '\u{2212}'], "-");
    assert!(text.starts_with("NETRECORD(1)"), "no title line:\n{text}");

    let synopsis = section(&text, "SYNOPSIS");
    let commands = section(&text, "COMMANDS");
    let subs = visible_subcommands();
    assert_eq!(
        synopsis.len(),
        subs.len() + 1,
        "one synopsis line per mode:\n{synopsis:#?}"
    );
    for sub in &subs {
        let name = format!("netrecord {}", sub.get_name());
        assert!(
            synopsis.iter().any(|l| l.trim().starts_with(&name)),
            "{name} not in SYNOPSIS"
        );
        assert!(
            commands.iter().any(|l| l.trim() == name),
            "no COMMANDS entry for {name}"
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(text.contains(&format!("--{long}")), "{name} --{long} not documented");
            }
        }
    }
    for hidden in ["generate", "demo"] {
        assert!(
            !text.contains(&format!("netrecord {hidden}")),
            "hidden {hidden} is documented"
        );
    }

    let statuses: Vec<&str> = section(&text, "EXIT STATUS")
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(statuses, ["0", "1", "2"], "EXIT STATUS lists 0, 1 and 2");
    // Justified lines may hold two spaces between words: compare words.
    let exit = section(&text, "EXIT STATUS")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    for meaning in ["runtime failure", "usage"] {
        assert!(exit.contains(meaning), "EXIT STATUS does not mention {meaning}: {exit}");
    }
    for heading in ["LOG FORMAT", "EXAMPLES", "FILES"] {
        assert!(!section(&text, heading).is_empty(), "{heading} is empty");
    }
    assert!(section(&text, "FILES").join(" ").contains("_index.jsonl"));
}

#[test]
fn completions_generate_for_each_shell_and_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    generate("completions", dir.path());
    let names: Vec<String> = visible_subcommands().iter().map(|s| s.get_name().to_string()).collect();
    for file in ["netrecord.bash", "_netrecord", "netrecord.fish"] {
        let script = fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(!script.is_empty(), "{file} is empty");
        for name in &names {
            assert!(script.contains(name.as_str()), "{file} does not name {name}");
        }
        for hidden in ["generate", "demo"] {
            assert!(!script.contains(hidden), "{file} offers the hidden {hidden}");
        }
    }

    for (shell, check, file) in [
        ("bash", "-n", "netrecord.bash"),
        ("zsh", "-n", "_netrecord"),
        ("fish", "--no-execute", "netrecord.fish"),
    ] {
        if !have_tool(shell) {
            skip(&format!("the {shell} syntax check: {shell} is not installed"));
            continue;
        }
        let (status, _, stderr) = run(Command::new(shell).arg(check).arg(dir.path().join(file)));
        assert!(status.success(), "{shell} rejects {file}: {stderr}");
    }

    if !have_tool("bash") {
        skip("the bash completion run: bash is not installed");
        return;
    }
    // Ask the bash completion function what `netrecord re<TAB>` and
    // `netrecord pcap --<TAB>` offer, as bash would when the user presses TAB.
    let complete = |words: &[&str]| -> Vec<String> {
        let script = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _netrecord netrecord '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            dir.path().join("netrecord.bash").display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let (status, stdout, stderr) = run(Command::new("bash").arg("-c").arg(script));
        assert!(status.success(), "bash completion failed: {stderr}");
        let mut offered: Vec<String> = stdout.lines().map(str::to_string).collect();
        offered.sort();
        offered
    };
    assert_eq!(complete(&["netrecord", "re"]), ["replay-client", "replay-server"]);
    let options = complete(&["netrecord", "pcap", "--"]);
    for option in ["--output", "--server-port", "--help"] {
        assert!(options.iter().any(|o| o == option), "pcap -- offers {options:?}");
    }
}

/// Every file (not directory) under `root`, relative to it, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    // Bounded: the tree is what one install wrote.
    while let Some(dir) = dirs.pop() {
        assert!(
            files.len() + dirs.len() < 1000,
            "unexpectedly large tree under {}",
            root.display()
        );
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                dirs.push(path);
            } else {
                files.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// `make <target> BIN=<the test binary> DESTDIR=<dest> PREFIX=/usr`, with
/// CARGO=false so any attempt to build fails the test.
fn make(target: &str, dest: &Path, gen_dir: &Path) -> (ExitStatus, String, String) {
    run(Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // A make running this test (`make test`) must not hand its jobserver down.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .arg(target)
        .arg(format!("BIN={BIN}"))
        .arg(format!("DESTDIR={}", dest.display()))
        .arg("PREFIX=/usr")
        .arg(format!("GENDIR={}", gen_dir.display()))
        .arg("CARGO=false"))
}

#[test]
fn make_install_then_uninstall_leaves_no_files() {
    if !have_tool("make") {
        skip("make is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let gen_dir = tmp.path().join("generated");

    let (status, stdout, stderr) = make("install", &dest, &gen_dir);
    assert!(status.success(), "make install failed:\n{stdout}\n{stderr}");
    let expected: Vec<PathBuf> = [
        "usr/bin/netrecord",
        "usr/share/bash-completion/completions/netrecord",
        "usr/share/fish/vendor_completions.d/netrecord.fish",
        "usr/share/man/man1/netrecord.1",
        "usr/share/zsh/site-functions/_netrecord",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(files_under(&dest), expected);
    for file in &expected {
        let mode = fs::metadata(dest.join(file)).unwrap().permissions().mode() & 0o777;
        let want = if file.starts_with("usr/bin") { 0o755 } else { 0o644 };
        assert_eq!(mode, want, "{} has mode {mode:o}", file.display());
    }
    assert_eq!(
        fs::read_to_string(dest.join("usr/share/man/man1/netrecord.1")).unwrap(),
        netrecord::generate::man_page(),
        "the installed man page is the generated one"
    );
    let (status, version, _) = run(Command::new(dest.join("usr/bin/netrecord")).arg("--version"));
    assert!(status.success());
    assert_eq!(version.trim(), format!("netrecord {}", env!("CARGO_PKG_VERSION")));

    let (status, stdout, stderr) = make("uninstall", &dest, &gen_dir);
    assert!(status.success(), "make uninstall failed:\n{stdout}\n{stderr}");
    assert_eq!(files_under(&dest), Vec::<PathBuf>::new(), "uninstall left files behind");
    // The directories stay: under a real PREFIX other programs share them.
    assert!(dest.join("usr/share/man/man1").is_dir());
}

#[test]
fn every_help_starts_with_a_summary_line_and_ends_with_examples() {
    let mut helps = vec![(String::from("netrecord"), vec!["--help".to_string()])];
    for sub in visible_subcommands() {
        let name = sub.get_name().to_string();
        helps.push((format!("netrecord {name}"), vec![name, "--help".to_string()]));
    }
    for (what, args) in helps {
        let (status, help, stderr) = run(Command::new(BIN).args(&args).env("COLUMNS", "100"));
        assert!(status.success(), "{what} --help failed: {stderr}");
        let lines: Vec<&str> = help.lines().collect();
        assert!(lines.len() > 3, "{what} --help is too short:\n{help}");
        assert!(
            !lines[0].is_empty() && lines[1].is_empty(),
            "{what} --help does not start with one summary line:\n{help}"
        );
        // The last paragraph is examples: indented command lines of this command.
        let last: Vec<&str> = help.trim_end().rsplit("\n\n").next().unwrap().lines().collect();
        assert!(
            last[0].starts_with("Example"),
            "{what} --help does not end with examples:\n{help}"
        );
        assert!(
            last.iter().any(|l| l.trim_start().starts_with(&format!("{what} "))),
            "{what} --help examples do not run {what}:\n{help}"
        );
    }

    let (_, help, _) = run(Command::new(BIN).arg("--help"));
    for example in ["redis-cli", "netrecord show ", "netrecord pcap ", "wireshark"] {
        assert!(
            help.contains(example),
            "netrecord --help has no example with {example}:\n{help}"
        );
    }
    let (status, version, _) = run(Command::new(BIN).arg("--version"));
    assert!(status.success());
    assert_eq!(version, format!("netrecord {}\n", env!("CARGO_PKG_VERSION")));
}
