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
//! Only members whose status is `alive` are listed: a member that is leaving is drained by the
//! sync, not rendered. Members are sorted by name; tags are a sorted map. `id` is a number
//! derived from the name alone (unless two names collide, then the later one by name takes the
//! next free number): the server id HAProxy's sticky sessions follow, so a member that comes
//! back under its name, at any address, gets the same id.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

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
    /// Serf's status word (`alive`).
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

impl Model {
    /// The model for this view of the cluster.
    pub fn new(view: &[Member], selection: &Selection) -> Model {
        let mut members: Vec<ModelMember> = view
            .iter()
            .filter(|m| m.status == Status::Alive)
            .filter(|m| {
                selection
                    .role
                    .as_ref()
                    .is_none_or(|r| m.tags.get("role") == Some(r))
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
        Model {
            role: selection.role.clone(),
            members,
            addresses,
        }
    }
}
