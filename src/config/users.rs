//! Resolving a service's `user` into a uid, a gid and supplementary groups, by reading
//! `/etc/passwd` and `/etc/group` directly. muster is a static binary, so it does not go
//! through glibc's NSS (which would need shared libraries at run time).

/// The identity a service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id set with setuid.
    pub uid: u32,
    /// Primary group id set with setgid.
    pub gid: u32,
    /// Supplementary groups set with setgroups (replacing root's).
    pub groups: Vec<u32>,
}

/// Where user and group names are looked up.
pub trait UserDb {
    /// Resolves `"name"`, `"uid"` or `"uid:gid"`; the error says what was not found.
    fn resolve(&self, spec: &str) -> Result<Credentials, String>;
}

/// The system's `/etc/passwd` and `/etc/group`.
pub struct SystemUsers;

impl UserDb for SystemUsers {
    fn resolve(&self, spec: &str) -> Result<Credentials, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        resolve(spec, &passwd, &group)
    }
}

/// Resolves a user spec against the text of a passwd and a group file.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Credentials, String> {
    let entries = || {
        passwd.lines().filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                return None;
            }
            Some((f[0], f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?))
        })
    };
    let (name, uid, gid) = if let Some((u, g)) = spec.split_once(':') {
        let uid = u
            .parse::<u32>()
            .map_err(|_| format!("{u:?} is not a numeric uid"))?;
        let gid = g
            .parse::<u32>()
            .map_err(|_| format!("{g:?} is not a numeric gid"))?;
        let name = entries().find(|e| e.1 == uid).map(|e| e.0);
        (name, uid, gid)
    } else if let Ok(uid) = spec.parse::<u32>() {
        match entries().find(|e| e.1 == uid) {
            Some((name, _, gid)) => (Some(name), uid, gid),
            None => (None, uid, uid),
        }
    } else {
        match entries().find(|e| e.0 == spec) {
            Some((name, uid, gid)) => (Some(name), uid, gid),
            None => return Err(format!("user {spec:?} is not in /etc/passwd")),
        }
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            let Ok(g) = f[2].parse::<u32>() else { continue };
            if f[3].split(',').any(|m| m == name) && !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    Ok(Credentials { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          node:x:1000:1000::/home/node:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nnode:x:1000:\nstaff:x:50:node,other\nnogroup:x:65534:\n";

    fn check(spec: &str, expect: Result<(u32, u32, &[u32]), &str>) {
        let got = resolve(spec, PASSWD, GROUP);
        match expect {
            Ok((uid, gid, groups)) => assert_eq!(
                got,
                Ok(Credentials {
                    uid,
                    gid,
                    groups: groups.to_vec()
                }),
                "{spec}"
            ),
            Err(text) => assert!(
                got.as_ref().is_err_and(|e| e.contains(text)),
                "{spec}: {got:?}"
            ),
        }
    }

    #[test]
    fn names_numbers_and_groups() {
        check("node", Ok((1000, 1000, &[1000, 50])));
        check("nobody", Ok((65534, 65534, &[65534])));
        check("1000", Ok((1000, 1000, &[1000, 50])));
        check("4242", Ok((4242, 4242, &[4242])));
        check("1000:50", Ok((1000, 50, &[50])));
        check("ghost", Err("\"ghost\" is not in /etc/passwd"));
        check("a:b", Err("not a numeric uid"));
    }
}
