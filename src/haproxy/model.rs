//! The model a template is rendered over: the live members of one role, in a stable order, so
//! the same membership always gives the same bytes.
//!
//! ```text
//! {
//!   "role": "backend",
//!   "members":   [ { "name", "id", "address", "port", "status", "tags": { … } }, … ],
//!   "addresses": [ { "host", "ip" }, … ]        // the HEIG-VD lab's own template reads these
//! }
//! ```
//!
//! Members whose status is `alive` or `leaving` are listed (`status` says which): a Serf leave
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
use crate::gossip::serf::{Member, Status};

/// Which members become servers, and on which port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Members whose `role` tag equals this; `None` takes every member.
    pub role: Option<String>,
    /// Port of a member without a valid `port` tag.
    pub default_port: u16,
}

/// One member as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMember {
    /// The member's name (unique in the cluster): the server's name and cookie.
    pub name: String,
    /// A server id stable for this name (1..=2^30).
    pub id: u32,
    /// The IP address it gossips from.
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

/// A selected member left out of the model because its name or tags are invalid.
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
                address: m.addr.ip(),
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
        }
    }
}
