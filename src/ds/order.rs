//! Order of sets and of destinations within a set, as the C module produces them.
//!
//! * Sets live in an AVL tree keyed by set id (the C `ds_avl_insert`, an AVL with per-node
//!   "longer side" marks, rebalanced with 2- and 3-point rotations). Everything that walks all
//!   sets visits the tree in **post-order** (left subtree, right subtree, node), so the order
//!   depends on the insertion order of the ids (their first appearance in the list).
//! * Inside a set, the loader keeps a list sorted by ascending priority in which a new entry
//!   goes after the entries of equal priority, and then copies it backwards into the array.
//!   The array is therefore sorted by priority **descending**, and equal priorities appear in
//!   **reverse** load order.

use crate::ds::dest::Dest;

/// One destination set, destinations in array order.
#[derive(Clone, Debug, PartialEq)]
pub struct DestSet {
    pub id: i32,
    pub dests: Vec<Dest>,
}

/// Which side of a node is taller (the C `longer` field: -1 neither, 0 left, 1 right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lean {
    Neither,
    Side(usize),
}

/// A tree node, compact (16 bytes: the walks over tens of thousands of sets stay in cache).
#[derive(Clone, Debug)]
struct Node {
    id: i32,
    /// child indexes, `NIL` for none
    kids: [u32; 2],
    /// -1: neither side, 0: left, 1: right
    lean: i8,
}

const NIL: u32 = u32::MAX;

fn opt(k: u32) -> Option<usize> {
    if k == NIL {
        None
    } else {
        Some(k as usize)
    }
}

/// A link in the tree: the root slot or a child slot of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Root,
    Child(usize, usize),
}

/// Arena AVL tree with the same insertion/rebalancing rules as the C module, step by step
/// (top-down, "longer" marks): the reference [`avl_postorder`] uses it; [`avl_order`] builds
/// the same tree with a faster bottom-up insertion.
#[derive(Default)]
struct Avl {
    nodes: Vec<Node>,
    root: Option<usize>,
}

impl Avl {
    fn get(&self, s: Slot) -> Option<usize> {
        match s {
            Slot::Root => self.root,
            Slot::Child(n, d) => self.nodes.get(n).and_then(|x| x.kids.get(d).copied()).and_then(opt),
        }
    }

    fn set(&mut self, s: Slot, v: Option<usize>) {
        match s {
            Slot::Root => self.root = v,
            Slot::Child(n, d) => {
                if let Some(k) = self.nodes.get_mut(n).and_then(|x| x.kids.get_mut(d)) {
                    *k = v.map_or(NIL, |v| v as u32);
                }
            }
        }
    }

    fn id(&self, n: usize) -> i32 {
        self.nodes.get(n).map(|x| x.id).unwrap_or(0)
    }

    fn lean(&self, n: usize) -> Lean {
        match self.nodes.get(n).map(|x| x.lean) {
            Some(d @ 0..=1) => Lean::Side(d as usize),
            _ => Lean::Neither,
        }
    }

    fn set_lean(&mut self, n: usize, l: Lean) {
        if let Some(x) = self.nodes.get_mut(n) {
            x.lean = match l {
                Lean::Neither => -1,
                Lean::Side(d) => d as i8,
            };
        }
    }

    fn kid(&self, n: usize, d: usize) -> Option<usize> {
        self.get(Slot::Child(n, d))
    }

    /// Inserts `id` if missing. The rebalancing starts at the deepest unbalanced node on the
    /// search path (or the root).
    fn insert(&mut self, id: i32) {
        let mut top = Slot::Root;
        let mut slot = Slot::Root;
        while let Some(n) = self.get(slot) {
            let nid = self.id(n);
            if nid == id {
                return;
            }
            if self.lean(n) != Lean::Neither {
                top = slot;
            }
            slot = Slot::Child(n, usize::from(id > nid));
        }
        let idx = self.nodes.len();
        self.nodes.push(Node { id, kids: [NIL, NIL], lean: -1 });
        self.set(slot, Some(idx));
        self.rebalance(top, id);
    }

    /// Marks every (balanced) node from `start` down to `id` as leaning towards `id`.
    fn mark_path(&mut self, mut cur: Option<usize>, id: i32) {
        while let Some(n) = cur {
            let nid = self.id(n);
            if nid == id {
                break;
            }
            let d = usize::from(id > nid);
            self.set_lean(n, Lean::Side(d));
            cur = self.kid(n, d);
        }
    }

