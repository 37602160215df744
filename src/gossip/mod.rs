//! Membership by gossip, in HashiCorp Serf's wire format (memberlist 0.2.2 as in Debian's
//! serf 0.9.4). So far: the pure codec layers, checked against packets captured from the real
//! serf binary (`tests/golden/`). The SWIM/Lifeguard core, Serf's layer and the tokio driver
//! come next (issue "Membership").

pub mod lzw;
pub mod msgpack;
pub mod wire;
