//! The header of an edited list (`dispatcher.add` / `remove`), derived from the previous one
//! (a child module of `snapshot`: it writes the header's private fields).
//!
//! An edit rebuilds the set order (the C module's AVL tree rebuilt from the previous order:
//! every position changes), so the new header's set arrays are a permutation of the old ones
//! plus or minus the edited set. [`plan_edit`] finds the old position of every new position in
//! one walk of both id indexes by rank (the new order's `by_id` from `order::avl_order` and the
//! old header's `ids_sorted`: the two differ only around the edited set), checking every id,
//! and the position of the edited set's first destination in the new list (for the new
//! internal ids); [`derive_planned`] then writes the new header straight into its block in one
//! pass by position (no intermediate arrays), the sorted id index as a copy of `by_id`.

use super::*;

/// Where each set of a new order comes from (see the module doc).
pub struct EditPlan {
    /// `op_of[new position]`: the set's position in the old list; `NEW` for the edited set
    /// when it gets a new block.
    op_of: Vec<u32>,
    /// The new order (set ids in iteration order) and its index by id.
    ord: Vec<i32>,
    by_id: Vec<u32>,
    /// Whether `ord`/`by_id` are the caller's (`order`, `by_id_pos`) rather than the copies.
    borrowed: bool,
    /// The edited set and its new position (None: no new block).
    tid: Option<i32>,
    new_pos: Option<usize>,
    /// Destinations (old list) of the sets before the edited set in the new order.
    first_di: usize,
    /// Old position of the edited set (None: not in the old list).
    old_t: Option<usize>,
}

const NEW: u32 = u32::MAX;

impl EditPlan {
    /// Where the edited set's first destination sits in the new list (0 without one).
    pub fn first_di(&self) -> usize {
        self.first_di
    }
    /// The new position of the edited set (None: no new block).
    pub fn new_pos(&self) -> Option<usize> {
        self.new_pos
    }
}

/// Plans the new header of an edit of `old`: the sets come in `order` (iteration order, as
/// `order::SetOrder::ids`), `by_id_pos` its index by id (`SetOrder::by_id`; None: sorted
/// here), `tid` the edited set and `builds` whether it gets a new block (false: it is gone, and
/// is left out of `order` if there). Every other id of `order` must be in `old`.
pub fn plan_edit(old: Snap<'_>, order: &[i32], by_id_pos: Option<&[u32]>, tid: Option<i32>, builds: bool) -> Result<EditPlan, BuildError> {
    let tid_new = tid.filter(|_| builds);
    // the fast path takes the caller's order and index as they are; the edited set left out
    // of the order, or no index, makes copies (sorted here)
    let given = by_id_pos.filter(|p| p.len() == order.len());
    let drop_t = tid.filter(|_| !builds).is_some_and(|t| match given {
        Some(p) => p.binary_search_by(|&k| order.get(k as usize).copied().unwrap_or(i32::MAX).cmp(&t)).is_ok(),
        None => order.contains(&t),
    });
    let (ord, by_id, borrowed) = match given {
        Some(_) if !drop_t => (Vec::new(), Vec::new(), true),
        _ => {
            let ord: Vec<i32> = order.iter().copied().filter(|&id| Some(id) != tid || builds).collect();
            let mut v: Vec<(i32, u32)> = ord.iter().enumerate().map(|(p, &id)| (id, p as u32)).collect();
            v.sort_unstable();
            (ord, v.iter().map(|x| x.1).collect(), false)
        }
    };
    let (o, b) = if borrowed { (order, given.unwrap_or(&[])) } else { (ord.as_slice(), by_id.as_slice()) };
    let new_pos = match tid_new {
        Some(t) => {
            let r = b.binary_search_by(|&k| o.get(k as usize).copied().unwrap_or(i32::MAX).cmp(&t)).map_err(|_| BuildError::Inconsistent)?;
            Some(*b.get(r).ok_or(BuildError::Inconsistent)? as usize)
        }
        None => None,
    };
    let old_t = tid.and_then(|id| old.set_pos(id));
    let (oids, oidv, of) = (old.ids_sorted(), old.ids(), old.firsts());
    let mut op_of: Vec<u32> = vec![NEW; o.len()];
    let mut first_di = 0usize;
    let before = new_pos.unwrap_or(0);
    let mut j = 0usize;
    let mut prev: Option<i32> = None;
    for &np in b {
        let id = *o.get(np as usize).ok_or(BuildError::Inconsistent)?;
        // the index must be sorted by id (strictly: no id twice)
        if prev.is_some_and(|p| p >= id) {
            return Err(BuildError::Inconsistent);
        }
        prev = Some(id);
        if Some(id) == tid_new {
            continue;
        }
        // the old set with this id: the next one in the old index (old sets missing from the
        // new order, the edited set's old block, are passed over)
        let op = loop {
            let op = *oids.get(j).ok_or(BuildError::Inconsistent)?;
            let oid = *oidv.get(op as usize).ok_or(BuildError::Inconsistent)?;
            j += 1;
            if oid == id {
                break op;
            }
            if oid > id {
                return Err(BuildError::Inconsistent);
            }
        };
        *op_of.get_mut(np as usize).ok_or(BuildError::Inconsistent)? = op;
        if (np as usize) < before {
            let op = op as usize;
            first_di += of.get(op + 1).zip(of.get(op)).map_or(0, |(e, s)| (e - s) as usize);
        }
    }
    Ok(EditPlan { op_of, ord, by_id, borrowed, tid, new_pos, first_di, old_t })
}

