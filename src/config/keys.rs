//! The gossip encryption keys of `[gossip]`: `encrypt` (a base64 key, as `serf agent
//! -encrypt` takes it), `encrypt_file` (a file holding one, such as a Docker secret) and
//! `keyring_file` (Serf's keyring file: a JSON list of base64 keys, the first one primary).

use base64::Engine;

use super::value::Validator;

/// Gossip encryption keys, primary first (empty: plaintext). Its `Debug` shows only how many,
/// so a key never reaches a log.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GossipKeys(pub Vec<Vec<u8>>);

impl std::fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKeys({} keys)", self.0.len())
    }
}

/// `[gossip]` keys that hold or name encryption keys.
pub(super) const KEYS: &[&str] = &["encrypt", "encrypt_file", "keyring_file"];

/// The keys the table configures, primary first; empty for a plaintext cluster. Every problem
/// names its key.
pub(super) fn gossip_keys(t: &toml::Table, v: &mut Validator) -> GossipKeys {
    let inline = v
        .string("gossip.encrypt", t.get("encrypt"))
        .and_then(|text| key("gossip.encrypt", &text, v));
    let from_file = v
        .string("gossip.encrypt_file", t.get("encrypt_file"))
        .and_then(|path| read("gossip.encrypt_file", &path, v))
        .and_then(|text| key("gossip.encrypt_file", text.trim(), v));
    let single = match (inline, from_file) {
        (Some(a), Some(b)) if a != b => {
            v.problem(
                "gossip.encrypt_file",
                "holds another key than gossip.encrypt (set one of them, or the same key)",
            );
            None
        }
        (a, b) => a.or(b),
    };
    let ring = v
        .string("gossip.keyring_file", t.get("keyring_file"))
        .and_then(|path| keyring(&path, v));
    GossipKeys(match (single, ring) {
        (Some(k), Some(ring)) if ring.first() != Some(&k) => {
            v.problem(
                "gossip.keyring_file",
                "its primary (first) key is not the key of gossip.encrypt / gossip.encrypt_file \
                 (set one of them, or make that key the keyring's first)",
            );
            Vec::new()
        }
        (_, Some(ring)) => ring,
        (Some(k), None) => vec![k],
        (None, None) => Vec::new(),
    })
}

fn read(name: &str, path: &str, v: &mut Validator) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            v.problem(name, &format!("cannot read {path}: {e}"));
            None
        }
    }
}

/// One base64 key of 16, 24 or 32 bytes.
fn key(name: &str, text: &str, v: &mut Validator) -> Option<Vec<u8>> {
    match decode(text) {
        Ok(k) => Some(k),
        Err(e) => {
            v.problem(name, &e);
            None
        }
    }
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    let k = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not a base64 key ({e}); `serf keygen` makes one"))?;
    match k.len() {
        16 | 24 | 32 => Ok(k),
        n => Err(format!(
            "the key is {n} bytes; AES-GCM takes 16, 24 or 32 (base64 of 16 random bytes: \
             `serf keygen`)"
        )),
    }
}

