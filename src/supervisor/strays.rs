//! Signalling the processes left over when every service is down: orphans adopted by muster,
//! or members of a service's process group that outlived their leader. As PID 1 this is
//! `kill(-1)`; otherwise muster walks `/proc` for its own descendants, because `kill(-1)` would
//! reach every process of the user outside muster's tree.

use std::collections::HashMap;

/// Sends `signal` to every descendant of muster. Returns how many were signalled (as PID 1,
/// 1 if any process received it).
pub fn sweep(signal: i32) -> usize {
    let me = std::process::id() as i32;
    if me == 1 {
        // SAFETY: kill has no memory-safety preconditions.
        let r = unsafe { libc::kill(-1, signal) };
        return usize::from(r == 0);
    }
    let mut count = 0;
    for pid in descendants(me) {
        // SAFETY: as above.
        if unsafe { libc::kill(pid, signal) } == 0 {
            count += 1;
        }
    }
    count
}

/// The process ids of every descendant of `root`, read from `/proc/*/stat`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: HashMap<i32, i32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) = parse_ppid(&stat) {
                parent_of.insert(pid, ppid);
            }
        }
    }
    let mut out = Vec::new();
    for &pid in parent_of.keys() {
        let mut p = pid;
        for _ in 0..4096 {
            match parent_of.get(&p) {
                Some(&pp) if pp == root => {
                    out.push(pid);
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out
}

/// The process ids whose parent is `root`, read from `/proc/*/stat`.
pub fn children_of(root: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_ppid(&stat))
                == Some(root)
        })
        .collect()
}

/// The parent pid field of a `/proc/PID/stat` line (the comm field may hold spaces and ')').
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(super::parse_ppid("42 (a b) c)) S 7 42 42 0"), Some(7));
        assert_eq!(super::parse_ppid("42 (sh) R 1 42"), Some(1));
        assert_eq!(super::parse_ppid("garbage"), None);
    }
}
