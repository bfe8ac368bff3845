//! Keepalive latency statistics and congestion control (spec §9), in plain Rust.

/// Per-destination statistics (`ds_latency_stats_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyStats {
    pub min: i32,
    pub max: i32,
    pub average: f64,
    pub stdev: f64,
    pub estimate: f64,
    pub m2: f64,
    pub count: i32,
    pub timeout: u32,
}

const TRAINING_COUNT: i32 = 10000;

impl LatencyStats {
    /// avg = est = min = max = `latency`, with `count` samples (the `latency` attr: 10000).
    pub fn init(latency: i32, count: i32) -> LatencyStats {
        LatencyStats {
            min: latency,
            max: latency,
            average: latency as f64,
            stdev: 0.0,
            estimate: latency as f64,
            m2: 0.0,
            count,
            timeout: self_timeout_default(),
        }
    }

    /// Adds one sample (ms). `alpha` is the weight of the old estimate (5.6.3 meaning).
    pub fn update(&mut self, latency: i32, alpha: f64) {
        if self.count < 2_097_152 {
            self.count += 1;
        } else {
            self.m2 -= self.m2 / (self.count.max(1) as f64);
        }
        if self.count == 1 {
            let t = self.timeout;
            *self = LatencyStats::init(latency, 1);
            self.timeout = t;
        }
        if self.count > 10 && self.count < TRAINING_COUNT && self.stdev < 0.5 {
            self.count = TRAINING_COUNT;
        }
        if self.min > latency {
            self.min = latency;
        }
        if self.max < latency {
            self.max = latency;
        }
        if self.count > 1 {
            // the C module computes the deltas in float precision
            let delta = (latency as f64 - self.average) as f32;
            self.average += delta as f64 / self.count.max(1) as f64;
            let delta2 = (latency as f64 - self.average) as f32;
            self.m2 += (delta as f64) * (delta2 as f64);
            let div = if self.count - 1 != 0 { (self.count - 1) as f64 } else { 1.0 };
            self.stdev = (self.m2 / div).sqrt();
        }
        if self.count < 10 {
            self.estimate = self.average;
        } else {
            self.estimate = self.estimate * alpha + latency as f64 * (1.0 - alpha);
        }
    }

    /// A keepalive timed out (408): counted, no sample.
    pub fn timed_out(&mut self) {
        self.timeout = self.timeout.saturating_add(1);
    }
}

/// What a keepalive result contributes to the latency statistics (`ds_update_latency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingSample {
    /// 408: counted in TIMEOUT, no sample.
    Timeout,
    /// A reply `ms` milliseconds after the keepalive was sent.
    Latency(i32),
    /// Kamailio 5.8+: a reply for a destination whose send timestamp is 0 (e.g. a record
    /// created by a reload while the keepalive was in flight) adds no sample.
    NoStart,
}

/// Classifies a keepalive result with final `code`, sent at `start_us` (0 = unknown) and
/// completed at `now_us` (µs since the epoch). Before 5.8 a missing start time is not
/// checked: the latency is computed from 0 (a huge value, truncated like the C `int`).
pub fn ping_sample(code: i32, start_us: u64, now_us: u64) -> PingSample {
    if code == 408 {
        return PingSample::Timeout;
    }
    if start_us == 0 && crate::ds::compat::ge(5, 8, 0) {
        return PingSample::NoStart;
    }
    PingSample::Latency((now_us.saturating_sub(start_us) / 1000) as i32)
}

fn self_timeout_default() -> u32 {
    0
}

