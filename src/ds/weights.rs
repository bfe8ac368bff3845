//! The 100-slot tables of algorithms 9 (`weight`), 11 (`rweight`) and 15 (priority, then
//! weight; Kamailio master), built as the C module builds them (spec §6.2 G-09/G-11,
//! devel-delta §3.2), then shuffled with a Fisher-Yates pass.

/// The random draws of the tables' shuffles: `below(n)` is in `0..n` (`n >= 1`).
pub trait Draw {
    fn below(&mut self, n: u32) -> u32;
}

/// A `u32` source (`kam_rand`, a test generator): `rng() % n`, as the C module draws.
impl<F: FnMut() -> u32 + ?Sized> Draw for F {
    #[inline]
    fn below(&mut self, n: u32) -> u32 {
        self() % n.max(1)
    }
}

/// The generator of one set's shuffles while a list is built (xorshift64, seeded from the
/// build's generator): full 32-bit draws scaled by a multiply and a shift instead of a
/// division (a list of many small sets draws ~300 times per set at start-up).
pub struct SetRng(u64);

impl SetRng {
    pub fn new(seed: u64) -> SetRng {
        SetRng(seed | 1)
    }
    #[inline]
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

impl Draw for SetRng {
    #[inline]
    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next()) * u64::from(n)) >> 32) as u32
    }
}

/// Fisher-Yates over 100 slots with `rng()` (the C module uses `kam_rand() % (100 - j)`).
pub fn shuffle100<R: Draw + ?Sized>(arr: &mut [u32; 100], rng: &mut R) {
    for j in 0..100usize {
        let k = j + rng.below((100 - j) as u32) as usize;
        arr.swap(j, k);
    }
}

/// Weight table: only when the first destination has a weight; each index `weight` times in
/// array order (stopping at 100), the rest filled with the last index, then shuffled.
/// All zeros when the first weight is 0.
pub fn weight_table<R: Draw + ?Sized>(weights: &[i32], rng: &mut R) -> [u32; 100] {
    let mut t = [0u32; 100];
    if weights.first().copied().unwrap_or(0) == 0 {
        return t;
    }
    let mut n = 0usize;
    'fill: for (j, &w) in weights.iter().enumerate() {
        for _ in 0..w.max(0) {
            if n >= 100 {
                break 'fill;
            }
            t[n] = j as u32;
            n += 1;
        }
    }
    let last = weights.len().saturating_sub(1) as u32;
    for slot in t.iter_mut().skip(n) {
        *slot = last;
    }
    shuffle100(&mut t, rng);
    t
}

/// Relative-weight table over the usable destinations; `None` means "leave the table as it
/// is" (fewer than 2 destinations, or the usable rweights sum to 0).
pub fn rweight_table<R: Draw + ?Sized>(rweights: &[i32], usable: &[bool], rng: &mut R) -> Option<[u32; 100]> {
    let nr = rweights.len();
    if nr < 2 {
        return None;
    }
    let ok = |j: usize| usable.get(j).copied().unwrap_or(false);
    let sum: i64 = (0..nr).filter(|&j| ok(j)).map(|j| rweights[j] as i64).sum();
    if sum == 0 {
        return None;
    }
    let mut t = [0u32; 100];
    let mut n = 0usize;
    for (j, &rw) in rweights.iter().enumerate() {
        if !ok(j) {
            continue;
        }
        let slice = (rw as i64 * 100 / sum).max(0) as usize;
        for _ in 0..slice {
            if n >= 100 {
                break;
            }
            t[n] = j as u32;
            n += 1;
        }
    }
    let last = if n > 0 { t[n - 1] } else { (nr - 1) as u32 };
    for slot in t.iter_mut().skip(n) {
        *slot = last;
    }
    shuffle100(&mut t, rng);
    Some(t)
}

