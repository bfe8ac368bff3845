//! Module-wide state: the shared control block, the writer lock, the configuration, and
//! loading/reloading the list into a new snapshot.
use std::net::IpAddr;
use std::sync::atomic::{AtomicPtr, Ordering};

use once_cell::sync::OnceCell;

use crate::ds::dest::{prepare_dest, LoadEnv};
use crate::ds::listfile::parse_list;
use crate::ds::order::build_sets;
use crate::ds::rcu::{Control, ReadGuard};
use crate::ds::snapshot::{self, setedit, Header, Snap};
use crate::ds::uri::{Proto, Scheme};
use crate::kam::mem::{shm_alloc, shm_free, ShmLock};
use crate::kam::{log, msg};
use crate::kam::param::{PvFormat, PvSpec};
use crate::module::params::Config;
use crate::sys;
use crate::{ds_err, ds_info, ds_warn};

/// Pointer to the control block in shm (set in mod_init, before fork; copied to children).
static CTL: AtomicPtr<Control> = AtomicPtr::new(std::ptr::null_mut());
static WLOCK: OnceCell<ShmLock> = OnceCell::new();
static CFG: OnceCell<Config> = OnceCell::new();
static DEFAULT_SOCK: OnceCell<usize> = OnceCell::new();
/// DB table version read at startup.
static DB_VERSION: OnceCell<i32> = OnceCell::new();

pub struct Pvs {
    pub setid: Option<PvSpec>,
    pub attrs: Option<PvSpec>,
}
static PVS: OnceCell<Pvs> = OnceCell::new();
static HASH_FMT: OnceCell<PvFormat> = OnceCell::new();

/// `hash_pvar` format (alg 7), when set.
pub fn hash_fmt() -> Option<&'static PvFormat> {
    HASH_FMT.get()
}

pub fn cfg() -> &'static Config {
    CFG.get_or_init(Config::default)
}
pub fn pvs() -> Option<&'static Pvs> {
    PVS.get()
}

pub fn ctl() -> Option<&'static Control> {
    let p = CTL.load(Ordering::Acquire);
    // SAFETY: set once in mod_init to a block in shm that lives until shutdown.
    unsafe { p.as_ref() }
}

/// This process' reader slot.
fn slot() -> usize {
    // SAFETY: process_no is a plain int global maintained by the core.
    let p = unsafe { sys::process_no };
    if p < 0 { 0 } else { p as usize }
}

/// Read access to the current list for the duration of the guard (no lock taken).
#[inline(always)]
pub fn read() -> Option<ReadGuard<'static>> {
    Some(ctl()?.read(slot()))
}

/// Runs `f` with the current snapshot (None when nothing is loaded).
#[inline(always)]
pub fn with_snap<R>(f: impl FnOnce(Option<Snap<'_>>) -> R) -> R {
    // one call site of `f`, so that it is inlined here (and this into the caller)
    let g = read();
    let r = f(g.as_ref().and_then(|g| g.snap()));
    drop(g);
    r
}

fn free_snapshot(p: *mut Header) {
    // SAFETY: retired blocks come from `shm_alloc` in `install`, no reader can see them, and
    // they are freed oldest first (rcu::Control::collect), so their successors still exist.
    // A set block shared with a newer list is freed (and forwards its counters) with the
    // last list that holds it.
    unsafe {
        snapshot::release(
            p,
            &mut |set| {
                snapshot::forward_set_counters(&set);
                for d in set.dests {
                    d.ctr.forward();
                }
            },
            &mut |b| shm_free(b),
        );
    }
}

/// mod_init part: configuration, shm control block, writer lock, default socket, first load.
pub fn init(cfg: Config) -> Result<(), String> {
    msg::set_dns_ttl(cfg.dns_ttl);
    let p = shm_alloc(std::mem::size_of::<Control>()) as *mut Control;
    if p.is_null() {
        return Err("no shared memory for the control block".into());
    }
    // SAFETY: fresh shm block of the right size (shm_malloc aligns to 8+ bytes).
    unsafe { Control::init_in_place(p) };
    CTL.store(p, Ordering::Release);
    let lock = ShmLock::new().ok_or("cannot allocate the writer lock")?;
    let _ = WLOCK.set(lock);

    let mut dsock = 0usize;
    if !cfg.default_sockname.is_empty() {
        let name = String::from_utf8_lossy(&cfg.default_sockname);
        dsock = msg::socket_by_name(&cfg.default_sockname)
            .ok_or_else(|| format!("non-local socket name <{name}> (ds_default_sockname)"))?;
        ds_info!(fn "mod_init"; "default dispatcher socket set by name to <{name}>");
    } else if !cfg.default_socket.is_empty() {
        let sock = String::from_utf8_lossy(&cfg.default_socket);
        dsock = msg::socket_by_addr(&cfg.default_socket)
            .ok_or_else(|| format!("non-local socket <{sock}> (ds_default_socket)"))?;
        ds_info!(fn "mod_init"; "default dispatcher socket set to <{sock}>");
    }
    let _ = DEFAULT_SOCK.set(dsock);

    let mut pv = Pvs { setid: None, attrs: None };
    if !cfg.setid_pvname.is_empty() {
        let s = PvSpec::parse(&cfg.setid_pvname)
            .ok_or_else(|| format!("[{}]- invalid setid_pvname", String::from_utf8_lossy(&cfg.setid_pvname)))?;
        if !s.writable() {
            return Err(format!("[{}]- invalid setid_pvname (not writable)", String::from_utf8_lossy(&cfg.setid_pvname)));
        }
        pv.setid = Some(s);
    }
    if !cfg.attrs_pvname.is_empty() {
        let s = PvSpec::parse(&cfg.attrs_pvname)
            .ok_or_else(|| format!("[{}]- invalid attrs_pvname", String::from_utf8_lossy(&cfg.attrs_pvname)))?;
        if !s.writable() {
            return Err(format!("[{}]- invalid attrs_pvname (not writable)", String::from_utf8_lossy(&cfg.attrs_pvname)));
        }
        pv.attrs = Some(s);
    }
    let _ = PVS.set(pv);
    if !cfg.hash_pvar.is_empty() {
        let f = PvFormat::parse(&cfg.hash_pvar)
            .ok_or_else(|| format!("malformed PV string: {} (hash_pvar)", String::from_utf8_lossy(&cfg.hash_pvar)))?;
        let _ = HASH_FMT.set(f);
    }
    let db = !cfg.db_url.is_empty();
    let _ = CFG.set(cfg);
    match load_and_install(false) {
        // the skipped rows are logged (WARNING) by the load, as the C module's ds_init_db
        Ok(_) | Err(ReloadError::Partial(_)) => Ok(()),
        // the cause is logged where it happened; these are the C module's words for it
        Err(ReloadError::Failed(_)) if db => Err("could not initiate a connect to the database".into()),
        Err(ReloadError::Failed(_)) => Err("no dispatching list loaded from file".into()),
        Err(other) => Err(format!("{other:?}")),
    }
}

struct KamEnv {
    default_sock: usize,
    /// `ds_dns_match_all`: keep every address of a lookup.
    match_all: bool,
}

impl LoadEnv for KamEnv {
    fn resolve_host(&mut self, host: &[u8], _scheme: Scheme, _proto: Proto, _port: u16) -> Option<IpAddr> {
        msg::resolve_host(host)
    }
    fn resolve_sip(&mut self, host: &[u8], _scheme: Scheme, proto: Proto, port: u16) -> Option<(IpAddr, u16, Proto)> {
        msg::sip_resolve(host, port, proto as u8).map(|(ip, p, pr)| (ip, p, proto_from(pr)))
    }
    fn match_all(&self) -> bool {
        self.match_all
    }
    fn resolve_host_all(&mut self, host: &[u8], _scheme: Scheme, _proto: Proto, _port: u16) -> Vec<IpAddr> {
        let mut out = crate::ds::select::AddrList::new();
        msg::resolve_host_into(host, &mut out);
        out.as_slice().to_vec()
    }
    fn resolve_sip_all(&mut self, host: &[u8], _scheme: Scheme, proto: Proto, port: u16) -> Option<(Vec<IpAddr>, u16, Proto)> {
        let mut out = crate::ds::select::AddrList::new();
        let (p, pr) = msg::sip_resolve_into(host, port, proto as u8, &mut out)?;
        Some((out.as_slice().to_vec(), p, proto_from(pr)))
    }
    fn socket_by_addr(&mut self, spec: &[u8]) -> usize {
        msg::socket_by_addr(spec).unwrap_or(0)
    }
    fn socket_by_name(&mut self, name: &[u8]) -> usize {
        msg::socket_by_name(name).unwrap_or(0)
    }
    fn default_socket(&self) -> usize {
        self.default_sock
    }
    fn allow_ipv6(&self) -> bool {
        // SAFETY: default_core_cfg is the core's static cfg defaults structure.
        unsafe { sys::default_core_cfg.dns_try_ipv6 != 0 }
    }
}

fn now() -> (u64, u64) {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_micros() as u64)
}

