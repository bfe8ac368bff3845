//! Keepalive pacing, in plain Rust: which list positions a timer tick pings.
//!
//! * The first round pings **every** destination at once, one `ds_ping_interval` after the
//!   timer started (as the C module does: it pings all of them every interval), so a
//!   destination dead at startup is found as early as with the C module.
//! * The rounds after it are paced: round k (k ≥ 1) starts at `origin + (k+1)·interval` and
//!   pings position j of n once `j/n` of the interval has passed. So every destination is
//!   pinged once per interval, a tick never sends more than its share of the list, and two
//!   probes of one destination are never less than an interval apart (a probe whose
//!   timeout is shorter than the interval is over before the next one leaves, as in C).
//!   Between the first round and the second, position j waits `(1 + j/n)` intervals.
//!
//! Times are in microseconds on any monotonic-enough clock; `tick_us` is the timer period,
//! used as tolerance (half a tick) so that a tick arriving a little early is not skipped.
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct Pacer {
    tick_us: u64,
    /// startup: one tick before the first callback; None before that
    origin: Option<u64>,
    /// whether the first (all-at-once) round was sent
    first_done: bool,
    pass_start: u64,
    cursor: usize,
    in_pass: bool,
}

impl Pacer {
    pub const fn new(tick_us: u64) -> Pacer {
        Pacer { tick_us, origin: None, first_done: false, pass_start: 0, cursor: 0, in_pass: false }
    }

    /// The list positions (ranges `from..to` of the iteration order) due at `now`, for a
    /// list of `total` destinations and an interval of `interval_us`. Empty when nothing is
    /// due.
    pub fn tick(&mut self, now: u64, interval_us: u64, total: usize) -> Vec<Range<usize>> {
        // a round that ends in this tick and the next one that starts in it
        let mut out = Vec::new();
        for _ in 0..2 {
            let r = self.step(now, interval_us, total);
            if r.is_empty() {
                break;
            }
            out.push(r);
        }
        out
    }