/// Priority-weight table of algorithm 15 (Kamailio master, `dp_init_priority_weights`):
/// 1. the best priority is the **lowest** numeric priority among the usable destinations;
/// 2. only the usable destinations with that priority take slots;
/// 3. none usable: every slot is index 0 (no shuffle);
/// 4. their `weight`s sum to 0: 100/n slots each in array order, the last one takes the
///    remainder;
/// 5. otherwise floor(w*100/sum) slots each in array order, the remaining slots go to the last
///    index written (index 0 when none was written, e.g. more than 100 destinations of weight
///    1; the C module re-uses the table's stale slot 0 there);
/// 6. then the table is shuffled like the other 100-slot tables.
pub fn pw_table<R: Draw + ?Sized>(prios: &[i32], weights: &[i32], usable: &[bool], rng: &mut R) -> [u32; 100] {
    let mut t = [0u32; 100];
    let ok = |j: usize| usable.get(j).copied().unwrap_or(false);
    let n = prios.len();
    let Some(best) = (0..n).filter(|&j| ok(j)).map(|j| prios[j]).min() else {
        return t;
    };
    let bp = |j: usize| ok(j) && prios[j] == best;
    let w = |j: usize| weights.get(j).copied().unwrap_or(0) as i64;
    let sum: i64 = (0..n).filter(|&j| bp(j)).map(w).sum();
    let mut k = 0usize;
    if sum == 0 {
        let cnt = (0..n).filter(|&j| bp(j)).count();
        for (seen, j) in (0..n).filter(|&j| bp(j)).enumerate() {
            if k >= 100 {
                break;
            }
            let slots = if seen + 1 == cnt { 100 - k } else { 100 / cnt };
            for _ in 0..slots {
                if k >= 100 {
                    break;
                }
                t[k] = j as u32;
                k += 1;
            }
        }
    } else {
        for j in (0..n).filter(|&j| bp(j)) {
            let slots = (w(j) * 100 / sum).max(0) as usize;
            for _ in 0..slots {
                if k >= 100 {
                    break;
                }
                t[k] = j as u32;
                k += 1;
            }
        }
        let last = if k > 0 { t[k - 1] } else { 0 };
        for slot in t.iter_mut().skip(k) {
            *slot = last;
        }
    }
    shuffle100(&mut t, rng);
    t
}

/// Overload-control table (alg 64): `rate` skip marks (0) among 100, shuffled.
pub fn oc_table<R: Draw + ?Sized>(rate: i32, rng: &mut R) -> [u8; 100] {
    let r = rate.clamp(0, 100) as usize;
    let mut t = [1u8; 100];
    if r == 0 {
        // nothing to skip: no need to shuffle (keeps list loads cheap)
        return t;
    }
    for slot in t.iter_mut().take(r) {
        *slot = 0;
    }
    for j in 0..100usize {
        let k = j + rng.below((100 - j) as u32) as usize;
        t.swap(j, k);
    }
    t
}