/// Whether a list rebuild now would come sooner than `reload_delta` after the last one.
pub fn too_soon() -> bool {
    let (Some(ctl), cfg) = (ctl(), cfg()) else { return false };
    cfg.reload_delta > 0 && (now().0 as i64) < ctl.last_rebuild.load(Ordering::Relaxed).saturating_add(cfg.reload_delta)
}

/// Outcome of a rebuild request. `Failed` and `Partial` were logged already (with the
/// severity and the facts of the C module's message); `NotReady` and `TooSoon` are logged
/// by the caller (the C module names the RPC or cfg function in these messages).
#[derive(Debug)]
pub enum ReloadError {
    NotReady,
    TooSoon,
    Failed(String),
    /// Loaded, but some DB rows were skipped (reported as a failure, like the C module).
    Partial(String),
}

/// Logs `m` at ERROR level as the C module's function `func` does, and returns it as a
/// failure.
fn failed(func: &'static str, m: String) -> ReloadError {
    ds_err!(fn func; "{m}");
    ReloadError::Failed(m)
}

/// Line `n` (1-based) of `text`, without its line end, for messages.
fn line_text(text: &[u8], n: usize) -> String {
    let l = text.split(|&c| c == b'\n').nth(n.saturating_sub(1)).unwrap_or_default();
    String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned()
}