    fn step(&mut self, now: u64, interval_us: u64, total: usize) -> Range<usize> {
        let interval = interval_us.max(1);
        let half = self.tick_us / 2;
        // startup: the timers used call back for the first time one period after they were
        // registered (in mod_init), so the pacing starts one tick before the first callback
        let origin = *self.origin.get_or_insert(now.saturating_sub(self.tick_us));
        if !self.first_done {
            let first = origin + interval;
            if now + half < first {
                return 0..0;
            }
            // everyone at once; the paced rounds start one interval later
            self.first_done = true;
            self.pass_start = if now < first + interval { first } else { now };
            self.in_pass = false;
            return 0..total;
        }
        if self.in_pass && now >= self.pass_start + 2 * interval {
            // more than a round behind (e.g. pings were paused): restart pacing from now
            self.pass_start = now;
            self.cursor = 0;
        }
        if !self.in_pass {
            let next = self.pass_start + interval;
            if now + half < next {
                return 0..0;
            }
            // keep the period exact unless we fell behind by more than a round
            self.pass_start = if now < next + interval { next } else { now };
            self.cursor = 0;
            self.in_pass = true;
        }
        let elapsed = now.saturating_sub(self.pass_start);
        // position j is due once j/total of the interval has passed (the first one at the
        // start of the round): all of them by its end
        let due = if elapsed + half >= interval {
            total
        } else {
            ((total as u128 * elapsed as u128).div_ceil(interval as u128) as usize).max(1)
        }
        .min(total);
        let from = self.cursor.min(total);
        let to = due.max(from);
        self.cursor = to;
        if to >= total {
            self.in_pass = false;
        }
        from..to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// Runs ticks every `tick` µs (the first at `tick`) up to `end` and returns, per list
    /// position, the times it was pinged.
    fn simulate(tick: u64, interval: u64, n: usize, end: u64) -> Vec<Vec<u64>> {
        let mut p = Pacer::new(tick);
        let mut pings = vec![Vec::new(); n];
        let mut t = tick;
        while t <= end {
            for j in p.tick(t, interval, n).into_iter().flatten() {
                pings[j].push(t);
            }
            t += tick;
        }
        pings
    }

    fn check_schedule(tick: u64, interval: u64, n: usize) {
        let end = 10 * interval;
        let pings = simulate(tick, interval, n, end);
        for (j, times) in pings.iter().enumerate() {
            // first probe of every destination: one interval after startup (≤ one tick late)
            let first = times[0];
            assert!(
                first >= interval && first <= interval + tick,
                "n={n} tick={tick}: position {j} first pinged at {first} (interval {interval})"
            );
            // two probes never less than an interval apart, never more than two
            for w in times.windows(2) {
                let gap = w[1] - w[0];
                assert!(gap + tick >= interval && gap <= 2 * interval, "n={n} tick={tick} position {j}: gap {gap}: {times:?}");
            }
            // steady state: exactly one interval between two probes
            let steady: Vec<u64> = times.iter().copied().filter(|&t| t >= 3 * interval).collect();
            for w in steady.windows(2) {
                let gap = w[1] - w[0];
                assert!(gap + tick >= interval && gap <= interval + tick, "position {j}: steady gap {gap}: {times:?}");
            }
            // one probe per interval: paced round k (1..=8) probes position j at
            // (k+1)·interval + j/n of the interval (within a tick)
            for k in 1..=8u64 {
                let at = (k + 1) * interval + j as u64 * interval / n as u64;
                let hits = times.iter().filter(|&&t| t + tick >= at && t <= at + tick).count();
                assert_eq!(hits, 1, "n={n} tick={tick} position {j} round {k} (at {at}): {times:?}");
            }
            // and nothing else (position 0 starts round 9 at the end of the simulation)
            assert_eq!(times.len(), 9 + usize::from(j == 0), "n={n} tick={tick} position {j}: {times:?}");
        }
    }

    #[test]
    fn first_round_all_at_one_interval_then_paced() {
        // the example of issue 13: interval 60 s, 3 destinations, core timer (62.5 ms)
        let pings = simulate(62_500, 60 * S, 3, 240 * S);
        let firsts: Vec<u64> = pings.iter().map(|t| t[0]).collect();
        for f in &firsts {
            assert!((60 * S..=60 * S + 62_500).contains(f), "first probes {firsts:?}");
        }
        // then one probe per interval, spread over it: positions 0, 1, 2 at +0, +20, +40 s
        let round = |k: usize| -> Vec<u64> { pings.iter().map(|t| (t[k] + S / 2) / S).collect() };
        assert_eq!(round(1), vec![120, 140, 160]);
        assert_eq!(round(2), vec![180, 200, 220]);
        // every mode's tick, a few list sizes
        for tick in [62_500, S, 10_000] {
            for n in [1, 2, 3, 7, 100] {
                check_schedule(tick, 60 * S, n);
                check_schedule(tick, 3 * S, n);
            }
        }
    }

    #[test]
    fn paced_rounds_have_no_bursts() {
        // 10,000 destinations, interval 10 s, 10 ms ticks: after the first round at most
        // ceil(n·tick/interval)+1 pings per tick
        let (n, interval, tick) = (10_000usize, 10 * S, 10_000u64);
        let mut p = Pacer::new(tick);
        let mut t = tick;
        let mut first = None;
        let mut max_paced = 0usize;
        let mut total_paced = 0usize;
        while t <= 5 * interval {
            let r = p.tick(t, interval, n);
            let len: usize = r.iter().map(|x| x.len()).sum();
            if first.is_none() && len > 0 {
                assert_eq!(r, vec![0..n], "first round at {t}");
                first = Some(t);
            } else {
                max_paced = max_paced.max(len);
                total_paced += len;
            }
            t += tick;
        }
        assert!(first.is_some_and(|f| (interval..=interval + tick).contains(&f)), "first round {first:?}");
        assert!(max_paced <= n * tick as usize / interval as usize + 1, "max per tick {max_paced}");
        // three paced rounds after the first one (at 2, 3 and 4 intervals) and the start of
        // the fourth
        assert!(total_paced >= 3 * n && total_paced <= 3 * n + n / 100, "paced pings {total_paced}");
    }

    #[test]
    fn late_ticks_and_list_changes() {
        let mut p = Pacer::new(S);
        assert_eq!(p.tick(S, 3 * S, 3), vec![]);
        assert_eq!(p.tick(2 * S, 3 * S, 3), vec![]);
        // a tick a little early still starts the round (half-tick tolerance)
        assert_eq!(p.tick(3 * S + S / 2 - 1, 3 * S, 3), vec![0..3]);
        // the paced rounds start one interval later
        assert_eq!(p.tick(4 * S, 3 * S, 3), vec![]);
        assert_eq!(p.tick(5 * S, 3 * S, 3), vec![]);
        assert_eq!(p.tick(6 * S, 3 * S, 3), vec![0..1]);
        // a long pause (ping_active 0): pacing restarts from now, not in a burst
        assert_eq!(p.tick(30 * S, 3 * S, 3), vec![0..1]);
        assert_eq!(p.tick(31 * S, 3 * S, 3), vec![]);
        assert_eq!(p.tick(31 * S + S / 2, 3 * S, 3), vec![1..2]);
        // the list shrank to 1: the round ends at once
        assert_eq!(p.tick(32 * S, 3 * S, 1), vec![]);
        assert_eq!(p.tick(33 * S, 3 * S, 1), vec![0..1]);
        assert_eq!(p.tick(34 * S, 3 * S, 1), vec![]);
        assert_eq!(p.tick(36 * S, 3 * S, 1), vec![0..1]);
        // empty list: nothing, no panic
        let mut q = Pacer::new(62_500);
        for k in 1..200 {
            assert!(q.tick(k * 62_500, S, 0).is_empty());
        }
    }
}
