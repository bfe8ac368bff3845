//! `dispatcher.explain <setid> <alg> <key>` (issue 12): the destination algorithm `alg`
//! would choose in set `setid` for `key` right now, and why — without routing anything and
//! without consuming a stateful algorithm's pick (round-robin cursor, weight-table cursor,
//! exact-weight counter stay where they are).
//!
//! The key is what the algorithm reads from the message: the Call-ID (0/32), a URI
//! (1/2/3 and 33/34/35, with the `flags` bit-1 rule), the username (5/37; empty = the
//! round-robin fallback), the `hash_pvar` text (7/39), a number for 6 (the random value);
//! stateful algorithms ignore it. The reply:
//!
//! ```text
//! { SETID, ALG, KEY, HASH, INDEX, URI, FLAGS,
//!   NRSKIPPED, SKIPPED: [ { IDX, URI, FLAGS } ... ],   passed over (unusable, or ranked higher)
//!   NRFAILOVER, FAILOVER: [ { IDX, URI } ... ] }        the failover records, selected first
//! ```
//!
//! It runs the same `ds::algs::choose` and the same key hashing as `ds_select_dst`, so it
//! agrees with real routing (tests/it_consistent.rs compares 200 calls).

use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;

use crate::ds::algs::{self, consistent, hashing, Family, Key};
use crate::ds::select;
use crate::ds::snapshot::SetView;
use crate::kam::rpc::{Rpc, RpcStruct};
use crate::module::rpc::flag_letters;
use crate::module::{guard, selkey, state};
use crate::sys;

/// What `explain` found, in plain data (unit-testable).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Explained {
    pub hash: u64,
    pub idx: usize,
    pub skipped: Vec<usize>,
    pub failover: Vec<usize>,
}