/// Reads and parses the list file, builds a snapshot and publishes it. `rate_limit` applies
/// `reload_delta`. On any error the running list stays.
pub fn load_and_install(rate_limit: bool) -> Result<usize, ReloadError> {
    let ctl = ctl().ok_or(ReloadError::NotReady)?;
    let lock = WLOCK.get().ok_or(ReloadError::NotReady)?;
    let cfg = cfg();
    let _g = lock.lock();
    let t = now().0 as i64;
    if rate_limit {
        if too_soon() {
            return Err(ReloadError::TooSoon);
        }
        // the startup load does not count (as in the C module)
        ctl.last_rebuild.store(t, Ordering::Relaxed);
    }

    let db = !cfg.db_url.is_empty();
    // the C module's function that logs the skipped entries
    let load_fn = if db { "ds_load_db" } else { "ds_load_list" };
    // the entries borrow the file's text (or the DB rows): no allocation per entry
    let text;
    let rows;
    let (file, mut entries) = if !db {
        let file = cfg.list_file.clone();
        text = std::fs::read(&file).map_err(|e| failed(load_fn, format!("can't open list file [{file}]: {e}")))?;
        let entries = crate::ds::listfile::parse_list_ref(&text, &file)
            .map_err(|e| failed(load_fn, format!("bad line [{}] ({e})", line_text(&text, e.line))))?;
        (file, entries)
    } else {
        rows = db_entries()?;
        (format!("table {}", String::from_utf8_lossy(&cfg.table_name)), rows.iter().map(|e| e.view()).collect())
    };
    let mut skipped = 0usize;
    let mut env = KamEnv { default_sock: DEFAULT_SOCK.get().copied().unwrap_or(0), match_all: cfg.dns_match_all };
    for e in entries.iter_mut() {
        no_probing_in_place(&mut e.flags, cfg);
    }
    // the sets the new list repeats unchanged are shared with the running list (issue 14)
    // SAFETY: writers are serialised by WLOCK (held): the current list stays allocated.
    let old = unsafe { Snap::from_ptr(ctl.current_ptr()) };
    let plan = if cfg.keep_state && !edit_rebuilds_all() {
        let rules = crate::ds::reuse::Rules { attrs_none: cfg.attrs_none, dns_mode: cfg.dns_mode, allow_ipv6: env.allow_ipv6() };
        crate::ds::reuse::plan(&entries, old, &rules)
    } else {
        crate::ds::reuse::Plan::none(entries.len())
    };
    // nothing shared (start-up, `ds_reload_keep_state` 0, another list): set by set
    if plan.sets.is_empty() {
        if let Some(n) = install_streamed(ctl, &entries, &file, &mut env, old)? {
            ds_info!("loaded {} destinations from {}", n, file);
            return Ok(n);
        }
    }
    let mut dests = Vec::with_capacity(entries.len() - plan.ndests);
    let mut pos = Vec::with_capacity(entries.len() - plan.ndests);
    for (i, e) in entries.iter().enumerate() {
        if plan.shared_entry.get(i).copied().unwrap_or(false) {
            continue;
        }
        match crate::ds::dest::prepare_entry(e, cfg.attrs_none, cfg.dns_mode, &mut env) {
            Ok((d, notes)) => {
                for n in &notes {
                    log::note(n, &format!("{}:{}: ", file, e.line));
                }
                dests.push(d);
                pos.push(i as u32);
            }
            Err(err) => {
                // the fault (ERROR in pack_dest), then the entry skipped (WARNING), as in C
                let m = format!("{}:{}:{}: {}", file, err.line, err.col, err.msg);
                crate::ds_log!(log::level(err.level), fn err.func; "{m}");
                ds_warn!(fn load_fn; "unable to add destination {} to set {} -- skipping", String::from_utf8_lossy(e.uri), e.setid);
                if cfg.load_mode == 1 {
                    return Err(ReloadError::Failed(m));
                }
                skipped += 1;
            }
        }
    }
    let n = dests.len() + plan.ndests;
    // the sets in iteration order as positions in `dests` (no destination moved)
    let (order, spans) = crate::ds::order::order_sets(&dests, &pos, &plan.firsts());
    let srcs: Vec<snapshot::SetSrc<'_>> =
        spans.iter().map(|sp| snapshot::SetSrc::indexed(sp.id, &dests, order.get(sp.start..sp.end).unwrap_or_default())).collect();
    install_sharing(ctl, &srcs, Rebuild::Reload, old, &plan)?;
    ds_info!("loaded {} destinations from {}", n, file);
    if skipped > 0 && db {
        let func = if rate_limit { "ds_reload_db" } else { "ds_init_db" };
        ds_warn!(fn func; "failure while loading one or more dispatcher entries ({skipped} skipped)");
        // as the C module: a DB reload that skipped rows reports failure, the new list is
        // active (Kamailio 6.1: skipped rows no longer fail the reload)
        if !crate::ds::compat::ge(6, 1, 0) {
            return Err(ReloadError::Partial(format!("{skipped} rows skipped; the new list is active")));
        }
    }
    Ok(n)
}

/// Builds and installs a list that shares nothing with the running one set by set (see
/// `snapshot::build_streamed`): the set order comes from the entries (a destination's set id
/// and priority are its entry's), and each set's entries are prepared right before its block
/// is built, in a buffer reused from set to set, instead of the whole list first. The notes
/// of the entries are logged afterwards in file order, as the usual path logs them. An entry
/// that cannot be prepared (skipped or failing the load, and changing the set order) abandons
/// this path before anything is logged or installed: `Ok(None)`, and the caller loads the
/// list the usual way (the entries before it are prepared twice, once).
fn install_streamed(
    ctl: &Control,
    entries: &[crate::ds::listfile::EntryRef<'_>],
    file: &str,
    env: &mut KamEnv,
    old: Option<Snap<'_>>,
) -> Result<Option<usize>, ReloadError> {
    let cfg = cfg();
    let (order, spans) = crate::ds::order::order_sets_keyed(entries.iter().map(|e| (e.setid, e.priority)), &[], &[]);
    let sizes: Vec<(i32, usize)> = spans.iter().map(|sp| (sp.id, sp.end - sp.start)).collect();
    let mut notes: Vec<(u32, crate::ds::logfmt::Note)> = Vec::new();
    // the previous set's destinations: their buffers are reused (no allocation per entry)
    let mut spare: Vec<crate::ds::dest::Dest> = Vec::new();
    let mut fill = |i: usize, buf: &mut Vec<crate::ds::dest::Dest>| {
        spare.append(buf);
        let Some(sp) = spans.get(i) else { return false };
        for &k in order.get(sp.start..sp.end).unwrap_or_default() {
            let Some(e) = entries.get(k as usize) else { return false };
            match crate::ds::dest::prepare_entry_reusing(e, cfg.attrs_none, cfg.dns_mode, env, spare.pop()) {
                Ok((d, ns)) => {
                    notes.extend(ns.into_iter().map(|n| (k, n)));
                    buf.push(d);
                }
                Err(_) => return false,
            }
        }
        true
    };
    let plan = crate::ds::reuse::Plan::none(0);
    let done = install_built(ctl, &[], Rebuild::Reload, old, &plan, &mut |gen, now, carry, alloc, free, rng| {
        snapshot::build_streamed(&sizes, &mut fill, gen, now, carry, alloc, free, rng)
    });
    if matches!(done, Ok(false)) {
        return Ok(None);
    }
    // the notes, in file order as the usual path logs them before it builds (when the build
    // failed, e.g. out of shm, those of the entries prepared until then)
    notes.sort_by_key(|n| n.0);
    for (k, n) in &notes {
        if let Some(e) = entries.get(*k as usize) {
            log::note(n, &format!("{}:{}: ", file, e.line));
        }
    }
    done?;
    Ok(Some(entries.len()))
}

/// Reads the destinations from the DB (`ds_load_db`): version check, columns by version,
/// `ds_db_extra_attrs` appended to attrs.
fn db_entries() -> Result<Vec<crate::ds::listfile::RawEntry>, ReloadError> {
    let cfg = cfg();
    let func = if DB_VERSION.get().is_some() { "ds_reload_db" } else { "ds_init_db" };
    let mut db = crate::kam::db::Db::connect(&cfg.db_url)
        .map_err(|e| failed(func, format!("unable to connect to the database: {e}")))?;
    // the table version is checked once, at startup; reloads reuse it (as the C module does)
    let ver = match DB_VERSION.get() {
        Some(v) => *v,
        None => {
            let v = db.table_version(&cfg.table_name);
            if !(1..=4).contains(&v) {
                return Err(failed(
                    "ds_init_db",
                    format!(
                        "invalid table version (found {v} , required 1, 2, 3 or 4) for table {}",
                        String::from_utf8_lossy(&cfg.table_name)
                    ),
                ));
            }
            let _ = DB_VERSION.set(v);
            v
        }
    };
    // columns by version, ds_db_extra_attrs, and row conversion: the pure core's `ds::dbrow`
    // (what the DB-row fuzz target exercises)
    let layout = crate::ds::dbrow::DbLayout::new(ver, &cfg.db_extra_attrs).map_err(|e| failed(e.func, e.msg))?;
    let cols = layout.columns(&cfg.cols);
    let rows = db.select_all(&cfg.table_name, &cols).map_err(|e| failed("ds_load_db", e))?;
    if rows.is_empty() {
        ds_warn!(fn "ds_load_db"; "no dispatching data in the db -- empty destination set");
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        out.push(layout.row_to_entry(r, i).map_err(|e| failed(e.func, e.msg))?);
    }
    Ok(out)
}

/// Why a new list is built: decides what runtime state survives with `ds_reload_keep_state` 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rebuild {
    /// file/DB reload: with `ds_reload_keep_state` 0 the state is reset (as 5.6.3 reloads)
    Reload,
    /// `dispatcher.add` / `dispatcher.remove`: 5.6.3 copies the state flags and the call
    /// load of every destination that stays (only the failure counter starts again)
    Edit,
    /// periodic DNS refresh: 5.6.3 updates the addresses in place, nothing is reset
    Dns,
}