    /// Single rotation at `top` towards `dir`; returns the subtree where the new id went.
    fn rotate2(&mut self, top: Slot, dir: usize) -> Option<usize> {
        let b = self.get(top)?;
        let d = self.kid(b, dir)?;
        let c = self.kid(d, 1 - dir);
        let e = self.kid(d, dir);
        self.set(top, Some(d));
        self.set(Slot::Child(d, 1 - dir), Some(b));
        self.set(Slot::Child(b, dir), c);
        self.set_lean(b, Lean::Neither);
        self.set_lean(d, Lean::Neither);
        e
    }

    /// Double rotation at `top`; `third` is the direction of the third step from the new
    /// subtree root towards the new id (`None` when that root is the new node itself).
    fn rotate3(&mut self, top: Slot, dir: usize, third: Option<usize>) -> Option<usize> {
        let b = self.get(top)?;
        let f = self.kid(b, dir)?;
        let d = self.kid(f, 1 - dir)?;
        let c = self.kid(d, 1 - dir);
        let e = self.kid(d, dir);
        self.set(top, Some(d));
        self.set(Slot::Child(d, 1 - dir), Some(b));
        self.set(Slot::Child(d, dir), Some(f));
        self.set(Slot::Child(b, dir), c);
        self.set(Slot::Child(f, 1 - dir), e);
        self.set_lean(d, Lean::Neither);
        self.set_lean(b, Lean::Neither);
        self.set_lean(f, Lean::Neither);
        match third {
            None => None,
            Some(t) if t == dir => {
                self.set_lean(b, Lean::Side(1 - dir));
                e
            }
            Some(_) => {
                self.set_lean(f, Lean::Side(dir));
                c
            }
        }
    }

    fn rebalance(&mut self, top: Slot, id: i32) {
        let Some(path) = self.get(top) else { return };
        let first = usize::from(id > self.id(path));
        match self.lean(path) {
            Lean::Neither => {
                self.mark_path(Some(path), id);
            }
            Lean::Side(l) if l != first => {
                // the new node went to the shorter side
                self.set_lean(path, Lean::Neither);
                let next = self.kid(path, first);
                self.mark_path(next, id);
            }
            Lean::Side(_) => {
                let Some(child) = self.kid(path, first) else {
                    return;
                };
                let second = usize::from(id > self.id(child));
                if first == second {
                    let rest = self.rotate2(top, first);
                    self.mark_path(rest, id);
                } else {
                    let Some(grand) = self.kid(child, second) else {
                        return;
                    };
                    let gid = self.id(grand);
                    let third = if gid == id {
                        None
                    } else {
                        Some(usize::from(id > gid))
                    };
                    let rest = self.rotate3(top, first, third);
                    self.mark_path(rest, id);
                }
            }
        }
    }

    fn postorder(&self) -> Vec<i32> {
        let mut out = Vec::with_capacity(self.nodes.len());
        // iterative post-order: (node, children done)
        let mut stack: Vec<(usize, bool)> = Vec::new();
        if let Some(r) = self.root {
            stack.push((r, false));
        }
        while let Some((n, done)) = stack.pop() {
            if done {
                out.push(self.id(n));
                continue;
            }
            stack.push((n, true));
            if let Some(r) = self.kid(n, 1) {
                stack.push((r, false));
            }
            if let Some(l) = self.kid(n, 0) {
                stack.push((l, false));
            }
        }
        out
    }
}

/// A set order and its index by id, from one tree (no sort).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetOrder {
    /// The set ids in iteration order (the C module's post-order).
    pub ids: Vec<i32>,
    /// `by_id[k]`: the position in `ids` of the k-th smallest id.
    pub by_id: Vec<u32>,
}

/// [`avl_postorder`] with the index by id, from the arena tree below (the same tree, built
/// faster: bottom-up insertion with a finger, a scratch arena reused across calls, one walk
/// for both orders). An edit calls it on the previous order, 30,000 ids in well under a
/// millisecond.
pub fn avl_order(ids_in_first_appearance_order: &[i32]) -> SetOrder {
    with_scratch(|s| s.order(ids_in_first_appearance_order))
}

thread_local! {
    static SCRATCH: std::cell::RefCell<OrderScratch> = std::cell::RefCell::new(OrderScratch::default());
}

/// Runs `f` on this thread's scratch tree (a fresh one if it is busy or gone).
fn with_scratch(f: impl Fn(&mut OrderScratch) -> SetOrder) -> SetOrder {
    SCRATCH
        .try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut OrderScratch::default()),
        })
        .unwrap_or_else(|_| f(&mut OrderScratch::default()))
}

