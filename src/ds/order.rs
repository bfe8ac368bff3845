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

/// Arena AVL tree with the same insertion/rebalancing rules as the C module.
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

    /// Inserts every id of `ids` in turn, as `insert` does, but starting each search from the
    /// deepest node of the previous search path whose subtree can hold the id (a finger):
    /// the nodes above the rebalancing point of an insertion do not change, so the path down
    /// to them stays valid. An edit inserts the previous post-order, in which consecutive ids
    /// are close in the tree: most searches start near the leaves.
    fn insert_all(&mut self, ids: &[i32]) {
        /// A node of the current search path: its slot, its index, the bounds of the ids its
        /// subtree holds (exclusive), and the path position of the deepest node at or above
        /// it whose lean is not `Neither` (the rebalancing point `insert` computes; 0: the root).
        struct E {
            slot: Slot,
            node: usize,
            lo: i64,
            hi: i64,
            top: usize,
        }
        let mut path: Vec<E> = Vec::with_capacity(64);
        for &id in ids {
            let v = id as i64;
            while path.last().is_some_and(|e| v <= e.lo || v >= e.hi) {
                path.pop();
            }
            if path.is_empty() {
                match self.root {
                    Some(r) => path.push(E { slot: Slot::Root, node: r, lo: i64::MIN, hi: i64::MAX, top: 0 }),
                    None => {
                        self.insert(id);
                        continue;
                    }
                }
            }
            while let Some(e) = path.last() {
                let nid = self.id(e.node);
                if nid == id {
                    break;
                }
                let d = usize::from(id > nid);
                let slot = Slot::Child(e.node, d);
                let (lo, hi) = if d == 0 { (e.lo, nid as i64) } else { (nid as i64, e.hi) };
                let k = path.len() - 1;
                let top_k = e.top;
                match self.get(slot) {
                    Some(c) => {
                        let top = if self.lean(c) != Lean::Neither { k + 1 } else { top_k };
                        path.push(E { slot, node: c, lo, hi, top });
                    }
                    None => {
                        let idx = self.nodes.len();
                        self.nodes.push(Node { id, kids: [NIL, NIL], lean: -1 });
                        self.set(slot, Some(idx));
                        let top_slot = path.get(top_k).map_or(Slot::Root, |t| t.slot);
                        self.rebalance(top_slot, id);
                        // what changed is at and below the rebalancing point
                        path.truncate(top_k);
                        break;
                    }
                }
            }
        }
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

/// [`avl_postorder`] with the index by id (the tree's in-order walk).
pub fn avl_order(ids_in_first_appearance_order: &[i32]) -> SetOrder {
    let mut t = Avl { nodes: Vec::with_capacity(ids_in_first_appearance_order.len()), root: None };
    t.insert_all(ids_in_first_appearance_order);
    let n = t.nodes.len();
    // post-order: ids, and each node's position (by node index)
    let mut ids = Vec::with_capacity(n);
    let mut pos = vec![0u32; n];
    let mut stack: Vec<(u32, bool)> = Vec::with_capacity(64);
    if let Some(r) = t.root {
        stack.push((r as u32, false));
    }
    while let Some((k, done)) = stack.pop() {
        let Some(node) = t.nodes.get(k as usize) else { continue };
        if done {
            if let Some(p) = pos.get_mut(k as usize) {
                *p = ids.len() as u32;
            }
            ids.push(node.id);
            continue;
        }
        stack.push((k, true));
        for c in [node.kids[1], node.kids[0]] {
            if c != NIL {
                stack.push((c, false));
            }
        }
    }
    // in-order: the positions by ascending id
    let mut by_id = Vec::with_capacity(n);
    let mut path: Vec<u32> = Vec::with_capacity(64);
    let mut cur = t.root.map_or(NIL, |r| r as u32);
    loop {
        while let Some(node) = t.nodes.get(cur as usize) {
            path.push(cur);
            cur = node.kids[0];
        }
        let Some(k) = path.pop() else { break };
        by_id.push(pos.get(k as usize).copied().unwrap_or(0));
        cur = t.nodes.get(k as usize).map_or(NIL, |x| x.kids[1]);
    }
    SetOrder { ids, by_id }
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
    // set ids in order of first appearance, and how many destinations each has
    let mut first_seen: Vec<i32> = Vec::new();
    let mut count: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
    for d in &dests {
        let c = count.entry(d.setid).or_insert(0);
        if *c == 0 {
            first_seen.push(d.setid);
        }
        *c += 1;
    }
    let post = avl_postorder(&first_seen);
    let rank: std::collections::HashMap<i32, u32> = post.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    // sort small keys, not the destinations: (set position, priority descending, input
    // position descending: equal priorities in reverse load order); each destination is then
    // moved once into its set
    let mut keys: Vec<(u32, std::cmp::Reverse<i32>, std::cmp::Reverse<u32>)> = dests
        .iter()
        .enumerate()
        .map(|(i, d)| (rank.get(&d.setid).copied().unwrap_or(u32::MAX), std::cmp::Reverse(d.priority), std::cmp::Reverse(i as u32)))
        .collect();
    keys.sort_unstable();
    let mut slots: Vec<Option<Dest>> = dests.into_iter().map(Some).collect();
    let mut out: Vec<DestSet> =
        post.iter().map(|&id| DestSet { id, dests: Vec::with_capacity(count.get(&id).copied().unwrap_or(0)) }).collect();
    for (si, _, std::cmp::Reverse(i)) in keys {
        if let (Some(set), Some(d)) = (out.get_mut(si as usize), slots.get_mut(i as usize).and_then(Option::take)) {
            set.dests.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::attrs::Attrs;
    use crate::ds::uri::{Proto, Scheme};

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
        let zig: Vec<i32> = (0..50)
            .map(|i| if i % 2 == 0 { i } else { 100 - i })
            .collect();
        assert_eq!(avl_postorder(&zig), reference(&zig));
    }
}