/// Builds a snapshot of `sets` (carrying runtime state of destinations that stay) and
/// publishes it. Caller holds the writer lock.
fn install(ctl: &Control, sets: Vec<crate::ds::order::DestSet>, why: Rebuild) -> Result<(), ReloadError> {
    // SAFETY: writers are serialised by WLOCK, so the current block cannot be freed meanwhile.
    let old = unsafe { Snap::from_ptr(ctl.current_ptr()) };
    let srcs: Vec<snapshot::SetSrc<'_>> = sets.iter().map(snapshot::SetSrc::of).collect();
    install_sharing(ctl, &srcs, why, old, &crate::ds::reuse::Plan::none(0))
}

/// [`install`] where the sets of `plan` (empty placeholders in `sets`) share their blocks
/// with `old`, the running list. Caller holds the writer lock.
fn install_sharing(
    ctl: &Control,
    sets: &[snapshot::SetSrc<'_>],
    why: Rebuild,
    old: Option<Snap<'_>>,
    plan: &crate::ds::reuse::Plan<'_>,
) -> Result<(), ReloadError> {
    let is_shared = |id: i32, len: usize| if len == 0 { plan.block(id) } else { None };
    install_built(ctl, sets, why, old, plan, &mut |gen, now, carry, alloc, free, rng| {
        snapshot::build_sharing(sets, old, &mut |id, len| is_shared(id, len), gen, now, carry, alloc, free, rng).map(Some)
    })
    .map(|_| ())
}

/// The build step of [`install_built`]: (generation, DNS time, carry, alloc, free, rng) to a
/// list, or `None` when the builder abandoned it (see `snapshot::build_streamed`).
type Builder<'b> = dyn FnMut(
        u64,
        (u64, u64),
        &mut snapshot::CarryFn<'_>,
        &mut dyn FnMut(usize) -> *mut u8,
        &mut dyn FnMut(*mut u8),
        &mut dyn FnMut() -> u32,
    ) -> Result<Option<*mut snapshot::Header>, snapshot::BuildError>
    + 'b;

/// [`install_sharing`] with the list built by `build`; `sets` only matters when `plan` shares
/// sets. Ok(false): `build` abandoned the list, nothing changed.
fn install_built(
    ctl: &Control,
    sets: &[snapshot::SetSrc<'_>],
    why: Rebuild,
    old: Option<Snap<'_>>,
    plan: &crate::ds::reuse::Plan<'_>,
    build: &mut Builder<'_>,
) -> Result<bool, ReloadError> {
    let cfg = cfg();
    let gen = ctl.generation.load(Ordering::Relaxed) + 1;
    let old_index = snapshot::CarryIndex::new(old);
    let mut rng = build_rng();
    let is_shared = |id: i32, len: usize| if len == 0 { plan.block(id) } else { None };
    let built = build(
        gen,
        // DNSTIME is shown only with the periodic DNS refresh (ds_dns_mode bit 4), as in C
        if cfg.dns_mode & 4 != 0 { now() } else { (0, 0) },
        &mut |id, uri, fl| carry_state(&old_index, why, id, uri, fl),
        &mut |size| shm_alloc(size),
        // SAFETY: set blocks of a failed build, from `shm_alloc` just above, never published.
        &mut |b| unsafe { shm_free(b) },
        &mut rng,
    )
    .map_err(|e| failed("install", format!("cannot build the new list: {e}")))?;
    let Some(block) = built else { return Ok(false) };
    // SAFETY: the block was just built from the current list, which the writer lock keeps.
    let new = unsafe { Snap::from_ptr(block) };
    // the records built here take over from the running ones (a shared set is the same)
    let carry = |undo: bool| {
        // nothing to carry from (start-up)
        let Some(n) = new.filter(|_| old.is_some()) else { return };
        if plan.sets.is_empty() {
            // SAFETY: as above.
            unsafe {
                if undo {
                    snapshot::unlink_successors(n);
                } else {
                    snapshot::link_successors(n);
                }
            }
            if undo {
                crate::module::track::uncarry_counters(&old_index, n);
            } else {
                crate::module::track::carry_counters(&old_index, n);
            }
            return;
        }
        for (v, s) in n.sets().zip(sets) {
            if is_shared(s.id, s.len()).is_some() {
                continue;
            }
            // SAFETY: the records carried from belong to `old`, kept by the writer lock.
            unsafe { snapshot::link_set_successors(&v, undo) };
            crate::module::track::carry_set_counters(&old_index, &v, undo);
        }
    };
    // the old list then frees only the set blocks the new one did not take
    let shares = match (old, new) {
        (Some(o), Some(n)) if !plan.sets.is_empty() => Some((o, n)),
        _ => None,
    };
    if let Some((o, n)) = shares {
        // SAFETY: both live (writer lock); `n` was built by `build_sharing` over `o`.
        unsafe { snapshot::hand_over_reload(o, n, false) };
    }
    carry(false);
    if !ctl.publish(block, &mut free_snapshot) {
        carry(true);
        if let Some((o, n)) = shares {
            // SAFETY: as above; `n` was not published.
            unsafe { snapshot::hand_over_reload(o, n, true) };
        }
        free_snapshot(block);
        if let Some((o, _)) = shares {
            snapshot::unmark_reload(o, gen);
        }
        return Err(failed("install", "too many old lists still in use; try again".into()));
    }
    Ok(true)
}

/// The weight tables' shuffles (100 draws per set with weights): a xorshift seeded from
/// Kamailio's random() once per build instead of a locked random() call per draw.
fn build_rng() -> impl FnMut() -> u32 {
    let mut seed = ((crate::kam::kam_rand() as u64) << 32 | crate::kam::kam_rand() as u64) | 1;
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 32) as u32
    }
}

