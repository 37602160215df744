//! The gossip scale benchmark (one ignored test; `tests/bench/gossip_scale.py` runs it in a
//! release build and writes the report). For each cluster size and packet loss, in the
//! seeded simulator of `tests/common/sim.rs` (every packet through the real codec): a cluster
//! that converged long ago (`Sim::settled`: every node starts from one shared view, since N
//! joins cost N² messages); the bytes per node per second over 10 s of steady state; one new
//! node joins node 0: the time until it lists every node alive and every node lists it, and
//! the bytes per node per second meanwhile; false failure verdicts; then one old node is
//! killed: the time until the first survivor declares it dead and until every survivor has;
//! and the CPU seconds and peak memory the point took. `--mass-join N` is the other case:
//! every node joins node 0 at the same instant, and the fraction of nodes whose view is
//! complete is sampled every 10 ms of simulated time for 2 s, then every 100 ms.
//!
//! Arguments, in the environment variable `GOSSIP_SCALE`: --model muster|serf [--sizes 10,30]
//! [--losses 0,5] [--budget CPU_S] [--rss-limit MB] [--mass-join N] [--seed S].
//! Prints one JSON object per line on stdout. `serf` is the same simulator with memberlist's
//! own admission and push/pull scaling (`swim::Config::memberlist_model`) and LAN timings. A
//! point whose projected CPU time exceeds the budget, or whose projected peak memory exceeds
//! `--rss-limit` (8,000 MB by default; both from the last size, growing as the square of the size), is skipped and
//! printed as such; one that runs past the budget is cut short.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "common/sim.rs"]
mod sim;

use std::time::Duration;

use muster::gossip::swim::{Config, EventKind, State};
use sim::{Sim, everyone};

/// This thread's CPU time so far (the simulation runs on one), in seconds.
fn cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: f64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    ns / 1e9
}

