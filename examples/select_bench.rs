//! Selection cost of the pure core (`make bench`): algorithms 0 (hash + probe), 32
//! (consistent, weighted rendezvous), 41 (exact weights) at N = 10, 100, 1000 destinations,
//! ns per pick (single thread, no Kamailio: the key hashing and the choice only). Alg 32 is
//! also shown with failover records on (the full score order, as `ds_select_dst` builds
//! with `flags=2`) and with weights.
//!
//!   cargo run --release --example select_bench [picks]

use std::hint::black_box;
use std::time::Instant;

use dispatcher::ds::algs::{self, consistent, Key, Opts};
use dispatcher::ds::attrs::Attrs;
use dispatcher::ds::dest::Dest;
use dispatcher::ds::hash::ds_hash;
use dispatcher::ds::order::DestSet;
use dispatcher::ds::snapshot::{build, Snap};
use dispatcher::ds::uri::{Proto, Scheme};

fn heap(n: usize) -> *mut u8 {
    // SAFETY: non-zero size, valid alignment; leaked on purpose (one block per size).
    unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(n.max(16), 16).expect("layout")) }
}

fn snapshot(n: usize, weighted: bool) -> Snap<'static> {
    let dests = (0..n)
        .map(|i| Dest {
            setid: 1,
            uri: format!("sip:10.{}.{}.{}:5060", i / 65536, (i / 256) % 256, i % 256).into_bytes(),
            flags: 0,
            priority: 0,
            attrs: Attrs { weight: if weighted { 1 + (i % 100) as i32 } else { 1 }, ..Attrs::default() },
            scheme: Scheme::Sip,
            host: b"10.0.0.1".to_vec(),
            port: 5060,
            proto: Proto::None,
            ip: None,
            more_ips: vec![],
            sock: 0,
            line: 1,
            col: 1,
        })
        .collect();
    let mut seed = 1u32;
    let p = build(&[DestSet { id: 1, dests }], 1, (0, 0), &mut |_, _, _| None, &mut heap, &mut || {
        seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
        seed >> 1
    })
    .expect("build");
    // SAFETY: just built, never freed.
    unsafe { Snap::from_ptr(p) }.expect("snap")
}

fn main() {
    let picks: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let cids: Vec<String> = (0..4096).map(|i| format!("{:016x}-{i}@bench.example", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    let o = Opts::default();
    let orec = Opts { records: true, ..Opts::default() };
    println!("| N | alg 0 (ns/pick) | alg 32 (ns/pick) | alg 32 + records | alg 32 weighted | alg 41 (ns/pick) | 32 / 0 |");
    println!("|---|---|---|---|---|---|---|");
    for n in [10usize, 100, 1000] {
        let s = snapshot(n, false);
        let sw = snapshot(n, true);
        let set = s.set(1).expect("set");
        let setw = sw.set(1).expect("set");
        let run = |f: &dyn Fn(&str) -> usize| -> f64 {
            let t = Instant::now();
            let mut acc = 0usize;
            for i in 0..picks {
                acc = acc.wrapping_add(f(&cids[i & 4095]));
            }
            black_box(acc);
            t.elapsed().as_nanos() as f64 / picks as f64
        };
        let a0 = run(&|c| {
            let k = Key::Hash(ds_hash(Some(c.as_bytes()), None));
            algs::choose(&set, 0, k, &o).map(|c| c.idx).unwrap_or(0)
        });
        let a32 = run(&|c| {
            let k = consistent::key64(Some(c.as_bytes()), None);
            consistent::pick(&set, k, false).unwrap_or(0)
        });
        let a32r = run(&|c| {
            let k = Key::Key64(consistent::key64(Some(c.as_bytes()), None));
            algs::choose(&set, 32, k, &orec).map(|c| c.idx).unwrap_or(0)
        });
        let a32w = run(&|c| {
            let k = consistent::key64(Some(c.as_bytes()), None);
            consistent::pick(&setw, k, false).unwrap_or(0)
        });
        let a41 = run(&|_| algs::choose(&setw, 41, Key::None, &o).map(|c| c.idx).unwrap_or(0));
        println!("| {n} | {a0:.0} | {a32:.0} | {a32r:.0} | {a32w:.0} | {a41:.0} | {:.1} |", a32 / a0);
    }
}