/// The table as two 64-bit masks (bit i = slot i says "use").
pub fn oc_bits(t: &[u8; 100]) -> [u64; 2] {
    let mut b = [0u64; 2];
    for (i, &v) in t.iter().enumerate() {
        if v != 0 {
            b[i / 64] |= 1u64 << (i % 64);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(t: &[u32; 100], n: usize) -> Vec<usize> {
        (0..n).map(|i| t.iter().filter(|&&x| x as usize == i).count()).collect()
    }
    fn lcg() -> impl FnMut() -> u32 {
        let mut s: u32 = 12345;
        move || {
            s = s.wrapping_mul(1103515245).wrapping_add(12345);
            s >> 1
        }
    }

    #[test]
    fn set_rng_draws_in_range_and_shuffles() {
        let mut r = SetRng::new(42);
        for n in 1..=100u32 {
            for _ in 0..50 {
                assert!(r.below(n) < n);
            }
        }
        // every slot reachable: 100 draws below 100 over many rounds hit every value
        let mut seen = [false; 100];
        for _ in 0..100 {
            for _ in 0..100 {
                seen[r.below(100) as usize] = true;
            }
        }
        assert!(seen.iter().all(|&b| b));
        let t = weight_table(&[50, 30, 20], &mut SetRng::new(7));
        assert_eq!(counts(&t, 3), vec![50, 30, 20]);
        assert_ne!(t[..50], [0u32; 50]);
    }

    #[test]
    fn weights_fill_and_remainder() {
        assert_eq!(counts(&weight_table(&[50, 30, 20], &mut lcg()), 3), vec![50, 30, 20]);
        assert_eq!(counts(&weight_table(&[10, 10, 10], &mut lcg()), 3), vec![10, 10, 80]);
        assert_eq!(counts(&weight_table(&[80, 80, 5], &mut lcg()), 3), vec![80, 20, 0]);
        assert_eq!(weight_table(&[0, 50], &mut lcg()), [0u32; 100]);
        // shuffled: not the sorted fill
        let t = weight_table(&[50, 50], &mut lcg());
        assert_ne!(t[..50], [0u32; 50]);
    }

    #[test]
    fn oc_table_marks() {
        let t = oc_table(30, &mut lcg());
        assert_eq!(t.iter().filter(|&&x| x == 0).count(), 30);
        assert_eq!(oc_table(0, &mut lcg()), [1u8; 100]);
        assert_eq!(oc_table(100, &mut lcg()), [0u8; 100]);
        // the all-"use" masks the snapshot stores for rate 0
        assert_eq!(oc_bits(&oc_table(0, &mut lcg())), [u64::MAX, (1u64 << 36) - 1]);
    }

    #[test]
    fn pw_lowest_priority_then_weight() {
        // array order is priority-descending in the module; the lowest value wins
        let t = pw_table(&[5, 1, 1], &[90, 30, 70], &[true, true, true], &mut lcg());
        assert_eq!(counts(&t, 3), vec![0, 30, 70]);
        // weights sum to 0: equal split, the last one takes the remainder
        let t = pw_table(&[2, 2, 2, 9], &[0, 0, 0, 0], &[true, true, true, true], &mut lcg());
        assert_eq!(counts(&t, 4), vec![33, 33, 34, 0]);
        // an unusable best-priority destination leaves its level: the next level takes all
        let t = pw_table(&[5, 1, 1], &[0, 30, 70], &[true, false, false], &mut lcg());
        assert_eq!(counts(&t, 3), vec![100, 0, 0]);
        let t = pw_table(&[5, 1, 1], &[0, 30, 70], &[true, false, true], &mut lcg());
        assert_eq!(counts(&t, 3), vec![0, 0, 100]);
        // truncation: the remainder goes to the last index written
        let t = pw_table(&[1, 1, 1], &[1, 1, 1], &[true, true, true], &mut lcg());
        assert_eq!(counts(&t, 3), vec![33, 33, 34]);
        let t = pw_table(&[1, 1, 1], &[1, 1, 0], &[true, true, true], &mut lcg());
        assert_eq!(counts(&t, 3), vec![50, 50, 0]);
        let t = pw_table(&[1, 1, 1], &[3, 3, 0], &[true, true, true], &mut lcg());
        assert_eq!(counts(&t, 3), vec![50, 50, 0]);
        // no usable destination: every slot is index 0, unshuffled
        assert_eq!(pw_table(&[1, 2], &[10, 10], &[false, false], &mut lcg()), [0u32; 100]);
        assert_eq!(pw_table(&[], &[], &[], &mut lcg()), [0u32; 100]);
        // more than 100 at the best level with weight 1: no slot written, all go to index 0
        let n = 150;
        let t = pw_table(&vec![1; n], &vec![1; n], &vec![true; n], &mut lcg());
        assert_eq!(counts(&t, 1), vec![100]);
        // shuffled
        let t = pw_table(&[1, 1], &[50, 50], &[true, true], &mut lcg());
        assert_ne!(t[..50], [0u32; 50]);
        assert_eq!(counts(&t, 2), vec![50, 50]);
        // negative priorities are lower than 0
        let t = pw_table(&[0, -1], &[10, 10], &[true, true], &mut lcg());
        assert_eq!(counts(&t, 2), vec![0, 100]);
    }

    #[test]
    fn rweights_over_usable_only() {
        let t = rweight_table(&[1, 2, 1], &[true, true, true], &mut lcg()).expect("table");
        assert_eq!(counts(&t, 3), vec![25, 50, 25]);
        let t = rweight_table(&[1, 2, 1], &[true, false, true], &mut lcg()).expect("table");
        assert_eq!(counts(&t, 3), vec![50, 0, 50]);
        // truncation: 3 x 33 = 99, last written index takes the rest
        let t = rweight_table(&[1, 1, 1], &[true, true, true], &mut lcg()).expect("table");
        assert_eq!(counts(&t, 3), vec![33, 33, 34]);
        assert!(rweight_table(&[5], &[true], &mut lcg()).is_none());
        assert!(rweight_table(&[0, 0], &[true, true], &mut lcg()).is_none());
        assert!(rweight_table(&[3, 3], &[false, false], &mut lcg()).is_none());
    }
}
