//! Full builds set by set (issue 14): a list that shares nothing with the running one (the
//! start-up load, a reload with `ds_reload_keep_state` 0 or of another list) built one set at
//! a time from destinations prepared right before their set's block, into a buffer reused from
//! set to set (a child module of `snapshot`: it builds through the private block writers).
//!
//! Preparing the whole list first kept every prepared destination (`Dest`, 224 bytes, and its
//! URI, host and attrs in three heap allocations) alive until the blocks were written: at
//! 100,000 destinations ~37 MB of heap touched page by page, then freed and trimmed before
//! Kamailio forks. Here the heap holds one set's destinations at a time. The blocks, the
//! random draws (one per set, in iteration order) and the address index are those of
//! [`build_sharing`] with nothing shared.

use super::*;
use crate::ds::dest::Dest;

/// Builds a list of the sets `spans` (set id and number of destinations, in iteration order),
/// nothing shared: `fill(i, buf)` appends the destinations of set `i` (in array order) to the
/// empty `buf`, or returns false to abandon the build. Returns `Ok(None)` when `fill`
/// abandoned it (or gave another number of destinations than `spans` says); the blocks
/// already built are then freed with `free`, as on an error. `generation`, `now`, `carry`,
/// `alloc` and `rng` as for [`build_sharing`].
#[allow(clippy::too_many_arguments)]
pub fn build_streamed(
    spans: &[(i32, usize)],
    fill: &mut dyn FnMut(usize, &mut Vec<Dest>) -> bool,
    generation: u64,
    now: (u64, u64),
    carry: &mut CarryFn<'_>,
    alloc: &mut dyn FnMut(usize) -> *mut u8,
    free: &mut dyn FnMut(*mut u8),
    rng: &mut dyn FnMut() -> u32,
) -> Result<Option<*mut Header>, BuildError> {
    let nsets = spans.len();
    let ndests: usize = spans.iter().map(|s| s.1).sum();
    if nsets > u32::MAX as usize / 2 || ndests > u32::MAX as usize / 2 {
        return Err(BuildError::TooLarge);
    }
    let mut blks: Vec<*mut SetBlk> = Vec::with_capacity(nsets);
    let fail = |blks: &[*mut SetBlk], free: &mut dyn FnMut(*mut u8)| blks.iter().for_each(|&b| free(b as *mut u8));
    let mut buf: Vec<Dest> = Vec::new();
    let mut di = 0usize;
    for (i, &(id, len)) in spans.iter().enumerate() {
        buf.clear();
        if !fill(i, &mut buf) || buf.len() != len {
            drop(buf);
            fail(&blks, free);
            return Ok(None);
        }
        let src = SetSrc { id, all: &buf, idx: None };
        match build_set_src(&src, generation, di, now, carry, alloc, rng) {
            Ok(b) => blks.push(b),
            Err(e) => {
                fail(&blks, free);
                return Err(e);
            }
        }
        di += len;
    }
    drop(buf);
    let (mut v4, mut v6) = (Vec::with_capacity(ndests), Vec::new());
    for &b in &blks {
        // SAFETY: just built.
        let v = unsafe { &*b }.view();
        set_ip_entries(&v, &mut v4, &mut v6);
    }
    v4.sort_unstable();
    v6.sort_unstable();
    // SAFETY: the blocks were just built.
    match unsafe { write_header(&blks, generation, v4.len(), v6.len(), None, alloc) } {
        Some((h, p4, p6)) => {
            // SAFETY: `write_header` reserved room for exactly these entries.
            unsafe {
                std::ptr::copy_nonoverlapping(v4.as_ptr(), p4, v4.len());
                std::ptr::copy_nonoverlapping(v6.as_ptr(), p6, v6.len());
            }
            Ok(Some(h))
        }
        None => {
            fail(&blks, free);
            Err(BuildError::NoMemory(0))
        }
    }
}