/// [`derive_ordered`] with a plan from [`plan_edit`] on the same `old`, `order` and by-id
/// index (`order`, `by_id_pos` are used when the plan took them as they are).
///
/// # Safety
/// As for [`derive`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn derive_planned(
    old: Snap<'_>,
    plan: &EditPlan,
    order: &[i32],
    by_id_pos: Option<&[u32]>,
    new_blk: Option<*mut SetBlk>,
    generation: u64,
    reset: Option<bool>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
) -> Result<*mut Header, BuildError> {
    let (ord, by_id) = if plan.borrowed { (order, by_id_pos.unwrap_or(&[])) } else { (plan.ord.as_slice(), plan.by_id.as_slice()) };
    let n = ord.len();
    if by_id.len() != n || plan.op_of.len() != n || new_blk.is_some() != plan.new_pos.is_some() {
        return Err(BuildError::Inconsistent);
    }
    let (ob, of) = (old.blks(), old.firsts());
    // every position has its block before anything is allocated
    for (np, &op) in plan.op_of.iter().enumerate() {
        let ok = if op == NEW { plan.new_pos == Some(np) } else { (op as usize) < ob.len() && (op as usize) + 1 < of.len() };
        if !ok {
            return Err(BuildError::Inconsistent);
        }
    }
    let tid = plan.tid;
    let mut nnotes = old.h.nnotes;
    if let Some(b) = plan.old_t.and_then(|p| old.blk(p)) {
        nnotes -= b.maybe_notes as u32;
    }
    if let Some(b) = new_blk {
        // SAFETY: a live block (caller).
        nnotes += unsafe { &*b }.maybe_notes as u32;
    }
    // the address index: the edited set's entries go to the delta (its base entries are
    // ignored from now on); once the delta outgrows a fraction of the base, one merge
    let (mut a4, mut a6) = (Vec::new(), Vec::new());
    if let Some(b) = new_blk {
        // SAFETY: a live block (caller).
        set_ip_entries(&unsafe { &*b }.view(), &mut a4, &mut a6);
        a4.sort_unstable();
        a6.sort_unstable();
    }
    let (od4, od6) = (old.ip4(), old.ip6());
    let nrm4 = tid.map_or(0, |t| od4.iter().filter(|e| e.set == t).count());
    let nrm6 = tid.map_or(0, |t| od6.iter().filter(|e| e.set == t).count());
    let n4 = (od4.len() + a4.len()).checked_sub(nrm4).ok_or(BuildError::Inconsistent)?;
    let n6 = (od6.len() + a6.len()).checked_sub(nrm6).ok_or(BuildError::Inconsistent)?;
    let odead = old.dead();
    let dead_ins = tid.and_then(|t| odead.binary_search(&t).err().map(|p| (p, t)));
    let ndead = odead.len() + usize::from(dead_ins.is_some());
    let (b4, b6) = (old.base4(), old.base6());
    let rebase = n4 + n6 + ndead > DELTA_MIN.max((b4.len() + b6.len()) / DELTA_DIV);
    let dead_list = || {
        let mut d = odead.to_vec();
        if let Some((p, t)) = dead_ins {
            d.insert(p, t);
        }
        d
    };
    // a new base is merged in buffers kept from one rebase to the next (the base of a large
    // list is megabytes: no allocation and no page faults on every rebase)
    let mut bufs = if rebase { REBASE.try_with(|b| b.take()).ok().flatten().unwrap_or_default() } else { Box::default() };
    let (room, merged) = if rebase {
        let mut d4 = vec![Ip4Ent { ip: 0, set: 0, local: 0 }; n4];
        merge_delta(od4, tid, &a4, &mut d4);
        let mut d6 = vec![Ip6Ent { ip: [0; 16], set: 0, local: 0 }; n6];
        merge_delta(od6, tid, &a6, &mut d6);
        let dead = dead_list();
        rebased_into(&mut bufs.0, b4, &dead, &d4);
        rebased_into(&mut bufs.1, b6, &dead, &d6);
        (Room { new_base: Some((bufs.0.len(), bufs.1.len())), ..Room::default() }, true)
    } else {
        (Room { ndead, d4: n4, d6: n6, new_base: None, old_base: std::ptr::NonNull::new(old.h.base) }, false)
    };
    let keep_bufs = |b: Box<RebaseBufs>| {
        if rebase {
            let _ = REBASE.try_with(|c| c.set(Some(b)));
        }
    };
    let Some(o) = alloc_header(n, generation, room, alloc) else {
        keep_bufs(bufs);
        return Err(BuildError::NoMemory(0));
    };
    // SAFETY: `alloc_header` reserved `n` entries (`n + 1` firsts) at these pointers, and the
    // room for the delta, the dead ids or the new base written below; every block is live
    // (the old ones held by `old`, the new one by the caller); every `op` was checked above.
    unsafe {
        let mut di = 0u32;
        for (np, &op) in plan.op_of.iter().enumerate() {
            let (b, nr) = if op == NEW {
                let b = new_blk.unwrap_or(std::ptr::null_mut());
                (b, (*b).rec.nr)
            } else {
                let op = op as usize;
                (*ob.get_unchecked(op), of.get_unchecked(op + 1) - of.get_unchecked(op))
            };
            o.sets.add(np).write(b);
            o.firsts.add(np).write(di);
            di += nr;
        }
        o.firsts.add(n).write(di);
        std::ptr::copy_nonoverlapping(ord.as_ptr(), o.idv, n);
        std::ptr::copy_nonoverlapping(by_id.as_ptr(), o.ids_sorted, n);
        (*o.h).ndests = di;
        (*o.h).nnotes = nnotes;
        if merged {
            std::ptr::copy_nonoverlapping(bufs.0.as_ptr(), o.b4, bufs.0.len());
            std::ptr::copy_nonoverlapping(bufs.1.as_ptr(), o.b6, bufs.1.len());
        } else {
            if let Some(b) = old.base() {
                b.refs.fetch_add(1, Ordering::AcqRel);
            }
            let dead = std::slice::from_raw_parts_mut(o.dead, ndead);
            match dead_ins {
                Some((p, t)) => {
                    dead[..p].copy_from_slice(&odead[..p]);
                    dead[p] = t;
                    dead[p + 1..].copy_from_slice(&odead[p..]);
                }
                None => dead.copy_from_slice(odead),
            }
            merge_delta(od4, tid, &a4, std::slice::from_raw_parts_mut(o.d4, n4));
            merge_delta(od6, tid, &a6, std::slice::from_raw_parts_mut(o.d6, n6));
        }
    }
    keep_bufs(bufs);
    finish_derived(o.h, old, generation, reset, new_blk);
    Ok(o.h)
}

