//! Snapshot builder, end to end: list text → `parse_list` → `prepare_dest` (fake env) →
//! `build_sets` → `snapshot::build` → read back (every set by id, every destination by
//! position and by address, the attributes) → random runtime state → a second build from a
//! changed list carrying state (exactly the destinations that stay keep theirs) → the
//! selection helpers on every set.
//! Input: byte 0 = release/settings, the rest is the list file.
use dispatcher::ds::listfile::parse_list;
use dispatcher_fuzz::{check_carry, check_selection, check_snapshot, order, prepare_all, scramble_state, Block, Cfg, Rng};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&b, text)) = data.split_first() else { return };
        let cfg = Cfg::from_byte(b);
        cfg.apply();
        let Ok(entries) = parse_list(text, "fuzz.list") else { return };
        let mut rng = Rng::new(dispatcher_fuzz::fnv(data));
        let dests = prepare_all(&entries, &cfg);
        let sets = order(dests.clone());
        let block = Block::build(&sets, 1, &mut |_, _, _| None, &mut rng);
        let snap = block.snap();
        check_snapshot(&sets, snap);
        scramble_state(snap, &mut rng);
        for v in snap.sets() {
            check_selection(v, cfg.use_default, &mut rng);
        }
        // a changed list: some destinations dropped, some with other flags, one duplicated
        let mut changed = Vec::new();
        for d in &dests {
            match rng.below(4) {
                0 => {}
                1 => {
                    let mut d = d.clone();
                    d.flags ^= 1 << rng.below(5);
                    changed.push(d);
                }
                _ => changed.push(d.clone()),
            }
        }
        if let Some(d) = dests.first() {
            let mut d = d.clone();
            d.setid = d.setid.wrapping_add(1);
            changed.push(d);
        }
        let new_sets = order(changed);
        check_carry(snap, &new_sets, &mut rng);
    });
}