/// The runtime state a destination of a new list takes from the running one.
fn carry_state(old_index: &snapshot::CarryIndex<'_>, why: Rebuild, id: i32, uri: &[u8], fl: i32) -> Option<snapshot::CarriedState> {
    let cfg = cfg();
    // dispatcher.update: the updated destination keeps its state whatever its new flags
    let fl_carry = UPDATE_KEEP.with(|k| k.borrow().as_ref().filter(|(s, u, _)| *s == id && u.eq_ignore_ascii_case(uri)).map(|k| k.2)).unwrap_or(fl);
    let mut c = old_index.carry(id, uri, fl_carry, cfg.retain_latency && cfg.latency_stats)?;
    if !cfg.keep_state {
        match why {
            Rebuild::Reload => {
                c.flags = fl;
                c.fail_cnt = 0;
                c.dload = 0;
                // reset, not carried: nothing to forward either
                c.src = std::ptr::null();
            }
            Rebuild::Edit => c.fail_cnt = 0,
            Rebuild::Dns => {}
        }
    }
    Some(c)
}

/// Whether an edit must rebuild every set (what it resets on every destination cannot be
/// reset in place): latency statistics not retained across rebuilds, or the DNS time shown
/// (`ds_dns_mode` bit 4) that every rebuild sets.
fn edit_rebuilds_all() -> bool {
    let cfg = cfg();
    (cfg.latency_stats && !cfg.retain_latency) || cfg.dns_mode & 4 != 0
}

/// Publishes an edit of one set (`dispatcher.add` / `remove` / `update`): `order` is the new
/// iteration order (set ids), `touched` the edited set's new destinations (None: nothing
/// edited; an empty set is removed). Only that set is built; every other set is shared with
/// the running list (its cursors restarted and, unless `ds_reload_keep_state`, its failure
/// counters reset, as the full rebuild of the C module does). Caller holds the writer lock.
fn install_edit(ctl: &Control, cur: Option<Snap<'_>>, so: &crate::ds::order::SetOrder, touched: Option<Touched<'_>>) -> Result<(), ReloadError> {
    let cfg = cfg();
    let order = so.ids.as_slice();
    let Some(cur) = cur.filter(|_| !edit_rebuilds_all()) else {
        // the full rebuild of every set
        let mut sets = snapshot_sets(cur, false);
        if let Some(t) = touched.map(Touched::into_set) {
            match sets.iter_mut().find(|s| s.id == t.id) {
                Some(s) => *s = t,
                None => sets.push(t),
            }
        }
        sets.retain(|s| !s.dests.is_empty());
        // `order` is the iteration order already (not an insertion order)
        let rank: std::collections::HashMap<i32, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        sets.sort_by_key(|s| rank.get(&s.id).copied().unwrap_or(usize::MAX));
        return install(ctl, sets, Rebuild::Edit);
    };
    let gen = ctl.generation.load(Ordering::Relaxed) + 1;
    let tid = touched.as_ref().map(|t| t.id);
    let mut blk = None;
    let idx = snapshot::CarryIndex::for_set(Some(cur), tid.unwrap_or(0));
    // where every set of the new order comes from in the running list (one walk of both id
    // indexes), and where the edited set starts in the new list
    let builds = touched.as_ref().is_some_and(|t| !t.srcs.is_empty());
    let plan = snapshot::plan_edit(cur, order, Some(&so.by_id), tid, builds).map_err(|e| failed("install", format!("cannot build the new list: {e}")))?;
    if let Some(t) = touched.as_ref().filter(|t| !t.srcs.is_empty()) {
        // new internal ids from the set's position in the new list
        let first_di = plan.first_di();
        let mut rng = build_rng();
        // the records that stay are copied from the set's block
        let old = cur.set_pos(t.id).and_then(|i| cur.blk(i));
        let b = setedit::build_edited(
            t.id,
            old,
            &t.srcs,
            gen,
            first_di,
            (0, 0),
            &mut |id, uri, fl| carry_state(&idx, Rebuild::Edit, id, uri, fl),
            &mut |size| shm_alloc(size),
            &mut rng,
            cfg.attrs_none,
        )
        .map_err(|e| failed("install", format!("cannot build the new list: {e}")))?;
        blk = Some(b);
    }
    // SAFETY: the writer lock keeps `cur`; `blk` is fresh.
    // the shared sets' cursors (and failure counters) restart when they are first read
    // through the new list
    let reset = Some(!cfg.keep_state);
    let block = match unsafe { snapshot::derive_planned(cur, &plan, order, Some(&so.by_id), blk, gen, reset, &mut |size| shm_alloc(size)) } {
        Ok(b) => b,
        Err(e) => {
            if let Some(b) = blk {
                // SAFETY: built above by `shm_alloc`, never published.
                unsafe { shm_free(b as *mut u8) };
            }
            return Err(failed("install", format!("cannot build the new list: {e}")));
        }
    };
    // SAFETY: as above.
    let new = unsafe { Snap::from_ptr(block) };
    let new_set = new.zip(tid).and_then(|(n, id)| n.set(id)).filter(|_| blk.is_some());
    let carry = |undo: bool| {
        if let Some(v) = new_set {
            // SAFETY: the records carried from belong to `cur`, kept by the writer lock.
            unsafe { snapshot::link_set_successors(&v, undo) };
            crate::module::track::carry_set_counters(&idx, &v, undo);
        }
    };
    carry(false);
    let hand = |undo: bool| {
        if let Some(n) = new {
            // SAFETY: `new` was just derived from `cur`, both live (writer lock).
            unsafe { snapshot::hand_over(cur, n, tid, undo) }
        }
    };
    hand(false);
    if !ctl.publish(block, &mut free_snapshot) {
        hand(true);
        carry(true);
        free_snapshot(block);
        return Err(failed("install", "too many old lists still in use; try again".into()));
    }
    Ok(())
}