/// Congestion control over one set after a keepalive result (spec §9): for each destination
/// `(cc, weight, est, avg, is_pinged, rweight)`, returns the new rweights when they changed.
pub fn congestion_rweights(dests: &[(i32, i32, f64, f64, bool, i32)]) -> Option<Vec<i32>> {
    let mut enabled = true;
    let mut congested = 0;
    let mut normal = 0;
    let mut total: i32 = 0;
    let mut out: Vec<i32> = dests.iter().map(|d| d.5).collect();
    let mut changed = false;
    for (i, &(cc, weight, est, avg, pinged, rw)) in dests.iter().enumerate() {
        if cc != 0 && weight > 0 {
            let cms = ((est - avg) as i32).max(0);
            total = total.saturating_add(cms);
            let active = (weight - cms).max(0);
            if active == 0 {
                congested += 1;
            } else {
                normal += 1;
            }
            if pinged && rw != active {
                out[i] = active;
                changed = true;
            }
        }
        if cc == 0 {
            enabled = false;
        }
    }
    if enabled && congested > 1 && normal == 0 {
        for (i, &(_, _, est, avg, _, _)) in dests.iter().enumerate() {
            let cms = (est - avg) as i32;
            let active = (total << 4) / if cms != 0 { cms } else { 1 };
            if out[i] != active {
                out[i] = active;
                changed = true;
            }
        }
    }
    if enabled && changed { Some(out) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_initialises_and_estimate_follows_average_early() {
        let mut s = LatencyStats::default();
        s.update(20, 0.9);
        assert_eq!((s.count, s.min, s.max, s.average, s.estimate), (1, 20, 20, 20.0, 20.0));
        s.update(30, 0.9);
        assert_eq!(s.count, 2);
        assert_eq!(s.average, 25.0);
        assert_eq!(s.estimate, 25.0);
        assert!((s.stdev - 7.0710678).abs() < 1e-4);
        assert_eq!(s.max, 30);
    }

    #[test]
    fn training_jump_and_ewma() {
        let mut s = LatencyStats::default();
        for _ in 0..11 {
            s.update(10, 0.9);
        }
        // stable: jumps to the training count
        assert_eq!(s.count, 10000);
        s.update(110, 0.9);
        assert!((s.estimate - (10.0 * 0.9 + 110.0 * 0.1)).abs() < 1e-9);
    }

    #[test]
    fn preload_and_timeouts() {
        let mut s = LatencyStats::init(40, 10000);
        s.timed_out();
        s.timed_out();
        assert_eq!(s.timeout, 2);
        assert_eq!(s.estimate, 40.0);
    }

    #[test]
    fn sample_without_start_time() {
        use crate::ds::compat::{val, with};
        let now = 1_700_000_000_000_000u64;
        for v in [val(5, 6, 3), val(5, 8, 0), val(6, 1, 4)] {
            with(v, || {
                assert_eq!(ping_sample(200, now - 25_000, now), PingSample::Latency(25));
                assert_eq!(ping_sample(404, now - 1_999, now), PingSample::Latency(1));
                assert_eq!(ping_sample(408, now - 25_000, now), PingSample::Timeout);
                assert_eq!(ping_sample(408, 0, now), PingSample::Timeout);
            });
        }
        // 5.6.3: computed from 0 (the C module's int overflow: a garbage value, never 0 here)
        let garbage = with(val(5, 6, 3), || ping_sample(200, 0, now));
        assert_eq!(garbage, PingSample::Latency((now / 1000) as i32));
        assert_ne!(garbage, PingSample::Latency(0));
        // 5.8+: no sample
        assert_eq!(with(val(5, 8, 0), || ping_sample(200, 0, now)), PingSample::NoStart);
        assert_eq!(with(val(6, 1, 4), || ping_sample(503, 0, now)), PingSample::NoStart);
    }

    #[test]
    fn congestion() {
        // pinged dest congested by 30ms with weight 50 → rweight 20
        let r = congestion_rweights(&[(1, 50, 130.0, 100.0, true, 50), (1, 50, 100.0, 100.0, false, 50)]).expect("changed");
        assert_eq!(r, vec![20, 50]);
        // a destination without cc disables it for the set
        assert!(congestion_rweights(&[(1, 50, 130.0, 100.0, true, 50), (0, 50, 100.0, 100.0, false, 50)]).is_none());
        // all congested: ratio of total congestion
        let r = congestion_rweights(&[(1, 10, 140.0, 100.0, true, 10), (1, 10, 120.0, 100.0, false, 10)]).expect("changed");
        assert_eq!(r, vec![(60 << 4) / 40, (60 << 4) / 20]);
    }
}