/// [`avl_order`] of the order an edit rebuilds from the running list's order `prev`: `prev`
/// without the id `drop` (a set that is gone), then `add` (the edited set, inserted last;
/// nothing when it is there already), without copying `prev`.
pub fn avl_order_edit(prev: &[i32], add: Option<i32>, drop: Option<i32>) -> SetOrder {
    with_scratch(|s| {
        // the ids into a buffer kept with the tree (a copy is cheaper than feeding the tree
        // through an iterator adapter)
        let mut ids = std::mem::take(&mut s.input);
        ids.clear();
        match drop {
            Some(d) => ids.extend(prev.iter().copied().filter(|&id| id != d)),
            None => ids.extend_from_slice(prev),
        }
        ids.extend(add);
        let out = s.order(&ids);
        s.input = ids;
        out
    })
}

/// A node of the arena tree of [`avl_order`] (12 bytes).
#[derive(Clone, Copy, Debug)]
struct FNode {
    id: i32,
    /// child indexes, `FNIL` for none
    kids: [u32; 2],
}

/// One step of a search path: a node, the (exclusive) bounds of the ids its subtree can hold,
/// and the side the path goes down to from it.
#[derive(Clone, Copy, Debug)]
struct Step {
    node: u32,
    dir: u32,
    lo: i64,
    hi: i64,
}

const FNIL: u32 = u32::MAX;

/// The nodes of [`avl_order`]'s tree, kept from one call to the next (an edit builds a tree
/// as large as the previous one: no allocation, no page faults).
#[derive(Default)]
struct OrderScratch {
    nodes: Vec<FNode>,
    /// balance (height of the right subtree - height of the left one) of each node
    bal: Vec<i8>,
    /// the ids of an edit's order (see [`avl_order_edit`])
    input: Vec<i32>,
}

impl OrderScratch {
    /// Builds the AVL tree of `ids` inserted in turn (duplicates ignored) with a bottom-up
    /// AVL insertion (the same tree as the C module's top-down one: both are the textbook AVL
    /// insertion), each search starting from the deepest node of the previous search path
    /// whose subtree can hold the id. Returns the root (`FNIL` when empty); the tree is
    /// `self.nodes`.
    fn build(&mut self, ids: &[i32]) -> u32 {
        self.nodes.clear();
        self.nodes.resize(ids.len(), FNode { id: 0, kids: [FNIL, FNIL] });
        self.bal.clear();
        self.bal.resize(ids.len(), 0);
        let nodes = self.nodes.as_mut_slice();
        let bal = self.bal.as_mut_slice();
        // the search path from the root (an AVL tree of 2^32 nodes is less than 48 high)
        let mut path = [Step { node: 0, dir: 0, lo: 0, hi: 0 }; 64];
        let mut depth = 0usize;
        let mut count = 0u32;
        let mut root = FNIL;
        // SAFETY (every unchecked access below): node indexes are below `count`, which never
        // exceeds `ids.len()` = `nodes.len()` = `bal.len()` (one node per id at most); path
        // indexes are below `depth`, which stays below `path.len()` (the descent stops before
        // it would reach it). The checked version cost a third more instructions per insert.
        for &id in ids {
            let v = i64::from(id);
            while depth > 0 {
                let e = unsafe { path.get_unchecked(depth - 1) };
                if v > e.lo && v < e.hi {
                    break;
                }
                depth -= 1;
            }
            if depth == 0 {
                if root == FNIL {
                    root = count;
                    nodes[0] = FNode { id, kids: [FNIL, FNIL] };
                    count = 1;
                    continue;
                }
                path[0] = Step { node: root, dir: 0, lo: i64::MIN, hi: i64::MAX };
                depth = 1;
            }
            // down to the free slot
            let mut cur = unsafe { *path.get_unchecked(depth - 1) };
            let found = loop {
                let n = unsafe { *nodes.get_unchecked(cur.node as usize) };
                if n.id == id {
                    break true;
                }
                let d = u32::from(id > n.id);
                unsafe { path.get_unchecked_mut(depth - 1) }.dir = d;
                let c = n.kids[d as usize];
                if c == FNIL || depth >= path.len() {
                    break c != FNIL;
                }
                cur = if d == 0 {
                    Step { node: c, dir: 0, lo: cur.lo, hi: i64::from(n.id) }
                } else {
                    Step { node: c, dir: 0, lo: i64::from(n.id), hi: cur.hi }
                };
                unsafe { *path.get_unchecked_mut(depth) = cur };
                depth += 1;
            };
            if found || count as usize >= nodes.len() {
                continue;
            }
            let new = count;
            unsafe { *nodes.get_unchecked_mut(new as usize) = FNode { id, kids: [FNIL, FNIL] } };
            count += 1;
            let last = unsafe { *path.get_unchecked(depth - 1) };
            unsafe { nodes.get_unchecked_mut(cur.node as usize) }.kids[last.dir as usize] = new;
            // up the path: the balances change up to the first node that was not balanced
            // (which becomes balanced, or is rotated: its subtree gets its height back)
            let mut i = depth;
            while i > 0 {
                i -= 1;
                let Step { node: k, dir: d, .. } = unsafe { *path.get_unchecked(i) };
                let bk = unsafe { bal.get_unchecked_mut(k as usize) };
                let b = *bk + (2 * d as i8 - 1);
                if b == 0 {
                    *bk = 0;
                    break;
                }
                if b == 1 || b == -1 {
                    *bk = b;
                    continue;
                }
                let top = rotate(nodes, bal, k, d as usize);
                match i.checked_sub(1) {
                    Some(u) => {
                        let up = unsafe { *path.get_unchecked(u) };
                        unsafe { nodes.get_unchecked_mut(up.node as usize) }.kids[up.dir as usize] = top;
                    }
                    None => root = top,
                }
                // the path below the rotated node changed
                depth = i;
                break;
            }
        }
        self.nodes.truncate(count as usize);
        root
    }

