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
            || (path.starts_with("src/gossip") && !path.ends_with("driver.rs"))
            || (path.starts_with("src/logship") && !path.ends_with("ship.rs"))
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