/// A live edit of the list (`dispatcher.add` / `dispatcher.remove`).
pub enum Edit {
    Add { setid: i32, uri: Vec<u8>, flags: i32, priority: i32, attrs: Vec<u8> },
    Remove { setid: i32, uri: Vec<u8> },
}

/// The destinations of a snapshot as load entries (re-parsed attrs, resolved address kept).
/// `log_notes`: log the attribute messages again (`dispatcher.add`/`remove` re-add every
/// destination in the C module, which logs them again).
fn snapshot_sets(snap: Option<Snap<'_>>, log_notes: bool) -> Vec<crate::ds::order::DestSet> {
    let Some(snap) = snap else { return Vec::new() };
    snap.sets().map(|set| crate::ds::order::DestSet { id: set.rec.id, dests: set_dests(set, log_notes) }).collect()
}

/// The destinations of one set as load entries (see `snapshot_sets`).
fn set_dests(set: crate::ds::snapshot::SetView<'_>, log_notes: bool) -> Vec<crate::ds::dest::Dest> {
    let cfg = cfg();
    let mut note = |n: &crate::ds::logfmt::Note| {
        if log_notes {
            log::note(n, "")
        }
    };
    set.dests.iter().map(|d| setedit::rec_dest(set.rec.id, d, cfg.attrs_none, &mut note)).collect()
}

fn proto_from(v: u8) -> Proto {
    setedit::proto_from(v)
}

/// The edited set of `dispatcher.add` / `remove` / `update` for `install_edit`: its new
/// destinations as records of its current block (copied) and entries.
struct Touched<'a> {
    id: i32,
    srcs: Vec<setedit::Src<'a>>,
}

impl Touched<'_> {
    /// As entries (a full rebuild).
    fn into_set(self) -> crate::ds::order::DestSet {
        let attrs_none = cfg().attrs_none;
        let id = self.id;
        let dests = self
            .srcs
            .iter()
            .map(|s| match s {
                setedit::Src::Old(d, _) => setedit::rec_dest(id, d, attrs_none, &mut |_| {}),
                setedit::Src::New(d) => (*d).clone(),
            })
            .collect();
        crate::ds::order::DestSet { id, dests }
    }
}

/// Applies a live edit: rebuilds the list from the current one, keeping the order of the other
/// destinations and their runtime state. Rate-limited like a reload.
pub fn edit_list(e: Edit) -> Result<(), ReloadError> {
    let ctl = ctl().ok_or(ReloadError::NotReady)?;
    let lock = WLOCK.get().ok_or(ReloadError::NotReady)?;
    let cfg = cfg();
    let _g = lock.lock();
    let t = now().0 as i64;
    if too_soon() {
        return Err(ReloadError::TooSoon);
    }
    ctl.last_rebuild.store(t, Ordering::Relaxed);
    // SAFETY: writers are serialised by WLOCK, so the current block stays alive.
    let cur = unsafe { Snap::from_ptr(ctl.current_ptr()) };
    let mut env = KamEnv { default_sock: DEFAULT_SOCK.get().copied().unwrap_or(0), match_all: cfg.dns_match_all };
    // the running list's set order (the new order is rebuilt from it without a copy)
    let cur_order: &[i32] = cur.map(|c| c.ids()).unwrap_or_default();
    match e {
        Edit::Add { setid, uri, flags, priority, attrs } => {
            // as the C module: the destinations that stay first, then the new one (the C
            // module adds every destination again and logs their attrs notes again)
            log_edit_notes(cur);
            let raw = crate::ds::listfile::RawEntry { setid, uri, flags, priority, attrs, line: 0, col: 0 };
            let raw = no_probing_without_tm(raw, cfg);
            match prepare_dest(&raw, cfg.attrs_none, cfg.dns_mode, &mut env) {
                Ok((d, notes)) => {
                    notes.iter().for_each(|n| log::note(n, ""));
                    // first among equal priorities (as a later file line would be); the
                    // order of the others does not change
                    let old = cur.and_then(|c| c.set(setid));
                    let dests = old.map_or(&[][..], |v| v.dests);
                    let pos = dests.iter().position(|x| x.priority <= d.priority).unwrap_or(dests.len());
                    let old_src = |i: usize| setedit::Src::Old(&dests[i], i);
                    let mut srcs = Vec::with_capacity(dests.len() + 1);
                    srcs.extend((0..pos).map(old_src));
                    srcs.push(setedit::Src::New(&d));
                    srcs.extend((pos..dests.len()).map(old_src));
                    let post = crate::ds::order::avl_order_edit(cur_order, Some(setid), None);
                    install_edit(ctl, cur, &post, Some(Touched { id: setid, srcs }))
                }
                Err(err) => {
                    // the fault (ERROR in pack_dest), then the destination not added, as in C
                    crate::ds_log!(log::level(err.level), fn err.func; "{}", err.msg);
                    ds_warn!(fn "ds_add_dst"; "unable to add destination {} to set {}", String::from_utf8_lossy(&raw.uri), setid);
                    if cfg.load_mode == 1 {
                        return Err(ReloadError::Failed(err.msg));
                    }
                    // the list is rebuilt anyway (as in C, this re-balances the set tree)
                    let post = crate::ds::order::avl_order_edit(cur_order, None, None);
                    install_edit(ctl, cur, &post, None)
                }
            }
        }
        Edit::Remove { setid, uri } => {
            let raw = crate::ds::listfile::RawEntry { setid, uri, flags: 0, priority: 0, attrs: Vec::new(), line: 0, col: 0 };
            let (d, _) = prepare_dest(&raw, cfg.attrs_none, cfg.dns_mode, &mut env).map_err(|err| {
                crate::ds_log!(log::level(err.level), fn err.func; "{}", err.msg);
                failed("ds_remove_dst", format!("failed to pack address: {setid} {}", String::from_utf8_lossy(&raw.uri)))
            })?;
            log_edit_notes(cur);
            let old = cur.and_then(|c| c.set(setid));
            let dests = old.map_or(&[][..], |v| v.dests);
            let srcs: Vec<_> = (0..dests.len()).filter(|&i| dests[i].uri.bytes() != d.uri.as_slice()).map(|i| setedit::Src::Old(&dests[i], i)).collect();
            let post = crate::ds::order::avl_order_edit(cur_order, None, srcs.is_empty().then_some(setid));
            install_edit(ctl, cur, &post, Some(Touched { id: setid, srcs }))
        }
    }
}