    /// The post-order of the tree of `ids` and its index by id.
    fn order(&mut self, ids: &[i32]) -> SetOrder {
        let root = self.build(ids);
        self.walk(root)
    }

    /// The post-order of the tree at `root` (just built) and its index by id.
    fn walk(&self, root: u32) -> SetOrder {
        let nodes = self.nodes.as_slice();
        let n = nodes.len();
        let mut out = SetOrder { ids: vec![0; n], by_id: vec![0; n] };
        // one walk: a node's in-order rank when its left subtree is done, its post-order
        // position when both are (the stack holds the path from the root, less than 64 deep)
        let mut stack = [(0u32, 0u32); 64];
        let mut sp = 0usize;
        let mut cur = root;
        let mut last = FNIL;
        let mut next_rank = 0u32;
        let mut next_pos = 0u32;
        loop {
            while cur != FNIL && sp < stack.len() {
                stack[sp] = (cur, 0);
                sp += 1;
                cur = nodes[cur as usize].kids[0];
            }
            let Some(&(top, top_rank)) = sp.checked_sub(1).and_then(|i| stack.get(i)) else { break };
            let node = &nodes[top as usize];
            let r = node.kids[1];
            if r != FNIL && r != last {
                // back from the left subtree: the in-order visit
                stack[sp - 1].1 = next_rank;
                next_rank += 1;
                cur = r;
                continue;
            }
            let rank = if r == FNIL {
                next_rank += 1;
                next_rank - 1
            } else {
                top_rank
            };
            sp -= 1;
            if let Some(p) = out.ids.get_mut(next_pos as usize) {
                *p = node.id;
            }
            if let Some(b) = out.by_id.get_mut(rank as usize) {
                *b = next_pos;
            }
            next_pos += 1;
            last = top;
        }
        out
    }
}

/// Rebalances the subtree rooted at `p`, two levels taller on side `d` after an insertion;
/// returns its new root.
fn rotate(nodes: &mut [FNode], bal: &mut [i8], p: u32, d: usize) -> u32 {
    let s: i8 = if d == 1 { 1 } else { -1 };
    let (pu, c) = (p as usize, nodes[p as usize].kids[d]);
    let cu = c as usize;
    if bal[cu] == s {
        // single rotation
        nodes[pu].kids[d] = nodes[cu].kids[1 - d];
        nodes[cu].kids[1 - d] = p;
        bal[pu] = 0;
        bal[cu] = 0;
        c
    } else {
        // double rotation through the child's inner child
        let g = nodes[cu].kids[1 - d];
        let gu = g as usize;
        let gk = nodes[gu].kids;
        let gb = bal[gu];
        nodes[cu].kids[1 - d] = gk[d];
        nodes[pu].kids[d] = gk[1 - d];
        nodes[gu].kids = if d == 1 { [p, c] } else { [c, p] };
        bal[cu] = if gb == -s { s } else { 0 };
        bal[pu] = if gb == s { -s } else { 0 };
        bal[gu] = 0;
        g
    }
}