/// The buffers of a rebase (see `derive_planned`).
type RebaseBufs = (Vec<Ip4Ent>, Vec<Ip6Ent>);

thread_local! {
    static REBASE: std::cell::Cell<Option<Box<RebaseBufs>>> = const { std::cell::Cell::new(None) };
}

/// [`rebased`] into `out` (cleared first; its capacity is reused): the entries of `base`
/// whose set is not in `dead` merged with `delta` (both sorted; on a tie the base entry
/// first). One branch-free pass: every step writes the smaller head and advances the write
/// position only when it is kept (a base of 300,000 entries in ~1 ms instead of ~3).
pub(super) fn rebased_into<E: IdxEnt + Copy + Ord>(out: &mut Vec<E>, base: &[E], dead: &[i32], delta: &[E]) {
    out.clear();
    let n = base.len() + delta.len();
    out.reserve(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    // the dead test is chosen once: a bitmap over the ids' range when it is small (one load
    // per test), else a binary search
    let (lo, hi) = (dead.iter().copied().min().unwrap_or(0), dead.iter().copied().max().unwrap_or(0));
    let span = (hi as i64 - lo as i64) as u64 + 1;
    let k = if span <= 1 << 22 {
        let mut bits = vec![0u64; (span as usize).div_ceil(64)];
        for &id in dead {
            let o = (id as i64 - lo as i64) as usize;
            if let Some(w) = bits.get_mut(o / 64) {
                *w |= 1 << (o % 64);
            }
        }
        let bits = &bits[..];
        merge_live(dst, base, delta, |id| {
            let o = (id as i64 - lo as i64) as u64;
            bits.get((o / 64) as usize).is_some_and(|w| w >> (o % 64) & 1 != 0)
        })
    } else {
        merge_live(dst, base, delta, |id| dead.binary_search(&id).is_ok())
    };
    // SAFETY: `merge_live` wrote `dst[..k]` (`k <= n`, inside the reserved capacity).
    unsafe { out.set_len(k.min(n)) };
}

/// The merge of [`rebased_into`] into `dst` (room for `base` and `delta`): returns how many
/// entries it wrote.
#[inline(always)]
fn merge_live<E: IdxEnt + Copy + Ord>(dst: &mut [std::mem::MaybeUninit<E>], base: &[E], delta: &[E], dead: impl Fn(i32) -> bool) -> usize {
    let (mut i, mut j, mut k) = (0usize, 0usize, 0usize);
    while let (Some(&a), Some(&b)) = (base.get(i), delta.get(j)) {
        let from_base = a <= b;
        if let Some(d) = dst.get_mut(k) {
            d.write(if from_base { a } else { b });
        }
        k += usize::from(!from_base || !dead(a.set()));
        i += usize::from(from_base);
        j += usize::from(!from_base);
    }
    for &a in base.get(i..).unwrap_or(&[]) {
        if let Some(d) = dst.get_mut(k) {
            d.write(a);
        }
        k += usize::from(!dead(a.set()));
    }
    for &b in delta.get(j..).unwrap_or(&[]) {
        if let Some(d) = dst.get_mut(k) {
            d.write(b);
        }
        k += 1;
    }
    k
}

/// Writes into `dst` the entries of the sorted delta `old` but those of set `tid`, with the
/// sorted `add` merged in: the runs of `old` between the edit points are block copies, each
/// edit point found by a galloping search from the previous one (O(edit × log gap) plus one
/// memcpy of the delta; a set of thousands of entries merges in one sequential pass).
/// `dst.len()` must be `old.len() - (entries of tid) + add.len()`.
pub(super) fn merge_delta<E: IdxEnt + Copy + Ord>(old: &[E], tid: Option<i32>, add: &[E], dst: &mut [E]) {
    let mut k = 0usize;
    let mut put = |src: &[E], k: &mut usize| {
        if let Some(d) = dst.get_mut(*k..*k + src.len()) {
            d.copy_from_slice(src);
            *k += src.len();
        }
    };
    let mut i = 0usize; // next old entry
    let mut a = 0usize; // next added entry
    // the next entry of `old` to skip (of set tid), `old.len()` when none
    let next_skip = |from: usize| match tid {
        Some(t) => old.get(from..).and_then(|r| r.iter().position(|e| e.set() == t)).map_or(old.len(), |p| from + p),
        None => old.len(),
    };
    let mut skip = next_skip(0);
    loop {
        // the end of the old run before the next added entry
        let ins = add.get(a).map_or(old.len(), |x| i + gallop(old.get(i..).unwrap_or(&[]), x));
        if skip < ins {
            put(old.get(i..skip).unwrap_or(&[]), &mut k);
            i = skip + 1;
            skip = next_skip(i);
            continue;
        }
        put(old.get(i..ins).unwrap_or(&[]), &mut k);
        i = ins;
        if a >= add.len() {
            return;
        }
        // every added entry that goes before old[i]
        let end = match old.get(i) {
            Some(o) => a + add.get(a..).unwrap_or(&[]).partition_point(|x| x < o),
            None => add.len(),
        };
        let end = end.max(a + 1);
        put(add.get(a..end).unwrap_or(&[]), &mut k);
        a = end;
    }
}

/// The number of entries of the sorted `s` below `x`, by exponential then binary search
/// (cheap when that is small).
fn gallop<E: Ord>(s: &[E], x: &E) -> usize {
    let mut hi = 1usize;
    while hi <= s.len() && s.get(hi - 1).is_some_and(|e| e < x) {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(s.len());
    lo + s.get(lo..hi).unwrap_or(&[]).partition_point(|e| e < x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::uri::{Proto, Scheme};

    fn list(n: i32) -> Vec<DestSet> {
        (1..=n)
            .map(|id| DestSet {
                id: id * 10,
                dests: (0..id % 3 + 1)
                    .map(|k| Dest {
                        setid: id * 10,
                        uri: format!("sip:h{id}-{k}").into_bytes(),
                        flags: 0,
                        priority: 0,
                        attrs: Attrs::default(),
                        scheme: Scheme::Sip,
                        host: format!("h{id}-{k}").into_bytes(),
                        port: 0,
                        proto: Proto::None,
                        ip: None,
                        more_ips: vec![],
                        sock: 0,
                        line: 0,
                        col: 0,
                    })
                    .collect(),
            })
            .collect()
    }

    fn index(order: &[i32]) -> Vec<u32> {
        let mut v: Vec<u32> = (0..order.len() as u32).collect();
        v.sort_by_key(|&p| order[p as usize]);
        v
    }

    /// A plan maps every new position to the old set with that id, finds where the edited set
    /// starts, and refuses an order or index that does not fit the list (before anything is
    /// allocated).
    /// The branch-free rebase gives the naive merge (kept base entries and the delta, base
    /// first on a tie), with the dead ids tested by bitmap and by binary search.
    #[test]
    fn rebased_into_is_the_naive_merge() {
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r % m
        };
        let mut out = Vec::new();
        for round in 0..300 {
            let wide = round % 3 == 0;
            let id = |v: u64| if wide { [i32::MIN, -5, 3, 1 << 30, i32::MAX][(v % 5) as usize] } else { v as i32 - 3 };
            let ent = |n: u64, next: &mut dyn FnMut(u64) -> u64| -> Vec<Ip4Ent> {
                let mut v: Vec<Ip4Ent> = (0..n).map(|_| Ip4Ent { ip: next(20) as u32, set: id(next(8)), local: next(3) as u32 }).collect();
                v.sort_unstable();
                v
            };
            let (nb, nd) = (next(60), next(20));
            let base = ent(nb, &mut next);
            let delta = ent(nd, &mut next);
            let mut dead: Vec<i32> = (0..next(4)).map(|_| id(next(8))).collect();
            dead.sort_unstable();
            dead.dedup();
            let mut want: Vec<Ip4Ent> = base.iter().copied().filter(|e| !dead.contains(&e.set)).collect();
            for &d in &delta {
                let p = want.partition_point(|e| *e <= d);
                want.insert(p, d);
            }
            rebased_into(&mut out, &base, &dead, &delta);
            assert_eq!(out, want, "round {round}: base {base:?} dead {dead:?} delta {delta:?}");
        }
    }

    #[test]
    fn plans_follow_the_ids_and_refuse_bad_orders() {
        let p = build(&list(6), 1, (0, 0), &mut |_, _, _| None, &mut testutil::heap_alloc, &mut || 7).expect("build");
        let snap = unsafe { Snap::from_ptr(p) }.expect("snap");
        let old: Vec<i32> = snap.ids().to_vec();
        // a new set (35) in the middle of a reversed order
        let mut order: Vec<i32> = old.iter().rev().copied().collect();
        order.insert(3, 35);
        let plan = plan_edit(snap, &order, Some(&index(&order)), Some(35), true).expect("plan");
        let before: usize = order[..3].iter().map(|&id| snap.set(id).expect("set").dests.len()).sum();
        assert_eq!((plan.first_di(), plan.new_pos()), (before, Some(3)));
        for (np, &id) in order.iter().enumerate() {
            let want = if id == 35 { NEW } else { snap.set_pos(id).expect("pos") as u32 };
            assert_eq!(plan.op_of[np], want);
        }
        // the same plan without the index (sorted here)
        let plan2 = plan_edit(snap, &order, None, Some(35), true).expect("plan");
        assert_eq!((plan2.op_of.clone(), plan2.first_di()), (plan.op_of.clone(), plan.first_di()));
        let by_id = index(&old);
        // an id the list does not have, an index out of order, an id twice
        let mut unknown = old.clone();
        unknown.push(99);
        assert_eq!(plan_edit(snap, &unknown, Some(&index(&unknown)), None, false).err(), Some(BuildError::Inconsistent));
        let mut swapped = by_id.clone();
        swapped.swap(1, 2);
        assert_eq!(plan_edit(snap, &old, Some(&swapped), None, false).err(), Some(BuildError::Inconsistent));
        let mut twice = old.clone();
        twice[1] = twice[0];
        assert_eq!(plan_edit(snap, &twice, Some(&index(&twice)), None, false).err(), Some(BuildError::Inconsistent));
        // the edited set gets a block in the plan but none is given: refused, nothing allocated
        let plan3 = plan_edit(snap, &order, Some(&index(&order)), Some(35), true).expect("plan");
        let mut allocs = 0;
        let r = unsafe { derive_planned(snap, &plan3, &order, Some(&index(&order)), None, 2, None, &mut |n| { allocs += 1; testutil::heap_alloc(n) }) };
        assert_eq!((r.err(), allocs), (Some(BuildError::Inconsistent), 0));
        // a removed set named in the order is left out of it
        let plan4 = plan_edit(snap, &old, Some(&by_id), Some(old[2]), false).expect("plan");
        let q = unsafe { derive_planned(snap, &plan4, &old, Some(&by_id), None, 2, None, &mut testutil::heap_alloc) }.expect("derive");
        let s4 = unsafe { Snap::from_ptr(q) }.expect("snap");
        let mut want = old.clone();
        want.remove(2);
        assert_eq!(s4.ids(), want.as_slice());
        assert!(s4.set(old[2]).is_none() && s4.set(old[3]).is_some());
    }
}

#[cfg(test)]
mod rebase_timing {
    use super::*;
    /// `cargo test --release --lib rebase_timing -- --ignored --nocapture`: a rebase of a
    /// 300,000-entry base with 12 dead sets of 100 and a 36,000-entry delta (shape a).
    #[test]
    #[ignore]
    fn rebase_timing() {
        let base: Vec<Ip4Ent> = (0..300_000u32).map(|k| Ip4Ent { ip: 0x7f00_0000 + k, set: (k / 3000) as i32 + 1, local: k % 3000 }).collect();
        let dead: Vec<i32> = (0..12).map(|i| 1 + i * 7).collect();
        let mut delta: Vec<Ip4Ent> = base.iter().filter(|e| dead.contains(&e.set)).map(|e| Ip4Ent { local: e.local + 1, ..*e }).collect();
        delta.sort_unstable();
        let mut out = Vec::new();
        let min7 = |f: &mut dyn FnMut()| (0..7).map(|_| { let t = std::time::Instant::now(); f(); t.elapsed() }).min().unwrap_or_default();
        let old = min7(&mut || {
            out.clear();
            merge_kept(&base, |e| dead.binary_search(&e.set).is_err(), &delta, |e| out.push(e));
            std::hint::black_box(&out);
        });
        let new = min7(&mut || {
            rebased_into(&mut out, &base, &dead, &delta);
            std::hint::black_box(&out);
        });
        eprintln!("rebase of 300,000 + 36,000: merge_kept {old:?}, rebased_into {new:?}");
    }
}
