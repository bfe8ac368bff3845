//! Regression tests for the defects of issue 13:
//!
//! 1. the first keepalive round starts one interval after startup for every destination
//!    (pacing only from the second round on);
//! 2. a rebuild refused by `reload_delta` is logged (`ongoing reload`, ERROR);
//! 3. error paths log the C module's severity and facts;
//! 4. `ds_reload_keep_state` 0 keeps the runtime state on `dispatcher.add`/`remove` and
//!    resets it on `dispatcher.reload`, as 5.6.3 does.
//!
//! Module under test: `DS_TEST_MODULE=rust` (default) or `DS_TEST_MODULE=c` (every test
//! here also passes with Debian's C module, which is the reference behaviour).
//! Loopback only, random free ports; every process is stopped by the harness.

mod common;
#[path = "common/health_util.rs"]
mod health_util;

use common::*;
use health_util::*;

fn kam(k: &Kamailio, args: &[&str]) -> String {
    k.kamcmd(args).unwrap_or_else(|e| panic!("kamcmd {args:?}: {e}\n{}", k.log_hint()))
}

// ---------------------------------------------------------------------------------------
// 4. ds_reload_keep_state 0: state kept on add/remove, reset on reload
// ---------------------------------------------------------------------------------------

/// With `ds_reload_keep_state` 0 (the 5.6.3 behaviour; the C module has no such parameter
/// and always behaves so): a destination set inactive/trying by `dispatcher.set_state`
/// keeps that state over `dispatcher.add` and `dispatcher.remove` of another destination,
/// and `dispatcher.reload` resets it to the configured flags.
#[test]
fn keep_state_0_add_remove_keep_state_reload_resets() {
    let kind = ModuleKind::from_env();
    let dir = run_dir("defects-keep-state");
    let (a, b, c) = (
        format!("sip:127.0.0.1:{}", free_port()),
        format!("sip:127.0.0.1:{}", free_port()),
        format!("sip:127.0.0.1:{}", free_port()),
    );
    let list = format!("1 {a} 0 0\n1 {b} 0 0\n");
    let extra = match kind {
        ModuleKind::Rust => modparams(&[("ds_reload_keep_state", "0")]),
        ModuleKind::C => String::new(),
    };
    let k = Kamailio::start(&dir, "kam", kind, &KamOpts { extra_params: extra, ..KamOpts::with_list(&list) });
    assert_eq!(kam(&k, &["dispatcher.set_state", "ip", "1", &a]).trim(), "Ok. Dispatcher state updated.");
    assert_eq!(kam(&k, &["dispatcher.set_state", "t", "1", &b]).trim(), "Ok. Dispatcher state updated.");
    let before = flags_map(&k);
    assert_eq!((get(&before, &a), get(&before, &b)), ("IP", "TX"), "after set_state: {before:?}");

    kam(&k, &["dispatcher.add", "1", &c]);
    let m = flags_map(&k);
    assert_eq!(
        (get(&m, &a), get(&m, &b), get(&m, &c)),
        ("IP", "TX", "AX"),
        "dispatcher.add must keep the state of the other destinations: {m:?}\n{}",
        k.log_hint()
    );

    kam(&k, &["dispatcher.remove", "1", &c]);
    let m = flags_map(&k);
    assert_eq!(
        (get(&m, &a), get(&m, &b), m.contains_key(&c)),
        ("IP", "TX", false),
        "dispatcher.remove must keep the state of the other destinations: {m:?}\n{}",
        k.log_hint()
    );

    kam(&k, &["dispatcher.reload"]);
    let m = flags_map(&k);
    assert_eq!(
        (get(&m, &a), get(&m, &b)),
        ("AX", "AX"),
        "dispatcher.reload with ds_reload_keep_state 0 must reset the state: {m:?}\n{}",
        k.log_hint()
    );
}

fn get<'a>(m: &'a std::collections::BTreeMap<String, String>, uri: &str) -> &'a str {
    m.get(uri).map(String::as_str).unwrap_or("<missing>")
}