/// Explains algorithm `alg` (already [`algs::effective`]) for `key` on `set`.
pub fn explain(set: &SetView<'_>, alg: i32, key: Key, use_default: bool, failover_on: bool) -> Option<Explained> {
    let o = algs::Opts { use_default, now_us: now_us(), peek: true, records: true };
    let c = algs::choose(set, alg, key, &o)?;
    let nr = set.dests.len();
    let (skipped, failover): (Vec<usize>, Vec<usize>) = if let Some(order) = &c.order {
        // consistent: every destination ranked above the chosen one was passed over
        let r = consistent::ranking(set, c.hash, use_default);
        let sk = r.iter().map(|x| x.0).take_while(|&i| i != c.idx).collect();
        let _ = order;
        (sk, consistent::failover(set, &c, use_default, u32::MAX))
    } else if let Some(ranked) = &c.ranked {
        let mut fo: Vec<usize> = ranked
            .iter()
            .filter(|x| x.idx >= 0 && x.flags & (crate::ds::snapshot::DS_INACTIVE | crate::ds::snapshot::DS_DISABLED) == 0)
            .map(|x| x.idx as usize)
            .filter(|&i| !(use_default && i == nr - 1))
            .collect();
        if use_default && c.idx != nr - 1 {
            fo.push(nr - 1);
        }
        (vec![], fo)
    } else {
        let sk = hashing::skipped(set.dests, c.hash as u32, use_default, c.idx);
        let fo = select::failover_order(set.dests, c.idx, use_default, u32::MAX, &|j| {
            alg == select::ALG_CALLLOAD && set.dests.get(j).map(|d| d.maxload != 0 && d.load() >= d.maxload).unwrap_or(false)
        });
        (sk, fo)
    };
    Some(Explained { hash: c.hash, idx: c.idx, skipped, failover: if failover_on { failover } else { vec![] } })
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn reply(th: &RpcStruct, set: &SetView<'_>, setid: i32, alg: i32, key: &[u8], e: &Explained) -> Result<(), ()> {
    let d = set.dests.get(e.idx).ok_or(())?;
    th.int("SETID", setid)?;
    th.int("ALG", alg)?;
    th.str("KEY", Some(key))?;
    // as text: a 64-bit key (consistent algorithms) does not fit every RPC transport's ints
    th.cstring("HASH", &e.hash.to_string())?;
    th.int("INDEX", e.idx as i32)?;
    th.str("URI", Some(d.uri.bytes()))?;
    th.cstring("FLAGS", &flag_letters(d.flags.load(Ordering::Relaxed)))?;
    let sk = th.int_and_array("NRSKIPPED", e.skipped.len() as i32, "SKIPPED")?;
    for &i in &e.skipped {
        let Some(x) = set.dests.get(i) else { continue };
        let h = sk.child_struct("DEST")?;
        h.int("IDX", i as i32)?;
        h.str("URI", Some(x.uri.bytes()))?;
        h.cstring("FLAGS", &flag_letters(x.flags.load(Ordering::Relaxed)))?;
    }
    let fo = th.int_and_array("NRFAILOVER", e.failover.len() as i32, "FAILOVER")?;
    for &i in &e.failover {
        let Some(x) = set.dests.get(i) else { continue };
        let h = fo.child_struct("DEST")?;
        h.int("IDX", i as i32)?;
        h.str("URI", Some(x.uri.bytes()))?;
    }
    Ok(())
}

/// The RPC handler.
///
/// # Safety
/// Called by Kamailio's RPC layer with its `rpc_t` and context.
pub unsafe extern "C" fn rpc_explain(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard("dispatcher.explain", (), || {
        // SAFETY: arguments of an RPC handler call.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let (mut setid, mut alg): (c_int, c_int) = (0, 0);
        let mut kv = sys::str_ { s: std::ptr::null_mut(), len: 0 };
        // SAFETY: "dd*S" matches (int*, int*, str*).
        let n = unsafe {
            rpc.scan_raw(c"dd*S", &[
                &mut setid as *mut c_int as *mut c_void,
                &mut alg as *mut c_int as *mut c_void,
                &mut kv as *mut sys::str_ as *mut c_void,
            ])
        };
        if n < 2 {
            rpc.fault(500, "Invalid Parameters");
            return;
        }
        let keytext: Vec<u8> = if n >= 3 { crate::kam::param::unsafe_bytes(kv).to_vec() } else { Vec::new() };
        let cfg = state::cfg();
        state::with_snap(|snap| {
            let Some(set) = snap.and_then(|s| s.set(setid)) else {
                rpc.fault(404, "Destination set not found");
                return;
            };
            if set.dests.is_empty() {
                rpc.fault(404, "Destination set is empty");
                return;
            }
            let valg = algs::effective(&set, alg);
            let key = match algs::family(valg) {
                Some(Family::Hash) if valg == select::ALG_RANDOM => match std::str::from_utf8(&keytext).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
                    Some(v) => Key::Hash(v),
                    None => {
                        rpc.fault(400, "Algorithm 6 is random: give the random value as the key");
                        return;
                    }
                },
                Some(Family::Hash | Family::Consistent) => match selkey::key_from_text(valg, &keytext) {
                    Ok(k) => k,
                    Err(e) => {
                        rpc.fault(400, &format!("Bad key: {e}"));
                        return;
                    }
                },
                Some(_) => Key::None,
                None => {
                    rpc.fault(400, "Unknown algorithm");
                    return;
                }
            };
            let failover_on = cfg.flags & 2 != 0 && !cfg.xavp_dst.is_empty();
            let Some(e) = explain(&set, valg, key, cfg.use_default, failover_on) else {
                rpc.fault(404, "No usable destination");
                return;
            };
            let Some(th) = rpc.add_struct() else {
                rpc.fault(500, "Internal error root reply");
                return;
            };
            if reply(&th, &set, setid, alg, &keytext, &e).is_err() {
                rpc.fault(500, "Internal error reply structure");
            }
        })
    })
}

/// Documentation string of the RPC.
pub static DOC_EXPLAIN: crate::module::rpc::Doc = crate::module::rpc::Doc([
    c"Explain which destination an algorithm chooses for a key: dispatcher.explain setid alg key".as_ptr(),
    std::ptr::null(),
]);
