//! The architecture invariants stated in `src/lib.rs`, checked on the source text.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn code_of(path: &Path) -> String {
    // Comments are not code: drop `//` lines so docs may name what the code must not do.
    std::fs::read_to_string(path)
        .expect("read source")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn all_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found the sources");
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, code_of(&p))
        })
        .collect()
}

#[test]
fn only_the_reaper_waits_for_children() {
    for (path, code) in all_sources() {
        for banned in [
            "waitpid",
            "waitid",
            "libc::wait(",
            "tokio::process",
            ".wait()",
            ".try_wait()",
        ] {
            if code.contains(banned) {
                assert_eq!(path, "src/supervisor/reaper.rs", "{path} uses {banned}");
                assert!(banned == "waitpid", "{path} uses {banned}");
            }
        }
    }
}

#[test]
fn the_pure_cores_read_no_clock_and_do_no_io() {
    for (path, code) in all_sources() {
        // The core's own tests need one real instant as the origin of their virtual clock.
        let pure = path.starts_with("src/supervisor/core")
            || (path.starts_with("src/gossip")
                && !path.ends_with("driver.rs")
                && !path.starts_with("src/gossip/driver/")
                && !path.ends_with("agent.rs")
                && !path.starts_with("src/gossip/agent/"))
            || (path.starts_with("src/logship")
                && !path.ends_with("ship.rs")
                && !path.ends_with("spool.rs"))
            || (path.starts_with("src/haproxy")
                && !path.ends_with("runtime.rs")
                && !path.ends_with("sync.rs"));
        if !pure || path.ends_with("tests.rs") {
            continue;
        }
        for banned in [
            "Instant::now",
            "SystemTime",
            "std::fs",
            "UdpSocket",
            "TcpStream",
            "TcpListener",
            "tokio",
            "libc::kill",
            "std::process",
        ] {
            assert!(!code.contains(banned), "{path} uses {banned}");
        }
    }
}

/// The subsystems: each knows only `config` and its own folder; `app.rs` maps between them.
const SUBSYSTEMS: &[&str] = &["supervisor", "gossip", "haproxy", "logship"];

/// Every `crate::NAME` a piece of code names (`use crate::{a, b}` counts both).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(list) = after.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            out.push(
                after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
        rest = after;
    }
    out
}

#[test]
fn subsystems_know_only_config_and_their_own_folder() {
    let mut checked = 0;
    for (path, code) in all_sources() {
        let Some(own) = SUBSYSTEMS
            .iter()
            .chain(&["config"])
            .find(|s| path.starts_with(&format!("src/{s}/")))
        else {
            continue;
        };
        checked += 1;
        for name in crate_paths(&code) {
            assert!(
                name == *own || name == "config",
                "{path} reaches into crate::{name}: a subsystem knows only crate::config and \
                 its own folder (app.rs maps between subsystems)"
            );
        }
        // A way around the rule: climbing out of the folder.
        assert!(
            !code.contains("super::super::super"),
            "{path} climbs out of its folder with super::"
        );
        if path.matches('/').count() == 2 {
            assert!(
                !code.contains("super::super"),
                "{path} climbs out of its folder with super::"
            );
        }
    }
    assert!(checked > 20, "found the subsystems' sources ({checked})");
}

#[test]
fn the_import_rule_reads_use_lists() {
    assert_eq!(
        crate_paths("use crate::{config::Service, gossip};\nlet x = crate::haproxy::y;"),
        ["config", "gossip", "haproxy"]
    );
}

/// `(length in lines, where, name)` of every function in `src/` outside tests.
fn functions() -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, _) in all_sources() {
        if path.ends_with("tests.rs") {
            continue;
        }
        // Comments count: a function is as long as a reader sees it.
        let text = std::fs::read_to_string(root.join(&path)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim_start();
            if line.starts_with("#[cfg(test)]") {
                // The test module that follows: skip it whole.
                i = block_end(&lines, i + 1) + 1;
                continue;
            }
            if let Some(name) = fn_name(line) {
                let end = block_end(&lines, i);
                out.push((end - i + 1, format!("{path}:{}", i + 1), name));
            }
            i += 1;
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// The name of the function a line declares, if it does.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line;
    for word in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(word).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    Some(
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// The line where the block opened at or after `start` closes (braces in strings and
/// character literals are not counted); a declaration without a body ends at its `;`.
fn block_end(lines: &[&str], start: usize) -> usize {
    let mut depth = 0i64;
    let mut opened = false;
    for (i, line) in lines.iter().enumerate().skip(start) {
        let mut chars = line.chars().peekable();
        let mut in_str = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_str => {
                    chars.next();
                }
                '"' => in_str = !in_str,
                '\'' if !in_str => {
                    // A char literal such as '{' (not a lifetime): skip it.
                    let ahead: String = chars.clone().take(3).collect();
                    if ahead.chars().nth(1) == Some('\'') {
                        chars.next();
                        chars.next();
                    } else if ahead.starts_with('\\') {
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                }
                '/' if !in_str && chars.peek() == Some(&'/') => break,
                '{' if !in_str => {
                    depth += 1;
                    opened = true;
                }
                '}' if !in_str => depth -= 1,
                ';' if !in_str && !opened => return i,
                _ => {}
            }
        }
        if opened && depth <= 0 {
            return i;
        }
    }
    lines.len() - 1
}

/// Longest function allowed in `src/` (tests excluded).
const LONGEST: usize = 100;

#[test]
fn no_function_is_longer_than_100_lines() {
    let all = functions();
    assert!(all.len() > 300, "found the functions ({})", all.len());
    println!("the five longest functions in src/:");
    for (len, at, name) in all.iter().take(5) {
        println!("  {len:4} lines  {name}  {at}");
    }
    let long: Vec<_> = all.iter().filter(|f| f.0 > LONGEST).collect();
    assert!(
        long.is_empty(),
        "functions longer than {LONGEST} lines: {long:?}"
    );
}