/// The set ids in the order the C module walks its AVL tree (post-order), for a tree built
/// by inserting the ids in the given order (duplicates are ignored).
pub fn avl_postorder(ids_in_first_appearance_order: &[i32]) -> Vec<i32> {
    let mut t = Avl { nodes: Vec::with_capacity(ids_in_first_appearance_order.len()), root: None };
    for &id in ids_in_first_appearance_order {
        t.insert(id);
    }
    t.postorder()
}

/// Sets in the order Kamailio's AVL tree post-order visits them (tree built by inserting set
/// ids in order of first appearance); destinations within a set in the C module's array
/// order: priority descending, equal priorities in REVERSE input order.
pub fn build_sets(dests: Vec<Dest>) -> Vec<DestSet> {
    let pos: Vec<u32> = (0..dests.len() as u32).collect();
    build_sets_sharing(dests, &pos, &[])
}

/// [`build_sets`] for a reload that shares some sets with the running list: `pos[i]` is the
/// position in the list of `dests[i]` (increasing), `shared` the (position of the first
/// entry, id) of each shared set, whose entries are not in `dests`. A shared set comes out
/// in its place in the set order with no destinations (its block is taken as it is).
pub fn build_sets_sharing(dests: Vec<Dest>, pos: &[u32], shared: &[(u32, i32)]) -> Vec<DestSet> {
    let (order, spans) = order_sets(&dests, pos, shared);
    let mut slots: Vec<Option<Dest>> = dests.into_iter().map(Some).collect();
    spans
        .iter()
        .map(|sp| DestSet {
            id: sp.id,
            dests: order.get(sp.start..sp.end).unwrap_or_default().iter().filter_map(|&i| slots.get_mut(i as usize).and_then(Option::take)).collect(),
        })
        .collect()
}

/// One set of a list, in iteration order: its destinations are `dests[order[start..end]]`
/// (see [`order_sets`]); a shared set has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSpan {
    pub id: i32,
    pub start: usize,
    pub end: usize,
}

/// [`build_sets_sharing`] without moving the destinations: the positions in `dests` of every
/// set's destinations in array order, and the sets in iteration order as ranges of them.
pub fn order_sets(dests: &[Dest], pos: &[u32], shared: &[(u32, i32)]) -> (Vec<u32>, Vec<SetSpan>) {
    order_sets_keyed(dests.iter().map(|d| (d.setid, d.priority)), pos, shared)
}

