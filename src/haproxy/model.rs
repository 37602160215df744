//! The model a template is rendered over: the live members of one role, in a stable order, so
//! the same membership always gives the same bytes.
//!
//! ```text
//! {
//!   "role": "backend",
//!   "members":   [ { "name", "id", "address", "port", "status", "tags": { … } }, … ],
//!   "addresses": [ { "host", "ip" }, … ],       // the HEIG-VD lab's own template reads these
//!   "hold_timeout_ms": 15000                     // [haproxy] hold_timeout, in ms
//! }
//! ```
//!
//! The sync follows [`Member`]s, the cluster's members as this subsystem needs them (`app.rs`
//! maps the gossip view into them). Members whose status is `alive` or `leaving` are listed (`status` says which): a Serf leave
//! intent alone takes no server out, since any peer can forge one and the member refutes it;
//! a member's server is drained once the member has `left`, and taken out at once when it has
//! `failed`. Members whose name or tags fail [`crate::config::names`] are left out (the
//! gossip layer refuses them already; this is the second wall), and returned beside the model
//! so the sync can log each once. Members are sorted by name; tags are a sorted map. `id` is a number
//! derived from the name alone (unless two names collide, then the later one by name takes the
//! next free number): the server id HAProxy's sticky sessions follow, so a member that comes
//! back under its name, at any address, gets the same id.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::names as validate;
use crate::config::networks::Network;

/// A member of the cluster as the HAProxy sync follows it: what may become a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name, unique in the cluster: the server's name, cookie and sticky key.
    pub name: String,
    /// The address it is reached at (its application port comes from its `port` tag).
    pub addr: IpAddr,
    /// Its tags (`role` selects it, `port` is its application port; templates read all).
    pub tags: BTreeMap<String, String>,
    /// Where it stands: decides whether it has a server, and how that server goes.
    pub status: Status,
}

/// Where a member stands, and what that means for its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// In the cluster: it has a server.
    Alive,
    /// Announced that it is leaving, still answering: its server stays (any peer can forge a
    /// leave intent, and the member refutes it), but a server it loses is drained.
    Leaving,
    /// Left on purpose: its server is drained, then removed.
    Left,
    /// Stopped answering without leaving: its server is taken out at once.
    Failed,
}

impl Status {
    /// The word templates see (Serf's).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }

    /// Whether a server this member loses is drained (it is leaving or has left) rather than
    /// taken out at once.
    pub fn leaving(self) -> bool {
        matches!(self, Status::Leaving | Status::Left)
    }
}

/// Which members become servers, and on which port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Members whose `role` tag equals this; `None` takes every member.
    pub role: Option<String>,
    /// Port of a member without a valid `port` tag.
    pub default_port: u16,
    /// How long a request waits for a server in service (`[haproxy] hold_timeout`), in ms:
    /// the template's `hold_timeout_ms`.
    pub hold_timeout_ms: u64,
    /// Networks a member's address must be in (`[haproxy] trusted_networks`, or the load
    /// balancer's own): a member elsewhere is refused, whatever it announces.
    pub trusted: Vec<Network>,
}

impl Selection {
    /// Every address, IPv4 and IPv6: for tests and `trusted_networks = ["0.0.0.0/0", "::/0"]`.
    pub fn everywhere() -> Vec<Network> {
        ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|n| Network::parse(n).ok())
            .collect()
    }
}

/// One member as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMember {
    /// The member's name (unique in the cluster): the server's name and cookie.
    pub name: String,
    /// A server id stable for this name (1..=2^30).
    pub id: u32,
    /// Its IP address.
    pub address: IpAddr,
    /// Its application port: the `port` tag, or the default.
    pub port: u16,
    /// Serf's status word: `alive`, or `leaving` (announced a leave, still answering).
    pub status: &'static str,
    /// All its tags.
    pub tags: BTreeMap<String, String>,
}

/// One entry of the lab's `addresses` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The member's name.
    pub host: String,
    /// Its IP address.
    pub ip: IpAddr,
}

/// What a template is rendered over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    /// The role selected, or `null`.
    pub role: Option<String>,
    /// The selected live members, sorted by name.
    pub members: Vec<ModelMember>,
    /// The same members as the lab's `{host, ip}` pairs.
    pub addresses: Vec<Address>,
    /// `[haproxy] hold_timeout` in milliseconds (a number: safe in the config).
    pub hold_timeout_ms: u64,
}

/// Server ids are drawn from 1..=ID_SPACE.
const ID_SPACE: u32 = 1 << 30;

/// The id a name asks for: FNV-1a of its bytes, folded into 1..=2^30.
pub fn server_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % ID_SPACE + 1
}

