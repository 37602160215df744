//! Node meta from the network read as tags and checked against [`crate::config::names`]: what
//! a member may announce. The rules themselves (names, tag keys and values, sizes) live in
//! `config::names`, shared with muster's own configuration and the HAProxy model.

use std::collections::BTreeMap;

pub use crate::config::names::*;

/// Reads node meta as tags and checks them: what a member from the network may announce.
/// Empty meta is no tags. Unlike [`super::wire::decode_tags`], an entry that is not a pair of
/// strings is an error, not skipped.
pub fn meta(bytes: &[u8]) -> Result<BTreeMap<String, String>, Invalid> {
    if bytes.len() > MAX_META {
        return Err(Invalid::Meta { len: bytes.len() });
    }
    let decoded = super::wire::decode_tags(bytes).map_err(|e| Invalid::Encoding(e.to_string()))?;
    if let Some((0xff, rest)) = bytes.split_first() {
        // Every entry must have been a pair of strings: count them against the decoded map.
        if let Ok((super::msgpack::Value::Map(entries), _)) = super::msgpack::decode(rest) {
            if entries.len() != decoded.len() {
                return Err(Invalid::Encoding(
                    "a tag is not a pair of strings".to_owned(),
                ));
            }
        }
    }
    tags(&decoded)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_meta() {
        let good: BTreeMap<String, String> = [
            ("role", "backend"),
            ("port", "3000"),
            ("url", "http://x:1/a?b=c&d"),
            ("empty", ""),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        assert_eq!(tags(&good), Ok(()));
        assert_eq!(
            meta(&crate::gossip::wire::encode_tags(&good)),
            Ok(good.clone())
        );
        assert_eq!(meta(&[]), Ok(BTreeMap::new()));
        for (k, v) in [
            ("role", "a b"),
            ("role", "x\n"),
            ("role", "%[env(X)]"),
            ("role", "${X}"),
            ("r le", "x"),
            ("", "x"),
            ("role", "a#b"),
        ] {
            let t: BTreeMap<String, String> = [(k.to_owned(), v.to_owned())].into();
            assert!(tags(&t).is_err(), "{k:?}={v:?}");
            assert!(
                meta(&crate::gossip::wire::encode_tags(&t)).is_err(),
                "{k:?}={v:?}"
            );
        }
        let big: BTreeMap<String, String> =
            (0..10).map(|i| (format!("k{i}"), "v".repeat(60))).collect();
        assert!(matches!(tags(&big), Err(Invalid::Meta { .. })));
        assert!(matches!(
            meta(&vec![0xff; 600]),
            Err(Invalid::Meta { len: 600 })
        ));
        // A tag that is not a pair of strings is refused, not skipped.
        let mut odd = vec![0xff, 0x81, 0xa1, b'a', 0x01];
        assert!(meta(&odd).is_err());
        odd.truncate(1);
        assert!(meta(&odd).is_err() || meta(&odd) == Ok(BTreeMap::new()));
    }

    #[test]
    fn the_encoded_size_is_the_codecs() {
        for n in [0usize, 1, 15, 16, 40] {
            let tags: BTreeMap<String, String> = (0..n)
                .map(|i| (format!("k{i}"), "v".repeat(i * 7 % 300)))
                .collect();
            assert_eq!(
                crate::config::names::encoded_len(&tags),
                crate::gossip::wire::encode_tags(&tags).len(),
                "{n} tags"
            );
        }
    }
}