/// [`order_sets`] from the (set id, priority) of each destination: a destination's set id and
/// priority are its entry's, so the order of a list can be found before any entry is prepared
/// (`pos` empty: the destinations are the entries, position `i` is `i`).
pub fn order_sets_keyed(setprio: impl Iterator<Item = (i32, i32)>, pos: &[u32], shared: &[(u32, i32)]) -> (Vec<u32>, Vec<SetSpan>) {
    // destinations sorted by (set id, priority descending, input position descending): each
    // set's run is in its array order (small keys sorted, no hashing)
    // (packed into one integer: the sort compares them in one or two instructions)
    let flip = |v: i32| (v as u32 ^ 0x8000_0000) as u128;
    let mut packed: Vec<u128> = setprio.enumerate().map(|(i, (set, prio))| flip(set) << 64 | (!flip(prio) & 0xffff_ffff) << 32 | !(i as u32) as u128).collect();
    packed.sort_unstable();
    let unflip = |v: u128| (v as u32 ^ 0x8000_0000) as i32;
    let keys: Vec<(i32, std::cmp::Reverse<i32>, std::cmp::Reverse<u32>)> =
        packed.iter().map(|&k| (unflip(k >> 64), std::cmp::Reverse(unflip(!(k >> 32))), std::cmp::Reverse(!(k as u32)))).collect();
    drop(packed);
    // the sets: (position of the first entry, id, run in `keys`)
    let mut groups: Vec<(u32, i32, usize, usize)> = Vec::with_capacity(shared.len() + 16);
    let mut g = 0usize;
    while let Some(&(id, _, _)) = keys.get(g) {
        let mut end = g;
        let mut first = u32::MAX;
        while let Some(&(kid, _, std::cmp::Reverse(i))) = keys.get(end) {
            if kid != id {
                break;
            }
            first = first.min(if pos.is_empty() { i } else { pos.get(i as usize).copied().unwrap_or(u32::MAX) });
            end += 1;
        }
        groups.push((first, id, g, end));
        g = end;
    }
    groups.extend(shared.iter().map(|&(p, id)| (p, id, 0, 0)));
    // set ids in order of first appearance
    groups.sort_unstable_by_key(|x| (x.0, x.1));
    let first_seen: Vec<i32> = groups.iter().map(|x| x.1).collect();
    // a load or reload: a scratch tree for this call only (the one `avl_order` keeps is for
    // the edits, which come one after another; nothing stays allocated after start-up)
    let post = OrderScratch::default().order(&first_seen).ids;
    groups.sort_unstable_by_key(|x| x.1);
    let order: Vec<u32> = keys.iter().map(|k| k.2 .0).collect();
    let spans = post
        .iter()
        .filter_map(|&id| {
            let gi = groups.binary_search_by_key(&id, |x| x.1).ok()?;
            let &(_, _, start, end) = groups.get(gi)?;
            Some(SetSpan { id, start, end })
        })
        .collect();
    (order, spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::uri::{Proto, Scheme};

    /// The packed sort of `order_sets_keyed` orders as the (set, priority descending, position
    /// descending) tuples it stands for, over random keys (negative and extreme values too).
    #[test]
    fn packed_keys_order_as_tuples() {
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let n = (next() % 60) as usize;
            let pick = |v: u64| [i32::MIN, -7, -1, 0, 1, 2, 5, i32::MAX][(v % 8) as usize];
            let sp: Vec<(i32, i32)> = (0..n).map(|_| (pick(next()), pick(next() >> 8))).collect();
            let (order, spans) = order_sets_keyed(sp.iter().copied(), &[], &[]);
            let mut want: Vec<(i32, std::cmp::Reverse<i32>, std::cmp::Reverse<u32>)> =
                sp.iter().enumerate().map(|(i, &(s, p))| (s, std::cmp::Reverse(p), std::cmp::Reverse(i as u32))).collect();
            want.sort_unstable();
            assert_eq!(order, want.iter().map(|k| k.2 .0).collect::<Vec<_>>(), "round {round}");
            for sp_ in &spans {
                assert!(order[sp_.start..sp_.end].iter().all(|&i| sp[i as usize].0 == sp_.id), "round {round}");
            }
            assert_eq!(spans.iter().map(|s| s.end - s.start).sum::<usize>(), n);
        }
    }

    fn d(setid: i32, name: &str, priority: i32) -> Dest {
        Dest {
            setid,
            uri: format!("sip:{name}").into_bytes(),
            flags: 0,
            priority,
            attrs: Attrs::default(),
            scheme: Scheme::Sip,
            host: name.as_bytes().to_vec(),
            port: 0,
            proto: Proto::None,
            ip: None,
            more_ips: vec![],
            sock: 0,
            line: 0,
            col: 0,
        }
    }

    fn names(s: &DestSet) -> Vec<String> {
        s.dests
            .iter()
            .map(|x| String::from_utf8(x.host.clone()).expect("utf8"))
            .collect()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(avl_postorder(&[1, 2, 3]), vec![1, 3, 2]);
        assert_eq!(avl_postorder(&[1, 2, 4]), vec![1, 4, 2]);
        assert_eq!(avl_postorder(&[]), Vec::<i32>::new());
        assert_eq!(avl_postorder(&[5]), vec![5]);
        assert_eq!(avl_postorder(&[2, 1, 2, 1]), vec![1, 2]);
        assert_eq!(avl_postorder(&[3, 2, 1]), vec![1, 3, 2]);
        // double rotations
        assert_eq!(avl_postorder(&[1, 3, 2]), vec![1, 3, 2]);
        assert_eq!(avl_postorder(&[3, 1, 2]), vec![1, 3, 2]);
    }

    #[test]
    fn reverse_load_order_within_priority() {
        let sets = build_sets(vec![d(1, "A", 0), d(1, "B", 0), d(1, "C", 0)]);
        assert_eq!(sets.len(), 1);
        assert_eq!(names(&sets[0]), vec!["C", "B", "A"]);
    }

    #[test]
    fn mixed_priorities_and_sets() {
        let sets = build_sets(vec![
            d(2, "a", 1),
            d(1, "x", 0),
            d(2, "b", 5),
            d(2, "c", 1),
            d(3, "y", 0),
            d(2, "e", -3),
            d(2, "f", 5),
            d(2, "g", 0),
        ]);
        let ids: Vec<i32> = sets.iter().map(|s| s.id).collect();
        // insertion order 2, 1, 3 -> balanced tree rooted at 2
        assert_eq!(ids, vec![1, 3, 2]);
        assert_eq!(names(&sets[2]), vec!["f", "b", "c", "a", "g", "e"]);
        assert_eq!(names(&sets[0]), vec!["x"]);
    }

    /// Straightforward recursive AVL (height based) used as a reference.
    #[derive(Debug)]
    struct RNode {
        id: i32,
        h: i32,
        l: Option<Box<RNode>>,
        r: Option<Box<RNode>>,
    }

    fn h(n: &Option<Box<RNode>>) -> i32 {
        n.as_ref().map(|x| x.h).unwrap_or(0)
    }

    fn fix(n: &mut RNode) {
        n.h = 1 + h(&n.l).max(h(&n.r));
    }

    fn rot_right(mut n: Box<RNode>) -> Box<RNode> {
        let mut l = n.l.take().expect("left");
        n.l = l.r.take();
        fix(&mut n);
        l.r = Some(n);
        fix(&mut l);
        l
    }

    fn rot_left(mut n: Box<RNode>) -> Box<RNode> {
        let mut r = n.r.take().expect("right");
        n.r = r.l.take();
        fix(&mut n);
        r.l = Some(n);
        fix(&mut r);
        r
    }

    fn rins(n: Option<Box<RNode>>, id: i32) -> Box<RNode> {
        let mut n = match n {
            None => {
                return Box::new(RNode {
                    id,
                    h: 1,
                    l: None,
                    r: None,
                })
            }
            Some(n) => n,
        };
        if id < n.id {
            n.l = Some(rins(n.l.take(), id));
        } else if id > n.id {
            n.r = Some(rins(n.r.take(), id));
        } else {
            return n;
        }
        fix(&mut n);
        let bal = h(&n.l) - h(&n.r);
        if bal > 1 {
            if id > n.l.as_ref().expect("l").id {
                n.l = Some(rot_left(n.l.take().expect("l")));
            }
            return rot_right(n);
        }
        if bal < -1 {
            if id < n.r.as_ref().expect("r").id {
                n.r = Some(rot_right(n.r.take().expect("r")));
            }
            return rot_left(n);
        }
        n
    }

    fn rpost(n: &Option<Box<RNode>>, out: &mut Vec<i32>) {
        if let Some(n) = n {
            rpost(&n.l, out);
            rpost(&n.r, out);
            out.push(n.id);
        }
    }

    fn reference(ids: &[i32]) -> Vec<i32> {
        let mut root = None;
        for &id in ids {
            root = Some(rins(root, id));
        }
        let mut out = Vec::new();
        rpost(&root, &mut out);
        out
    }

    /// `avl_order` = `avl_postorder` plus a correct index by id.
    fn check_order(ids: &[i32]) {
        let o = avl_order(ids);
        assert_eq!(o.ids, avl_postorder(ids));
        let mut want: Vec<(i32, u32)> = o.ids.iter().enumerate().map(|(p, &id)| (id, p as u32)).collect();
        want.sort_unstable();
        assert_eq!(o.by_id, want.iter().map(|w| w.1).collect::<Vec<_>>());
    }

    #[test]
    fn matches_reference_avl() {
        // deterministic pseudo-random sequences (LCG), with duplicates and negatives
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..200 {
            let n = 1 + round % 60;
            let mut ids = Vec::new();
            for _ in 0..n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((seed >> 33) % 97) as i32 - 20;
                ids.push(v);
            }
            assert_eq!(avl_postorder(&ids), reference(&ids), "ids {ids:?}");
            check_order(&ids);
        }
        let asc: Vec<i32> = (1..=100).collect();
        assert_eq!(avl_postorder(&asc), reference(&asc));
        check_order(&asc);
        check_order(&[]);
        // the order an edit recomputes: the previous order inserted again, plus or minus one
        let mut x = avl_postorder(&(1..=500).collect::<Vec<_>>());
        for k in 0..20 {
            x.push(1000 + k);
            x.retain(|&i| i != 7 * k + 3);
            assert_eq!(avl_postorder(&x), reference(&x));
            check_order(&x);
            x = avl_postorder(&x);
        }
        let desc: Vec<i32> = (1..=100).rev().collect();
        assert_eq!(avl_postorder(&desc), reference(&desc));
        check_order(&desc);
        let zig: Vec<i32> = (0..50)
            .map(|i| if i % 2 == 0 { i } else { 100 - i })
            .collect();
        assert_eq!(avl_postorder(&zig), reference(&zig));
    }

    /// The fast tree of `avl_order` against the reference (C-style) one: random sequences of
    /// every density (many duplicates, negatives, the extreme ids), the scratch reused with
    /// sizes going up and down, and chains of edits as `edit_list` makes them (the previous
    /// order again, plus or minus one id) on a large list.
    #[test]
    fn avl_order_matches_reference_tree() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for round in 0..3000u64 {
            let n = 1 + rnd(if round % 10 == 0 { 2000 } else { 200 });
            let span = 1 + rnd(4 * n + 1);
            let ids: Vec<i32> = (0..n).map(|_| rnd(span) as i32 - (span / 3) as i32).collect();
            check_order(&ids);
            if round % 100 == 0 {
                assert_eq!(avl_postorder(&ids), reference(&ids));
            }
        }
        check_order(&[i32::MIN, i32::MAX, 0, -1, i32::MIN + 1, i32::MAX - 1, i32::MIN, i32::MAX]);
        check_order(&[i32::MAX, i32::MIN]);
        check_order(&(0..3000).map(|i| if i % 2 == 0 { i32::MIN + i } else { i32::MAX - i }).collect::<Vec<_>>());
        // edit chains on 30,000 sets: each order is the previous one rebuilt
        let mut x: Vec<i32> = (1..=30_000).collect();
        for k in 0..12 {
            match k % 3 {
                0 => x.push(40_000 + k),
                1 => x.retain(|&i| i != 97 * k + 5),
                _ => {}
            }
            let o = avl_order(&x);
            assert_eq!(o.ids, avl_postorder(&x), "edit {k}");
            check_order(&x);
            x = o.ids;
        }
        check_order(&[]);
        check_order(&[7]);
    }

    /// `avl_order_edit` = `avl_order` of the order it stands for (the previous order without
    /// the dropped id, then the added one), over chains of random edits.
    #[test]
    fn avl_order_edit_matches_the_copied_order() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for round in 0..300u64 {
            let n = rnd(if round % 10 == 0 { 3000 } else { 100 }) as i32;
            let mut prev = avl_order(&(0..n).map(|i| i * 3).collect::<Vec<_>>()).ids;
            for _ in 0..6 {
                let add = (rnd(3) != 0).then(|| rnd(3 * n as u64 + 10) as i32);
                let drop = (rnd(3) == 0).then(|| prev.get(rnd(prev.len() as u64 + 1) as usize).copied().unwrap_or(-5));
                let copied: Vec<i32> = prev.iter().copied().filter(|&id| Some(id) != drop).chain(add).collect();
                let o = avl_order_edit(&prev, add, drop);
                assert_eq!(o, avl_order(&copied), "round {round}");
                assert_eq!(o.ids, avl_postorder(&copied));
                prev = o.ids;
            }
        }
        assert_eq!(avl_order_edit(&[], None, None), SetOrder::default());
        assert_eq!(avl_order_edit(&[], Some(4), Some(4)).ids, vec![4]);
    }
}

