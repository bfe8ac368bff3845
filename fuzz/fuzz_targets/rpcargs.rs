//! RPC argument handling: the arguments of `dispatcher.set_state`, `set_duid_state`, `add`,
//! `remove`, `hash` and `list` as `rpc->scan` would deliver them, through `ds::rpcargs`, then
//! applied to a list the way the module does (state change on a snapshot; add/remove through
//! `prepare_dest` and a rebuilt snapshot with carried state).
//! Input: byte 0 = release/settings; then `\n`-separated lines: line 0's first byte picks the
//! command, the other lines are the arguments (`d` arguments must be decimal `int`s, else the
//! scan stops there, as Kamailio's does).
use std::sync::atomic::Ordering;

use dispatcher::ds::dest::prepare_dest;
use dispatcher::ds::listfile::parse_list;
use dispatcher::ds::rpcargs;
use dispatcher_fuzz::{check_carry, check_snapshot, order, prepare_all, scramble_state, Block, Cfg, FakeEnv, Rng};

const BASE: &[u8] = b"1 sip:10.0.0.1:5060 0 0 duid=a\n1 sip:10.0.0.2:5060 0 5 duid=b;weight=50\n\
2 sip:gw.example.com 8 0 duid=gw;socket=udp:10.0.0.9:5060\n2 sip:[2001:db8::1]:5070 16 1\n\
7 sips:secure.example:5061;transport=tls 0 3 rweight=20;maxload=3\n";

/// Scans `args` like `rpc->scan(fmt)`: the number of values read.
fn scan(fmt: &str, args: &[&[u8]], ints: &mut Vec<i32>, strs: &mut Vec<Vec<u8>>) -> i32 {
    let mut n = 0;
    let mut it = args.iter();
    for c in fmt.chars() {
        match c {
            '*' | '.' => continue,
            'd' => match it.next().and_then(|a| std::str::from_utf8(a).ok()).and_then(|s| s.parse::<i32>().ok()) {
                Some(v) => ints.push(v),
                None => return n,
            },
            _ => match it.next() {
                Some(a) => strs.push(a.to_vec()),
                None => return n,
            },
        }
        n += 1;
    }
    n
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&b, rest)) = data.split_first() else { return };
        let cfg = Cfg::from_byte(b);
        cfg.apply();
        let lines: Vec<&[u8]> = rest.split(|&c| c == b'\n').collect();
        let Some((cmd, args)) = lines.split_first() else { return };
        let mut rng = Rng::new(dispatcher_fuzz::fnv(data));
        let base = parse_list(BASE, "base").expect("base list");
        let base_cfg = Cfg { dns_mode: 1, ..cfg };
        let dests = prepare_all(&base, &base_cfg);
        let sets = order(dests.clone());
        let block = Block::build(&sets, 1, &mut |_, _, _| None, &mut rng);
        let snap = block.snap();
        scramble_state(snap, &mut rng);
        let (mut ints, mut strs) = (Vec::new(), Vec::new());
        match cmd.first().copied().unwrap_or(0) % 6 {
            k @ (0 | 1) => {
                let n = scan(".SdS", args, &mut ints, &mut strs);
                let st = strs.first().cloned().unwrap_or_default();
                let key = strs.get(1).cloned().unwrap_or_default();
                let Ok(req) = rpcargs::set_state(n, &st, ints.first().copied().unwrap_or(0), &key, k == 1) else { return };
                assert_eq!(req.state & !dispatcher::ds::snapshot::states_all(), 0, "only state bits");
                let Some(set) = snap.set(req.group) else { return };
                let before: Vec<i32> = set.dests.iter().map(|d| d.flags.load(Ordering::Relaxed)).collect();
                let mut hit = None;
                for (i, d) in set.dests.iter().enumerate() {
                    if req.matches(d.uri.bytes(), d.duid.bytes()) {
                        d.flags.store(req.apply(before[i]), Ordering::Relaxed);
                        hit.get_or_insert(i);
                        if !req.all() {
                            break;
                        }
                    }
                }
                for (i, d) in set.dests.iter().enumerate() {
                    let now = d.flags.load(Ordering::Relaxed);
                    let changed = req.all() || hit == Some(i);
                    if changed {
                        assert_eq!(now & !dispatcher::ds::snapshot::states_all(), before[i] & !dispatcher::ds::snapshot::states_all());
                        assert_eq!(now & dispatcher::ds::snapshot::states_all(), req.state);
                    } else {
                        assert_eq!(now, before[i]);
                    }
                }
            }
            2 => {
                let n = scan("dS*ddS", args, &mut ints, &mut strs);
                let i = |k: usize| ints.get(k).copied().unwrap_or(0);
                let s = |k: usize| strs.get(k).cloned().unwrap_or_default();
                let Ok(e) = rpcargs::add(n, i(0), &s(0), i(1), i(2), &s(1)) else { return };
                let mut env = FakeEnv { ipv6: cfg.ipv6, default_sock: 0 };
                let Ok((d, _)) = prepare_dest(&e, cfg.attrs_none, cfg.dns_mode, &mut env) else { return };
                dispatcher_fuzz::check_dest(&e, &d, &cfg);
                let mut all = dests.clone();
                all.push(d.clone());
                let new_sets = order(all);
                let nb = Block::build(&new_sets, 2, &mut |_, _, _| None, &mut rng);
                check_snapshot(&new_sets, nb.snap());
                let v = nb.snap().set(d.setid).expect("added set");
                assert!(v.dests.iter().any(|x| x.uri.bytes() == &d.uri[..]), "added destination findable");
                check_carry(snap, &new_sets, &mut rng);
            }
            3 => {
                let n = scan("dS", args, &mut ints, &mut strs);
                let Ok(e) = rpcargs::remove(n, ints.first().copied().unwrap_or(0), &strs.first().cloned().unwrap_or_default()) else { return };
                let mut env = FakeEnv { ipv6: cfg.ipv6, default_sock: 0 };
                let Ok((d, _)) = prepare_dest(&e, cfg.attrs_none, cfg.dns_mode, &mut env) else { return };
                let kept: Vec<_> = dests.iter().filter(|x| !(x.setid == d.setid && x.uri == d.uri)).cloned().collect();
                let new_sets = order(kept);
                check_carry(snap, &new_sets, &mut rng);
                let nb = Block::build(&new_sets, 2, &mut |_, _, _| None, &mut rng);
                if let Some(v) = nb.snap().set(d.setid) {
                    assert!(!v.dests.iter().any(|x| x.uri.bytes() == &d.uri[..]), "removed destination gone");
                }
            }
            4 => {
                let n = scan("dS*S", args, &mut ints, &mut strs);
                let nslots = ints.first().copied().unwrap_or(0);
                let s = |k: usize| strs.get(k).cloned().unwrap_or_default();
                if let Ok((_, slot)) = rpcargs::hash(n, nslots, &s(0), &s(1)) {
                    assert!(if nslots > 0 { slot < nslots as u32 } else { slot == 0 });
                }
            }
            _ => {
                let _ = rpcargs::list_mode(args.first().copied());
            }
        }
    });
}