/// Logs again, in iteration order, the attrs notes of every destination of the running list
/// whose set may have some (the C module adds them all again on an edit of a set); only
/// the sets that may have notes are parsed again.
fn log_edit_notes(cur: Option<Snap<'_>>) {
    let Some(cur) = cur else { return };
    if cur.header().nnotes == 0 {
        return;
    }
    let cfg = cfg();
    for (i, v) in cur.sets().enumerate() {
        if cur.blk(i).is_some_and(|b| b.maybe_notes()) {
            for d in v.dests {
                if let Ok((_, notes)) = crate::ds::attrs::parse_attrs(d.attrs_body.bytes(), cfg.attrs_none) {
                    notes.iter().for_each(|n| log::note(n, ""));
                }
            }
        }
    }
}

/// DNS refresh (`ds_dns_mode` bit 4): re-resolves every destination host and publishes a new
/// snapshot when an address changed (state carried). Runs from the secondary timer.
pub fn dns_refresh() {
    let (Some(ctl), Some(lock)) = (ctl(), WLOCK.get()) else { return };
    let cfg = cfg();
    let _g = lock.lock();
    // SAFETY: writers are serialised by WLOCK, so the current block stays alive.
    let cur = unsafe { Snap::from_ptr(ctl.current_ptr()) };
    let mut sets = snapshot_sets(cur, false);
    let mut changed = false;
    for s in sets.iter_mut() {
        for d in s.dests.iter_mut() {
            if d.flags & crate::ds::snapshot::DS_NODNS != 0 || crate::ds::dest::ip_literal(&d.host).is_some() {
                continue;
            }
            if cfg.dns_match_all {
                // ds_dns_match_all (Kamailio master): every address of the answer (up to 32)
                let mut out = crate::ds::select::AddrList::new();
                if !msg::resolve_host_into(&d.host, &mut out) {
                    crate::ds_err!(fn "ds_dns_update_set"; "could not resolve {}", String::from_utf8_lossy(&d.host));
                    continue;
                }
                let all = out.as_slice();
                if all.first().copied() != d.ip || all.get(1..).unwrap_or(&[]) != d.more_ips.as_slice() {
                    d.ip = all.first().copied();
                    d.more_ips = all.get(1..).unwrap_or(&[]).to_vec();
                    changed = true;
                }
                continue;
            }
            match msg::resolve_host(&d.host) {
                Some(ip) if Some(ip) != d.ip || !d.more_ips.is_empty() => {
                    d.ip = Some(ip);
                    d.more_ips.clear();
                    changed = true;
                }
                Some(_) => {}
                None => crate::ds_err!(fn "ds_dns_update_set"; "could not resolve {}", String::from_utf8_lossy(&d.host)),
            }
        }
    }
    if changed {
        // a failure is logged by install()
        let _ = install(ctl, sets, Rebuild::Dns);
    }
}

/// Frees what can be freed at shutdown (main process, after children exited).
/// mod_destroy (main process, after every child is gone): frees every list, the control
/// block and the writer lock, so that nothing the module allocated in shm outlives it.
pub fn destroy() {
    let p = CTL.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: set once in mod_init; no other process runs any more, so nothing reads it.
    if let Some(c) = unsafe { p.as_ref() } {
        c.drain(&mut free_snapshot);
        // SAFETY: the control block came from shm_alloc in `init`; nothing refers to it now.
        unsafe { shm_free(p as *mut u8) };
    }
    if let Some(l) = WLOCK.get() {
        // SAFETY: shutdown, no user of the lock is left.
        unsafe { l.free() };
    }
}

/// `dspt-<time hex>-<pid hex>-`: the IUID prefix of this Kamailio instance (set in mod_init,
/// inherited by every child process, like the C module's sruid).
static IUID_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the IUID prefix (mod_init, main process).
pub fn init_iuid_prefix() {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let _ = IUID_PREFIX.set(format!("dspt-{:x}-{:x}-", t as u32, std::process::id()));
}

/// The `IUID` text of a destination of set `setid` (Kamailio 6.1).
pub fn iuid_text(iuid: u64, setid: i32) -> String {
    crate::ds::snapshot::iuid_text(IUID_PREFIX.get().map(|s| s.as_str()).unwrap_or("dspt-0-0-"), iuid, setid)
}

/// Kamailio 6.1: tm is bound only when `ds_ping_interval` > 0; without it the probing flag
/// (8) is removed from every destination at load, with a warning.
fn no_probing_without_tm(mut e: crate::ds::listfile::RawEntry, cfg: &crate::module::params::Config) -> crate::ds::listfile::RawEntry {
    no_probing_in_place(&mut e.flags, cfg);
    e
}

