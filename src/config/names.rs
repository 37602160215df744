//! What a member's name and tags may hold, in muster's own configuration and from the network
//! (`gossip::validate` applies these rules to what peers announce; the HAProxy model checks
//! them again before rendering). Names and tags come from the network and end up in
//! HAProxy's config (server names, addresses, ports), in logs and, later, in handler
//! environments, so they are checked where they enter, before anything stores them: a peer
//! whose name or tags fail here is not a member.
//!
//! The rules, and why:
//!
//! - **name**: 1 to [`MAX_NAME`] bytes of ASCII letters, digits, `-`, `_` and `.`: a host name,
//!   a container id or a compose name, and a valid HAProxy server name (HAProxy's own set is
//!   these plus `:`). No whitespace, no quote, no `#`, no control character, nothing that
//!   HAProxy's config parser, a shell or a log reader could read as syntax.
//! - **tag key**: 1 to [`MAX_TAG_KEY`] bytes of the same set as a name.
//! - **tag value**: 0 to [`MAX_TAG_VALUE`] bytes of printable ASCII (`!` to `~`) but `"`, `'`,
//!   `` ` ``, `\`, `#`, `$`, `%`, `{` and `}`: no word separator, no quoting or escaping, no
//!   comment, no environment expansion, no HAProxy sample expression (`%[…]`) and no
//!   handlebars.
//! - **tags as a whole**: at most [`MAX_META`] bytes once encoded as Serf's node meta (the
//!   limit memberlist enforces).
//!
//! Debian's serf agent accepts any name (its `-node` is not checked unless
//! `ValidateNodeNames` is set, which allows fewer characters than muster); muster refuses
//! names and tags outside these sets, from the network and in its own configuration.

use std::collections::BTreeMap;

/// Longest member name, in bytes (Serf's `ValidateNodeNames` limit).
pub const MAX_NAME: usize = 128;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY: usize = 64;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE: usize = 256;
/// Largest node meta (encoded tags), in bytes: memberlist's `MetaMaxSize`.
pub const MAX_META: usize = 512;

/// Why a name or tag is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The name or key is empty.
    #[error("is empty")]
    Empty,
    /// Longer than its limit.
    #[error("is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte outside the allowed set (shown escaped).
    #[error("holds {byte:?} at byte {at}, {allowed}")]
    Char {
        /// The offending character, as text.
        byte: String,
        /// Its offset.
        at: usize,
        /// What is allowed instead.
        allowed: &'static str,
    },
    /// The tags do not fit in the node meta.
    #[error("take {len} bytes of node meta, more than {MAX_META}")]
    Meta {
        /// Their encoded size.
        len: usize,
    },
    /// The node meta is not Serf's tag encoding.
    #[error("node meta cannot be read as tags: {0}")]
    Encoding(String),
    /// A tag is refused: its key and why.
    #[error("tag {key}: {why}")]
    Tag {
        /// The tag's key (already checked, or cut and escaped when it is the problem).
        key: String,
        /// Why.
        why: Box<Invalid>,
    },
}

const NAME_SET: &str = "only ASCII letters, digits, '-', '_' and '.' are allowed";
const VALUE_SET: &str =
    "only printable ASCII without spaces, quotes, '`', '\\', '#', '$', '%', '{' or '}' is allowed";

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn value_byte(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'\'' | b'`' | b'\\' | b'#' | b'$' | b'%' | b'{' | b'}'
        )
}

fn check(
    s: &str,
    max: usize,
    empty_ok: bool,
    ok: fn(u8) -> bool,
    allowed: &'static str,
) -> Result<(), Invalid> {
    if s.is_empty() && !empty_ok {
        return Err(Invalid::Empty);
    }
    if s.len() > max {
        return Err(Invalid::TooLong { len: s.len(), max });
    }
    match s.bytes().position(|b| !ok(b)) {
        None => Ok(()),
        Some(at) => {
            // The whole character, not a lone byte of a multi-byte one.
            let ch = s[at..]
                .chars()
                .next()
                .map_or_else(String::new, |c| c.to_string());
            Err(Invalid::Char {
                byte: ch,
                at,
                allowed,
            })
        }
    }
}

/// Checks a member name.
pub fn name(s: &str) -> Result<(), Invalid> {
    check(s, MAX_NAME, false, name_byte, NAME_SET)
}

/// Checks a tag key.
pub fn tag_key(s: &str) -> Result<(), Invalid> {
    check(s, MAX_TAG_KEY, false, name_byte, NAME_SET)
}

/// Checks a tag value.
pub fn tag_value(s: &str) -> Result<(), Invalid> {
    check(s, MAX_TAG_VALUE, true, value_byte, VALUE_SET)
}

/// Checks every tag, and their encoded size.
pub fn tags(tags: &BTreeMap<String, String>) -> Result<(), Invalid> {
    for (k, v) in tags {
        let why = match tag_key(k) {
            Err(e) => Some(e),
            Ok(()) => tag_value(v).err(),
        };
        if let Some(why) = why {
            return Err(Invalid::Tag {
                key: printable(k, 32),
                why: Box::new(why),
            });
        }
    }
    let len = encoded_len(tags);
    if len > MAX_META {
        return Err(Invalid::Meta { len });
    }
    Ok(())
}

/// `s` cut to `max` characters and escaped (`{:?}` without the quotes), safe in a log line.
pub fn printable(s: &str, max: usize) -> String {
    let cut: String = s.chars().take(max).collect();
    let mut out = format!("{cut:?}");
    out.pop();
    out.remove(0);
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// The size of `tags` once encoded as Serf's node meta: a `0xff` byte, then a msgpack map (old
/// spec) of raw strings.
pub fn encoded_len(tags: &BTreeMap<String, String>) -> usize {
    fn header(len: usize, small: usize) -> usize {
        if len < small {
            1
        } else if len < 1 << 16 {
            3
        } else {
            5
        }
    }
    let entries: usize = tags
        .iter()
        .map(|(k, v)| header(k.len(), 32) + k.len() + header(v.len(), 32) + v.len())
        .sum();
    1 + header(tags.len(), 16) + entries
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names() {
        for ok in [
            "web1",
            "a",
            "3f2c9d0e1b2a",
            "compose_webapp_1",
            "node-1.example.com",
        ] {
            assert_eq!(name(ok), Ok(()), "{ok}");
        }
        assert_eq!(name(""), Err(Invalid::Empty));
        assert_eq!(
            name(&"a".repeat(129)),
            Err(Invalid::TooLong { len: 129, max: 128 })
        );
        for bad in [
            "a b", "a\nb", "a#b", "a\"b", "a'b", "a\tb", "a\0b", "é", "a:b", "a/b", "a$b",
        ] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        let e = name("web\nprogram x").unwrap_err().to_string();
        assert_eq!(e, format!("holds \"\\n\" at byte 3, {NAME_SET}"));
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable("a\nb", 10), "a\\nb");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