/// Serf's keyring file: a JSON list of base64 keys, at least one, the first primary.
fn keyring(path: &str, v: &mut Validator) -> Option<Vec<Vec<u8>>> {
    const NAME: &str = "gossip.keyring_file";
    let text = read(NAME, path, v)?;
    let list: Vec<String> = match serde_json::from_str(&text) {
        Ok(l) => l,
        Err(e) => {
            v.problem(
                NAME,
                &format!("{path} is not a JSON list of base64 keys: {e}"),
            );
            return None;
        }
    };
    if list.is_empty() {
        v.problem(NAME, &format!("{path} holds no key"));
        return None;
    }
    let mut keys = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        match decode(text) {
            Ok(k) => keys.push(k),
            Err(e) => {
                v.problem(NAME, &format!("{path}, key {}: {e}", i + 1));
                return None;
            }
        }
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::users::{Credentials, UserDb};
    use crate::config::{Config, ConfigError};

    struct NoUsers;
    impl UserDb for NoUsers {
        fn resolve(&self, spec: &str) -> Result<Credentials, String> {
            Err(format!("no user {spec}"))
        }
    }

    const K16: &str = "5K9OtfjNP9lbeR7vqmUYtA==";
    const K32: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn parse(gossip: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[services.app]\ncommand = [\"/bin/true\"]\n\n[gossip]\nname = \"n\"\n{gossip}\n"
        );
        Config::parse(&text, &NoUsers)
    }

    fn keys(gossip: &str) -> Vec<Vec<u8>> {
        parse(gossip).unwrap().gossip.unwrap().keys.0
    }

    fn problem(gossip: &str) -> String {
        parse(gossip).unwrap_err().problems.join("\n")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn no_key_is_a_plaintext_cluster() {
        assert!(keys("").is_empty());
    }

    #[test]
    fn encrypt_takes_a_base64_key_of_16_24_or_32_bytes() {
        assert_eq!(
            keys(&format!("encrypt = \"{K16}\"")),
            vec![
                base64::engine::general_purpose::STANDARD
                    .decode(K16)
                    .unwrap()
            ]
        );
        assert_eq!(keys(&format!("encrypt = \"{K32}\""))[0].len(), 32);
        let k24 = base64::engine::general_purpose::STANDARD.encode([3u8; 24]);
        assert_eq!(keys(&format!("encrypt = \"{k24}\""))[0], vec![3u8; 24]);
        let p = problem("encrypt = \"not base64!\"");
        assert!(p.starts_with("gossip.encrypt: not a base64 key"), "{p}");
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 20]);
        let p = problem(&format!("encrypt = \"{short}\""));
        assert!(p.starts_with("gossip.encrypt: the key is 20 bytes"), "{p}");
        let p = problem("encrypt = 16");
        assert!(p.starts_with("gossip.encrypt: expected a string"), "{p}");
    }

    #[test]
    fn encrypt_file_reads_the_key_from_a_file() {
        let f = file(&format!("{K16}\n"));
        let path = f.path().display();
        assert_eq!(keys(&format!("encrypt_file = \"{path}\""))[0].len(), 16);
        // The same key in both places is fine; another is not.
        assert_eq!(
            keys(&format!("encrypt = \"{K16}\"\nencrypt_file = \"{path}\"")).len(),
            1
        );
        let p = problem(&format!("encrypt = \"{K32}\"\nencrypt_file = \"{path}\""));
        assert!(
            p.starts_with("gossip.encrypt_file: holds another key"),
            "{p}"
        );
        let p = problem("encrypt_file = \"/nonexistent/key\"");
        assert!(
            p.starts_with("gossip.encrypt_file: cannot read /nonexistent/key"),
            "{p}"
        );
        let bad = file("garbage");
        let p = problem(&format!("encrypt_file = \"{}\"", bad.path().display()));
        assert!(
            p.starts_with("gossip.encrypt_file: not a base64 key"),
            "{p}"
        );
    }

    #[test]
    fn keyring_file_is_serfs_json_list_with_the_primary_first() {
        let f = file(&format!("[\"{K32}\", \"{K16}\"]"));
        let path = f.path().display();
        let got = keys(&format!("keyring_file = \"{path}\""));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 32);
        // encrypt set too: fine when it is the primary, an error otherwise.
        assert_eq!(
            keys(&format!("encrypt = \"{K32}\"\nkeyring_file = \"{path}\"")).len(),
            2
        );
        let p = problem(&format!("encrypt = \"{K16}\"\nkeyring_file = \"{path}\""));
        assert!(p.starts_with("gossip.keyring_file: its primary"), "{p}");
        for bad in ["[]", "{\"a\": 1}", "[\"short\"]", "not json"] {
            let f = file(bad);
            let p = problem(&format!("keyring_file = \"{}\"", f.path().display()));
            assert!(p.starts_with("gossip.keyring_file: "), "{bad}: {p}");
        }
        let p = problem("keyring_file = \"/nonexistent/ring\"");
        assert!(p.starts_with("gossip.keyring_file: cannot read"), "{p}");
    }

    #[test]
    fn keys_never_reach_debug_output() {
        let c = parse(&format!("encrypt = \"{K16}\"")).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("GossipKeys(1 keys)"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(K16)
            .unwrap();
        assert!(!shown.contains(&format!("{raw:?}")[1..20]));
    }
}
