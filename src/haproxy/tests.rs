//! Tests of the pure cores that need a real instant (a member's `since`).

#![allow(clippy::disallowed_methods)]

mod model {
    use super::super::model::*;
    use crate::gossip::serf::{Member, Status};
    use std::net::SocketAddr;

    fn member(name: &str, ip: &str, status: Status, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.to_owned(),
            addr: SocketAddr::new(ip.parse().expect("ip"), 7946),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            status,
            suspect: false,
            status_ltime: 0,
            since: std::time::Instant::now(),
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
            },
        );
        assert_eq!(all.members.len(), 5);
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
            },
        );
        let some = all.only(|m| m.name != "b");
        assert_eq!(some.members.len(), 2);
        assert_eq!(some.addresses.len(), 2);
        assert_eq!(some.members[1].id, all.members[2].id);
        assert_eq!(some.addresses[1].host, "c");
    }
}

#[test]
fn colliding_ids_take_the_next_free_number() {
    // Find two names with the same id by brute force (ids are 30 bits: a few tens of
    // thousands of names are enough).
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..200_000)
        .map(|i| format!("n{i}"))
        .find_map(|n| {
            seen.insert(super::model::server_id(&n), n.clone())
                .map(|o| (o, n))
        })
        .expect("a collision");
    let view: Vec<_> = [&a, &b]
        .iter()
        .map(|n| crate::gossip::serf::Member {
            name: (*n).clone(),
            addr: "10.0.0.1:7946".parse().expect("addr"),
            tags: Default::default(),
            status: crate::gossip::serf::Status::Alive,
            suspect: false,
            status_ltime: 0,
            since: std::time::Instant::now(),
        })
        .collect();
    let m = super::model::Model::new(
        &view,
        &super::model::Selection {
            role: None,
            default_port: 80,
        },
    );
    let ids: Vec<u32> = m.members.iter().map(|m| m.id).collect();
    assert_eq!(ids[1], ids[0] % (1 << 30) + 1, "{a} {b} {ids:?}");
}
