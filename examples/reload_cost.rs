//! The pure-core half of a reload that shares no set (parse, resolve IP literals, order,
//! build the snapshot; what start-up does) on a list file, for profiling with callgrind
//! (issue 14):
//!   cargo build --release --example reload_cost
//!   valgrind --tool=callgrind target/release/examples/reload_cost list.txt 3
//! With a third argument `share`, rounds after the first share the sets the list repeats
//! unchanged, as `dispatcher.reload` does (`ds::reuse`): the cost of reloading the same list.
use dispatcher::ds::dest::{prepare_entry, LoadEnv};
use dispatcher::ds::listfile::parse_list_ref;
use dispatcher::ds::order::order_sets;
use dispatcher::ds::reuse::{self, Plan, Rules};
use dispatcher::ds::snapshot::{build_sharing, CarryIndex, SetSrc, Snap};
use dispatcher::ds::uri::{Proto, Scheme};
use std::net::IpAddr;

struct Env;
impl LoadEnv for Env {
    fn resolve_host(&mut self, _: &[u8], _: Scheme, _: Proto, _: u16) -> Option<IpAddr> {
        None
    }
    fn socket_by_addr(&mut self, _: &[u8]) -> usize {
        0
    }
    fn socket_by_name(&mut self, _: &[u8]) -> usize {
        0
    }
    fn default_socket(&self) -> usize {
        0
    }
    fn allow_ipv6(&self) -> bool {
        false
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: reload_cost <list file> [rounds]");
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let share = args.get(3).is_some_and(|a| a == "share");
    let mut old: *mut dispatcher::ds::snapshot::Header = std::ptr::null_mut();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 32) as u32
    };
    for gen in 1..=rounds as u64 {
        let text = std::fs::read(path).expect("read");
        let entries = parse_list_ref(&text, path).expect("parse");
        // SAFETY: `old` is null or the block built in the previous round, still allocated.
        let prev = unsafe { Snap::from_ptr(old) };
        let rules = Rules { attrs_none: false, dns_mode: 0, allow_ipv6: false };
        let plan = if share { reuse::plan(&entries, prev, &rules) } else { Plan::none(entries.len()) };
        let mut dests = Vec::with_capacity(entries.len());
        let mut pos = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if plan.shared_entry[i] {
                continue;
            }
            if let Ok((d, _)) = prepare_entry(e, false, 0, &mut Env) {
                dests.push(d);
                pos.push(i as u32);
            }
        }
        // the sets ordered without moving the destinations
        let (order, spans) = order_sets(&dests, &pos, &plan.firsts());
        let sets: Vec<SetSrc<'_>> = spans.iter().map(|sp| SetSrc::indexed(sp.id, &dests, &order[sp.start..sp.end])).collect();
        let idx = CarryIndex::new(prev);
        let p = build_sharing(&sets, prev, &mut |id, len| if len == 0 { plan.block(id) } else { None }, gen, (0, 0), &mut |id, uri, fl| idx.carry(id, uri, fl, false), &mut |n| {
            // SAFETY: non-zero size, valid alignment; leaked on purpose (a profiling tool)
            unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(n.max(16), 16).expect("layout")) }
        }, &mut |_| {}, &mut rng)
        .expect("build");
        old = p;
        eprintln!("round {gen}: {} destinations in {} sets ({} shared)", sets.iter().map(|s| s.len()).sum::<usize>() + plan.ndests, sets.len(), plan.sets.len());
    }
}