#[cfg(test)]
mod order_bench {
    use super::*;

    /// `cargo test --release --lib order_timing -- --ignored --nocapture`: `avl_order` on the
    /// order an edit of 30,000 sets rebuilds (the previous order plus one new id).
    #[test]
    #[ignore]
    fn order_timing() {
        let mut x: Vec<i32> = avl_postorder(&(1..=30_000).collect::<Vec<_>>());
        for k in 0..12 {
            x.push(40_000 + k);
            x = avl_order(&x).ids;
        }
        let reps: usize = std::env::var("ORDER_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
        let min = |f: &mut dyn FnMut()| (0..reps).map(|_| { let t = std::time::Instant::now(); f(); t.elapsed() }).min().unwrap_or_default();
        let mut sc = OrderScratch::default();
        eprintln!("30,000 sets: build {:?}, build + walk {:?}, avl_order {:?} (min of {reps})",
            min(&mut || { std::hint::black_box(sc.build(&x)); }),
            min(&mut || { std::hint::black_box(sc.order(&x)); }),
            min(&mut || { std::hint::black_box(avl_order(&x)); }));
        let prev = &x[..x.len() - 1];
        let last = x.last().copied();
        eprintln!("  avl_order_edit {:?}, avl_order of the copy {:?} (min of {reps})",
            min(&mut || { std::hint::black_box(avl_order_edit(prev, last, None)); }),
            min(&mut || { let c: Vec<i32> = prev.iter().copied().chain(last).collect(); std::hint::black_box(avl_order(&c)); }));
    }
}
