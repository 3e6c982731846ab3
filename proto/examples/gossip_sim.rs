//! Gossip benchmark in virtual time: cold-start convergence from one seed, failure
//! detection time and steady-state gossip traffic, for several mesh sizes.
//!
//! ```text
//! cargo run --release -p weftnet-proto --example gossip_sim -- --nodes 100,1000,5000
//!     [--seed N] [--loss 0.01] [--min-delay-ms 1] [--max-delay-ms 20] [--lan] [--verbose]
//! ```
//!
//! Every node starts at t=0 and joins node 0. "converged" is the virtual time at which
//! every node holds the same view of all N records (checked every 100 ms). Then the
//! mesh runs quietly for 30 s (rumors drain) and traffic is measured over the next
//! 30 s: bytes of UDP payload sent per node per second. Finally one node is killed;
//! "failure known" is the time until every other node holds it dead.

use std::time::{Duration, Instant};
use weftnet_proto::gossip::sim::{Sim, SimConfig};
use weftnet_proto::gossip::{GossipConfig, GossipError, MemberState};

struct Args {
    nodes: Vec<usize>,
    seed: u64,
    loss: f64,
    min_delay: Duration,
    max_delay: Duration,
    lan: bool,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![100, 1000],
        seed: 1,
        loss: 0.0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        lan: false,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => {
                a.nodes = value()?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|_| format!("bad node count {n}")))
                    .collect::<Result<_, _>>()?
            }
            "--seed" => a.seed = value()?.parse().map_err(|_| "bad seed")?,
            "--loss" => a.loss = value()?.parse().map_err(|_| "bad loss")?,
            "--min-delay-ms" => {
                a.min_delay = Duration::from_millis(value()?.parse().map_err(|_| "bad delay")?)
            }
            "--max-delay-ms" => {
                a.max_delay = Duration::from_millis(value()?.parse().map_err(|_| "bad delay")?)
            }
            "--lan" => a.lan = true,
            "--verbose" => a.verbose = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

fn run(n: usize, args: &Args) {
    let wall = Instant::now();
    let gossip = if args.lan {
        GossipConfig::lan()
    } else {
        GossipConfig::default()
    };
    let mut sim = Sim::new(SimConfig {
        seed: args.seed,
        loss: args.loss,
        min_delay: args.min_delay,
        max_delay: args.max_delay,
        gossip,
        record_events: false,
        ..SimConfig::default()
    });
    let secret = [42u8; 32];
    for i in 0..n {
        let prefix = format!("10.{}.{}.0/24", 64 + (i >> 8), i & 0xff);
        sim.add_node(secret, vec![prefix.parse().expect("prefix")]);
    }
    for i in 1..n {
        sim.join(i, &[0]);
    }
    let step = Duration::from_millis(100);
    let verbose = args.verbose;
    let mut last_print = Duration::ZERO;
    let converged = sim.run_until_true(step, Duration::from_secs(300), |s| {
        if verbose && s.elapsed() >= last_print + Duration::from_secs(1) {
            last_print = s.elapsed();
            let counts: Vec<u32> = s
                .nodes()
                .iter()
                .filter_map(|x| x.gossip.as_ref().map(|g| g.view_digest().entries))
                .collect();
            let min = counts.iter().min().copied().unwrap_or(0);
            let mean =
                counts.iter().map(|&c| u64::from(c)).sum::<u64>() / counts.len().max(1) as u64;
            let bytes: u64 = s.nodes().iter().map(|x| x.sent_bytes).sum();
            eprintln!(
                "  t={:>5.1}s entries min {min} mean {mean}, sent {:.1} KB/node",
                s.elapsed().as_secs_f64(),
                bytes as f64 / 1000.0 / n as f64
            );
        }
        s.converged(n as u32)
    });
    let t_conv = sim.elapsed();

    // Quiet period, then measure steady-state traffic.
    sim.run_until(t_conv + Duration::from_secs(30));
    let before: u64 = sim.nodes().iter().map(|x| x.sent_bytes).sum();
    let window = Duration::from_secs(30);
    let t0 = sim.elapsed();
    sim.run_until(t0 + window);
    let after: u64 = sim.nodes().iter().map(|x| x.sent_bytes).sum();
    let per_node = (after - before) as f64 / n as f64 / window.as_secs_f64();

    // Kill one node and wait until everyone holds it dead.
    let victim = n / 2;
    let key = sim.node(victim).key;
    sim.kill(victim);
    let t_kill = sim.elapsed();
    let known = sim.run_until_true(step, t_kill + Duration::from_secs(120), |s| {
        s.nodes().iter().all(|x| {
            x.gossip
                .as_ref()
                .is_none_or(|g| g.member(&key).is_some_and(|m| m.state == MemberState::Dead))
        })
    });
    let errors: u64 = sim.errors().iter().sum();
    if errors > 0 {
        let named: Vec<String> = GossipError::ALL
            .iter()
            .filter(|e| sim.error_count(**e) > 0)
            .map(|e| format!("{} {}", e.as_str(), sim.error_count(*e)))
            .collect();
        eprintln!("  errors: {}", named.join(", "));
    }
    println!(
        "| {:>5} | {:>12} | {:>14} | {:>10.0} B/s | {:>7.1} s | {:>6} |",
        n,
        secs(converged),
        secs(known.map(|t| t - t_kill)),
        per_node,
        wall.elapsed().as_secs_f64(),
        errors,
    );
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gossip_sim: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "loss {:.1}%, link delay {}-{} ms, seed {}",
        args.loss * 100.0,
        args.min_delay.as_millis(),
        args.max_delay.as_millis(),
        args.seed
    );
    println!("| nodes | converged    | failure known  | steady traffic/node | wall    | errors |");
    println!("|------:|-------------:|---------------:|--------------------:|--------:|-------:|");
    for &n in &args.nodes {
        run(n, &args);
    }
}