/// The process's peak resident memory so far (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Hands memory freed by the last point back to the system and starts the peak over from what
/// is resident now, so each point's peak is its own.
fn reset_peak_rss() {
    // SAFETY: glibc's malloc_trim only releases free heap pages; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Most resident memory a point may be projected to need, by default (two run at once on
/// the machine); `--rss-limit MB` sets another.
const RSS_LIMIT_MB: f64 = 8000.0;

fn config(model: &str, n: usize) -> Config {
    let lan = Config::lan();
    Config {
        // Room for the whole cluster (muster's default holds 5,000).
        max_members: lan.max_members.max(2 * n),
        memberlist_model: model == "serf",
        ..lan
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(v: Option<String>, default: &str) -> Vec<f64> {
    v.unwrap_or_else(|| default.to_owned())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn opt(v: Option<f64>) -> String {
    v.map_or("null".to_owned(), |x| format!("{x:.4}"))
}

fn traffic(sim: &Sim) -> u64 {
    sim.bytes + sim.stream_bytes
}

/// Kills node `victim`; (first survivor's verdict, every survivor's), in seconds after it.
fn detection(sim: &mut Sim, victim: usize, cpu_end: f64) -> (Option<f64>, Option<f64>) {
    let name = sim.names[victim].clone();
    sim.crash(victim);
    let at = sim.now;
    let survivors: Vec<usize> = sim.live();
    let mut all = None;
    while sim.now - at < Duration::from_secs(90) && cpu_s() < cpu_end {
        let next = sim.now + Duration::from_millis(50);
        sim.run_until(next);
        let seen = survivors.iter().all(|&i| {
            sim.nodes[i]
                .as_ref()
                .unwrap()
                .swim()
                .member(&name)
                .is_some_and(|m| matches!(m.state, State::Dead | State::Left))
        });
        if seen {
            all = Some((sim.now - at).as_secs_f64());
            break;
        }
    }
    let first = sim
        .events
        .iter()
        .filter(|e| e.0 >= at && e.2 == EventKind::Fail && e.3 == name)
        .map(|e| (e.0 - at).as_secs_f64())
        .reduce(f64::min);
    (first, all)
}

/// Runs until every node lists the newcomer `new` alive and the newcomer lists every live
/// node alive, in steps of `step`; the simulated time it took, or `None` past `limit` or the
/// CPU deadline. (The rest of each view was complete already; a false verdict meanwhile is
/// counted apart.)
fn join_converges(
    sim: &mut Sim,
    new: usize,
    step: Duration,
    limit: Duration,
    cpu_end: f64,
) -> Option<Duration> {
    let name = sim.names[new].clone();
    let all = everyone(sim);
    let start = sim.now;
    loop {
        let newcomer = sim.sees_all(new, &all);
        let known = newcomer
            && sim.live().iter().all(|&i| {
                sim.nodes[i]
                    .as_ref()
                    .unwrap()
                    .swim()
                    .member(&name)
                    .is_some_and(|m| m.state == State::Alive)
            });
        if known {
            return Some(sim.now - start);
        }
        if sim.now - start >= limit || cpu_s() > cpu_end {
            return None;
        }
        let next = sim.now + step;
        sim.run_until(next);
    }
}

/// One point of the sweep, printed as a JSON line: a cluster of `n` nodes that converged long
/// ago (`Sim::settled`); 10 s of steady state; one new node joins node 0 (converged: it lists
/// everyone and everyone lists it); 5 s later one old node is killed.
fn point(model: &str, n: usize, loss: f64, seed: u64, budget: f64) -> (f64, f64) {
    reset_peak_rss();
    let cpu0 = cpu_s();
    let cpu_end = cpu0 + budget;
    let mut sim = Sim::settled(seed, n, config(model, n + 1));
    sim.loss = loss;
    let (b0, t0) = (traffic(&sim), sim.now);
    let end = sim.now + Duration::from_secs(10);
    sim.run_until(end);
    let steady = (traffic(&sim) - b0) as f64 / n as f64 / (sim.now - t0).as_secs_f64();
    // How much news waits in each node's queue at the end of the steady state: near `n`, the
    // gossip carries less than the cluster makes (every node holds news of nearly every member).
    let queues: Vec<usize> = sim
        .nodes
        .iter()
        .flatten()
        .map(|node| node.swim().queued_broadcasts())
        .collect();
    let queued = queues.iter().sum::<usize>() as f64 / queues.len().max(1) as f64;
    eprintln!(
        "{model} {n} nodes, {:.0} % loss: steady state done, {queued:.0} broadcasts queued per node, {:.0} CPU-s, {:.0} MB",
        loss * 100.0,
        cpu_s() - cpu0,
        peak_rss_mb()
    );
    let (b1, t1) = (traffic(&sim), sim.now);
    sim.add_node(n, 1);
    let conv = join_converges(
        &mut sim,
        n,
        Duration::from_millis(100),
        Duration::from_secs(120),
        cpu_end,
    );
    let join_bytes =
        (traffic(&sim) - b1) as f64 / (n + 1) as f64 / (sim.now - t1).as_secs_f64().max(0.1);
    let false_fail = sim.failures() as f64;
    let (mut first, mut all) = (None, None);
    if conv.is_some() {
        let end = sim.now + Duration::from_secs(5);
        sim.run_until(end);
        (first, all) = detection(&mut sim, n - 1, cpu_end);
    }
    let cpu = cpu_s() - cpu0;
    let rss = peak_rss_mb();
    println!(
        "{{\"kind\": \"point\", \"model\": \"{model}\", \"nodes\": {n}, \"loss\": {loss}, \"seed\": {seed}, \"converged_s\": {}, \"join_bytes_per_node_s\": {join_bytes:.1}, \"steady_bytes_per_node_s\": {steady:.1}, \"queued_per_node\": {queued:.1}, \"false_failures\": {false_fail}, \"detect_first_s\": {}, \"detect_all_s\": {}, \"packets\": {}, \"push_pulls\": {}, \"cpu_s\": {cpu:.2}, \"peak_rss_mb\": {:.0}, \"cut_short\": {}}}",
        opt(conv.map(|d| d.as_secs_f64())),
        opt(first),
        opt(all),
        sim.packets,
        sim.push_pulls,
        rss,
        cpu_s() > cpu_end,
    );
    (cpu, rss)
}

/// The mass join of `n` nodes: the fraction of complete views every 100 ms.
fn mass_join(model: &str, n: usize, seed: u64, budget: f64) {
    let cpu0 = cpu_s();
    let mut sim = Sim::lean(seed, n, config(model, n));
    let all = everyone(&sim);
    let mut series = Vec::new();
    let mut done = None;
    while sim.now < Duration::from_secs(60) && cpu_s() - cpu0 < budget {
        // Every 10 ms for the first 2 s (a join can be done within 100 ms), then every 100 ms.
        let step = if sim.now < Duration::from_secs(2) {
            10
        } else {
            100
        };
        let next = sim.now + Duration::from_millis(step);
        sim.run_until(next);
        let f = sim.complete_fraction(&all);
        series.push(format!("[{:.2}, {f:.4}]", sim.now.as_secs_f64()));
        if f >= 1.0 {
            done = Some(sim.now.as_secs_f64());
            break;
        }
    }
    let serf_agree = done.is_some() && sim.serf_all_alive(&all);
    println!(
        "{{\"kind\": \"mass_join\", \"model\": \"{model}\", \"nodes\": {n}, \"seed\": {seed}, \"converged_s\": {}, \"serf_views_agree\": {serf_agree}, \"packets\": {}, \"bytes\": {}, \"stream_bytes\": {}, \"push_pulls\": {}, \"false_failures\": {}, \"cpu_s\": {:.2}, \"series\": [{}]}}",
        opt(done),
        sim.packets,
        sim.bytes,
        sim.stream_bytes,
        sim.push_pulls,
        sim.failures(),
        cpu_s() - cpu0,
        series.join(", ")
    );
}

/// Ignored by default (minutes of CPU): `GOSSIP_SCALE="--model muster --sizes 10,100" cargo
/// test --release --test gossip_scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn gossip_scale() {
    let args: Vec<String> = std::env::var("GOSSIP_SCALE")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let model = arg(&args, "--model").unwrap_or_else(|| "muster".to_owned());
    let seed: u64 = arg(&args, "--seed").map_or(1, |s| s.parse().unwrap());
    let budget: f64 = arg(&args, "--budget").map_or(240.0, |s| s.parse().unwrap());
    let rss_limit: f64 = arg(&args, "--rss-limit").map_or(RSS_LIMIT_MB, |s| s.parse().unwrap());
    if let Some(n) = arg(&args, "--mass-join") {
        mass_join(&model, n.parse().unwrap(), seed, budget);
    }
    let sizes = list(arg(&args, "--sizes"), "");
    let losses = list(arg(&args, "--losses"), "0,5,10,20");
    for loss in losses {
        let mut last: Option<(usize, f64, f64)> = None;
        for &n in &sizes {
            let n = n as usize;
            let ratio = last.map_or(0.0, |(m, _, _)| (n as f64 / m as f64).powi(2));
            let projected = last.map_or(0.0, |(_, c, _)| c * ratio);
            // Every node holds every member: memory grows as the square of the size too.
            let rss = last.map_or(0.0, |(_, _, r)| r * ratio);
            if projected > budget || rss > rss_limit {
                println!(
                    "{{\"kind\": \"skipped\", \"model\": \"{model}\", \"nodes\": {n}, \"loss\": {}, \"projected_cpu_s\": {projected:.0}, \"projected_rss_mb\": {rss:.0}}}",
                    loss / 100.0
                );
                continue;
            }
            let (cpu, rss) = point(&model, n, loss / 100.0, seed + n as u64, budget);
            last = Some((n, cpu, rss));
        }
    }
}