/// [`no_probing_without_tm`] on an entry's flags in place.
fn no_probing_in_place(flags: &mut i32, cfg: &crate::module::params::Config) {
    if *flags & crate::ds::snapshot::DS_PROBING != 0 && cfg.ping_interval <= 0 && crate::ds::compat::ge(6, 1, 0) {
        ds_warn!("tm module not loaded, disabling probing");
        *flags &= !crate::ds::snapshot::DS_PROBING;
    }
}

/// A list source parsed and resolved without installing it (`dispatcher.validate` /
/// `dispatcher.diff`): its name, the sets it would load, and every error as
/// `file:line:col: reason`.
pub struct Checked {
    pub source: String,
    pub sets: Vec<crate::ds::order::DestSet>,
    pub errors: Vec<String>,
}

/// Reads `path` (a list file), or the configured source (list file or DB table), and
/// resolves every entry as a reload would; nothing of the running list is touched. Err:
/// the source cannot be read at all.
pub fn check_source(path: Option<&str>) -> Result<Checked, String> {
    let cfg = cfg();
    let (source, entries, mut errors) = match path {
        None if !cfg.db_url.is_empty() => {
            let e = db_entries().map_err(|e| format!("{e:?}"))?;
            (format!("table {}", String::from_utf8_lossy(&cfg.table_name)), e, Vec::new())
        }
        _ => {
            let file = path.map(str::to_string).unwrap_or_else(|| cfg.list_file.clone());
            let text = std::fs::read(&file).map_err(|e| format!("can't open list file [{file}]: {e}"))?;
            let (errs, entries) =
                crate::ds::listdiff::all_parse_errors(&text, |t| parse_list(t, &file).map_err(|e| (e.line, e.to_string())));
            (file, entries.unwrap_or_default(), errs)
        }
    };
    let mut env = KamEnv { default_sock: DEFAULT_SOCK.get().copied().unwrap_or(0), match_all: cfg.dns_match_all };
    let mut dests = Vec::with_capacity(entries.len());
    for e in &entries {
        let e = &no_probing_without_tm(e.clone(), cfg);
        match prepare_dest(e, cfg.attrs_none, cfg.dns_mode, &mut env) {
            Ok((d, _notes)) => dests.push(d),
            Err(err) => errors.push(format!("{}:{}:{}: {}", source, err.line, err.col, err.msg)),
        }
    }
    Ok(Checked { source, sets: build_sets(dests), errors })
}

thread_local! {
    /// (set, URI, configured flags of the running record) of the destination
    /// `dispatcher.update` is rebuilding the list for.
    static UPDATE_KEEP: std::cell::RefCell<Option<(i32, Vec<u8>, i32)>> = const { std::cell::RefCell::new(None) };
}

/// `dispatcher.update`: sets the configured flags, priority and attrs of destination `uri` of
/// set `setid`, keeping its runtime state, counters and internal id. Rate-limited like a
/// reload (`reload_delta`); any error changes nothing (the rate-limit clock included).
pub fn update_dest(setid: i32, uri: &[u8], flags: i32, priority: i32, attrs: &[u8]) -> Result<(), ReloadError> {
    let ctl = ctl().ok_or(ReloadError::NotReady)?;
    let lock = WLOCK.get().ok_or(ReloadError::NotReady)?;
    let cfg = cfg();
    let _g = lock.lock();
    if too_soon() {
        return Err(ReloadError::TooSoon);
    }
    let bad = |m: String| {
        ds_err!(fn "dispatcher_rpc_update"; "{m}");
        ReloadError::Failed(m)
    };
    if !(0..=63).contains(&flags) {
        return Err(bad(format!("invalid flags {flags} (valid: 0..63)")));
    }
    // SAFETY: writers are serialised by WLOCK, so the current block stays alive.
    let cur = unsafe { Snap::from_ptr(ctl.current_ptr()) };
    let set = cur.and_then(|s| s.set(setid)).ok_or_else(|| bad(format!("destination set [{setid}] not found")))?;
    let old = set
        .dests
        .iter()
        .find(|d| d.uri.bytes().eq_ignore_ascii_case(uri))
        .ok_or_else(|| bad(format!("destination [{}] not found in set [{setid}]", String::from_utf8_lossy(uri))))?;
    let stored_uri = old.uri.bytes().to_vec();
    let old_flags = old.cfg_flags;
    let raw = crate::ds::listfile::RawEntry { setid, uri: stored_uri.clone(), flags, priority, attrs: attrs.to_vec(), line: 0, col: 0 };
    let raw = no_probing_without_tm(raw, cfg);
    let mut env = KamEnv { default_sock: DEFAULT_SOCK.get().copied().unwrap_or(0), match_all: cfg.dns_match_all };
    let (d, _notes) = prepare_dest(&raw, cfg.attrs_none, cfg.dns_mode, &mut env).map_err(|e| bad(format!("invalid destination: {}", e.msg)))?;
    // the set's records copied, the updated destination written from its new entry
    let dests = set.dests;
    let mut srcs: Vec<setedit::Src<'_>> = dests.iter().enumerate().map(|(i, x)| setedit::Src::Old(x, i)).collect();
    if let Some(i) = dests.iter().position(|x| x.uri.bytes() == stored_uri.as_slice()) {
        if dests[i].priority == d.priority {
            srcs[i] = setedit::Src::New(&d);
        } else {
            // a new priority takes the place a reload would give it
            srcs.remove(i);
            let prio = |s: &setedit::Src<'_>| match s {
                setedit::Src::Old(x, _) => x.priority,
                setedit::Src::New(x) => x.priority,
            };
            let pos = srcs.iter().position(|x| prio(x) <= d.priority).unwrap_or(srcs.len());
            srcs.insert(pos, setedit::Src::New(&d));
        }
    }
    let post = crate::ds::order::avl_order_edit(cur.map(|c| c.ids()).unwrap_or_default(), None, None);
    UPDATE_KEEP.with(|k| *k.borrow_mut() = Some((setid, stored_uri, old_flags)));
    let r = install_edit(ctl, cur, &post, Some(Touched { id: setid, srcs }));
    UPDATE_KEEP.with(|k| *k.borrow_mut() = None);
    r?;
    ctl.last_rebuild.store(now().0 as i64, Ordering::Relaxed);
    Ok(())
}