/// A selected member left out of the model because its name or tags are invalid, or its
/// address is outside the trusted networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its name, cut and escaped ([`validate::printable`]): safe in a log line.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Longest name shown in a [`Refused`].
const SHOWN: usize = 64;

impl Model {
    /// The model for this view of the cluster (members with invalid names or tags left out).
    pub fn new(view: &[Member], selection: &Selection) -> Model {
        Model::checked(view, selection).0
    }

    /// The model for this view, and the selected members left out for an invalid name or tag.
    pub fn checked(view: &[Member], selection: &Selection) -> (Model, Vec<Refused>) {
        let mut refused = Vec::new();
        let mut members: Vec<ModelMember> = view
            .iter()
            .filter(|m| matches!(m.status, Status::Alive | Status::Leaving))
            .filter(|m| {
                selection
                    .role
                    .as_ref()
                    .is_none_or(|r| m.tags.get("role") == Some(r))
            })
            .filter(|m| {
                let why = match validate::name(&m.name) {
                    Err(e) => Some(format!("name {e}")),
                    Ok(()) if !selection.trusted.iter().any(|n| n.contains(m.addr)) => Some(
                        format!("address {} is outside the trusted networks", m.addr),
                    ),
                    Ok(()) => validate::tags(&m.tags).err().map(|e| e.to_string()),
                };
                match why {
                    None => true,
                    Some(reason) => {
                        refused.push(Refused {
                            name: validate::printable(&m.name, SHOWN),
                            reason,
                        });
                        false
                    }
                }
            })
            .map(|m| ModelMember {
                name: m.name.clone(),
                id: 0,
                address: m.addr,
                port: m
                    .tags
                    .get("port")
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|&p| p != 0)
                    .unwrap_or(selection.default_port),
                status: m.status.as_str(),
                tags: m.tags.clone(),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.dedup_by(|a, b| a.name == b.name);
        let mut taken = std::collections::BTreeSet::new();
        for m in &mut members {
            let mut id = server_id(&m.name);
            while !taken.insert(id) {
                id = id % ID_SPACE + 1;
            }
            m.id = id;
        }
        let addresses = members
            .iter()
            .map(|m| Address {
                host: m.name.clone(),
                ip: m.address,
            })
            .collect();
        let model = Model {
            role: selection.role.clone(),
            members,
            addresses,
            hold_timeout_ms: selection.hold_timeout_ms,
        };
        (model, refused)
    }

    /// The same model with only the members `keep` accepts (their ids unchanged).
    pub fn only(&self, keep: impl Fn(&ModelMember) -> bool) -> Model {
        let members: Vec<ModelMember> = self.members.iter().filter(|m| keep(m)).cloned().collect();
        let addresses = members
            .iter()
            .map(|m| Address {
                host: m.name.clone(),
                ip: m.address,
            })
            .collect();
        Model {
            role: self.role.clone(),
            members,
            addresses,
            hold_timeout_ms: self.hold_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ip: &str, status: Status, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.to_owned(),
            addr: ip.parse().expect("ip"),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            status,
        }
    }

    #[test]
    fn selects_alive_and_leaving_members_of_the_role_sorted_by_name() {
        let view = vec![
            member(
                "web-b",
                "10.0.0.3",
                Status::Alive,
                &[("role", "backend"), ("port", "8080")],
            ),
            member("ha", "10.0.0.1", Status::Alive, &[("role", "balancer")]),
            member("web-a", "10.0.0.2", Status::Alive, &[("role", "backend")]),
            member("web-c", "10.0.0.4", Status::Leaving, &[("role", "backend")]),
            member("web-d", "10.0.0.5", Status::Failed, &[("role", "backend")]),
            member(
                "web-e",
                "10.0.0.6",
                Status::Alive,
                &[("role", "backend"), ("port", "x")],
            ),
        ];
        let selection = Selection {
            role: Some("backend".to_owned()),
            default_port: 3000,
            hold_timeout_ms: 15_000,
            trusted: Selection::everywhere(),
        };
        let model = Model::new(&view, &selection);
        let names: Vec<(&str, u16)> = model
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.port))
            .collect();
        assert_eq!(
            names,
            [
                ("web-a", 3000),
                ("web-b", 8080),
                ("web-c", 3000),
                ("web-e", 3000)
            ]
        );
        let status: Vec<&str> = model.members.iter().map(|m| m.status).collect();
        assert_eq!(status, ["alive", "alive", "leaving", "alive"]);
        assert_eq!(model.addresses[1].host, "web-b");
        assert_eq!(model.addresses[1].ip.to_string(), "10.0.0.3");
        assert_eq!(model.members[0].id, server_id("web-a"));
        let alone = Model::new(&view[2..3], &selection);
        assert_eq!(
            alone.members[0].id, model.members[0].id,
            "the id depends on the name only"
        );
        let all = Model::new(
            &view,
            &Selection {
                role: None,
                default_port: 1,
                hold_timeout_ms: 15_000,
                trusted: Selection::everywhere(),
            },
        );
        assert_eq!(all.members.len(), 5);
        // Only members inside the trusted networks become servers; the others are refused.
        let lan = Selection {
            role: Some("backend".to_owned()),
            default_port: 3000,
            hold_timeout_ms: 15_000,
            trusted: vec![Network::parse("10.0.0.0/30").unwrap()],
        };
        let (model, refused) = Model::checked(&view, &lan);
        let names: Vec<&str> = model.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web-a", "web-b"]);
        let out: Vec<&str> = refused.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(out, ["web-c", "web-e"]);
        assert_eq!(
            refused[0].reason,
            "address 10.0.0.4 is outside the trusted networks"
        );
    }

    #[test]
    fn members_with_invalid_names_or_tags_are_left_out_and_named_escaped() {
        let view = vec![
            member("web-a", "10.0.0.2", Status::Alive, &[("role", "backend")]),
            member(
                "web\nprogram x",
                "10.0.0.3",
                Status::Alive,
                &[("role", "backend")],
            ),
            member(
                "web-c",
                "10.0.0.4",
                Status::Leaving,
                &[("role", "backend"), ("port", "80 check addr 1.2.3.4")],
            ),
            member(
                "web-d",
                "10.0.0.5",
                Status::Alive,
                &[("role", "backend"), ("x", "%[env(HOME)]")],
            ),
            // Another role: never rendered, so not judged either.
            member("bad name", "10.0.0.6", Status::Alive, &[("role", "db")]),
            member("web-e", "10.0.0.7", Status::Alive, &[("role", "backend")]),
        ];
        let selection = Selection {
            role: Some("backend".to_owned()),
            default_port: 3000,
            hold_timeout_ms: 15_000,
            trusted: Selection::everywhere(),
        };
        let (model, refused) = Model::checked(&view, &selection);
        let names: Vec<&str> = model.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web-a", "web-e"]);
        assert_eq!(model.addresses.len(), 2);
        let refused: Vec<(&str, &str)> = refused
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert_eq!(refused[0].0, "web\\nprogram x", "escaped, on one line");
        assert!(refused[0].1.starts_with("name holds"), "{refused:?}");
        assert_eq!(refused[1].0, "web-c");
        assert!(refused[1].1.starts_with("tag port:"), "{refused:?}");
        assert_eq!(refused[2].0, "web-d");
        assert!(refused[2].1.starts_with("tag x:"), "{refused:?}");
        assert_eq!(Model::new(&view, &selection), model);
    }

    #[test]
    fn a_subset_keeps_its_ids() {
        let view: Vec<Member> = ["a", "b", "c"]
            .iter()
            .map(|n| member(n, "10.0.0.2", Status::Alive, &[]))
            .collect();
        let all = Model::new(
            &view,
            &Selection {
                role: None,
                default_port: 80,
                hold_timeout_ms: 15_000,
                trusted: Selection::everywhere(),
            },
        );
        let some = all.only(|m| m.name != "b");
        assert_eq!(some.members.len(), 2);
        assert_eq!(some.addresses.len(), 2);
        assert_eq!(some.members[1].id, all.members[2].id);
        assert_eq!(some.addresses[1].host, "c");
    }

    #[test]
    fn colliding_ids_take_the_next_free_number() {
        // Find two names with the same id by brute force (ids are 30 bits: a few tens of
        // thousands of names are enough).
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..200_000)
            .map(|i| format!("n{i}"))
            .find_map(|n| seen.insert(server_id(&n), n.clone()).map(|o| (o, n)))
            .expect("a collision");
        let view: Vec<_> = [&a, &b]
            .iter()
            .map(|n| member(n, "10.0.0.1", Status::Alive, &[]))
            .collect();
        let m = Model::new(
            &view,
            &Selection {
                role: None,
                default_port: 80,
                hold_timeout_ms: 15_000,
                trusted: Selection::everywhere(),
            },
        );
        let ids: Vec<u32> = m.members.iter().map(|m| m.id).collect();
        assert_eq!(ids[1], ids[0] % (1 << 30) + 1, "{a} {b} {ids:?}");
    }
}
