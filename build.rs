//! Build script: derives Kamailio's compile defines from `kamailio -V`, checks them with a
//! C probe (version strings, struct sizes/offsets), builds the C shim and generates the
//! bindings. Without a Kamailio installation (or headers) it only sets `cfg(no_kamailio)`
//! so that the pure core can still be built and unit-tested.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Defines Makefile.defs always sets on linux/x86_64/gcc that `kamailio -V` does not show.
const HIDDEN_DEFINES: &[&str] = &[
    "WITH_XAVP", "MEM_JOIN_FREE", "USE_CORE_STATS", "STATISTICS", "MALLOC_STATS",
    "CC_GCC_LIKE_ASM", "HAVE_GETHOSTBYNAME2", "HAVE_UNION_SEMUN", "HAVE_SCHED_YIELD",
    "HAVE_MSG_NOSIGNAL", "HAVE_MSGHDR_MSG_CONTROL", "HAVE_ALLOCA_H", "HAVE_TIMEGM",
    "HAVE_SCHED_SETSCHEDULER", "HAVE_IP_MREQN", "HAVE_EPOLL", "HAVE_SIGIO_RT",
    "SIGINFO64_WORKARROUND", "HAVE_SELECT",
];

struct KamVersion {
    full_version: String, // "kamailio 5.6.3 (x86_64/linux)"
    flags: String,
    defines: Vec<String>,
    versionval: u32,
}

/// `-V` tokens that are not compile defines: from 6.1 `core/ver.c` includes the allocator
/// headers, which `#define` these when `DBG_SR_MEMORY` is set, so `-V` prints them while the
/// loader's `SER_COMPILE_FLAGS` (and the module's `module_flags`) do not contain them.
const MALLOC_DEBUG_TOKENS: &[&str] =
    &["DBG_QM_MALLOC", "DBG_F_MALLOC", "DBG_TLSF_MALLOC", "DBG_SF_MALLOC", "DBG_LL_MALLOC"];

fn strip_malloc_tokens(flags: &str) -> String {
    flags.split(", ").filter(|t| !MALLOC_DEBUG_TOKENS.contains(&t.trim())).collect::<Vec<_>>().join(", ")
}

fn parse_kamailio_v(out: &str) -> Result<KamVersion, String> {
    let mut full_version = None;
    let mut flags = None;
    let mut loops = None;
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("version: ") {
            let end = v.find(')').ok_or("no ')' in version line")?;
            full_version = Some(v[..=end].to_string());
        } else if let Some(f) = line.strip_prefix("flags: ") {
            flags = Some(f.trim_end().to_string());
        } else if line.contains("ADAPTIVE_WAIT_LOOPS") {
            loops = line.split_whitespace().skip_while(|t| *t != "ADAPTIVE_WAIT_LOOPS").nth(1)
                .map(|s| s.trim_end_matches(',').to_string());
        }
    }
    let full_version = full_version.ok_or("no version: line in kamailio -V")?;
    let flags = flags.ok_or("no flags: line in kamailio -V")?;
    // "kamailio 5.6.3 (x86_64/linux)"
    let mut it = full_version.split_whitespace();
    let name = it.next().ok_or("bad version")?.to_string();
    let ver = it.next().ok_or("bad version")?.to_string();
    let archos = it.next().ok_or("bad version")?.trim_matches(|c| c == '(' || c == ')').to_string();
    let (arch, os) = archos.split_once('/').ok_or("bad arch/os")?;
    let nums: Vec<u32> = ver.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect();
    let versionval = nums.first().copied().unwrap_or(0) * 1_000_000
        + nums.get(1).copied().unwrap_or(0) * 1000 + nums.get(2).copied().unwrap_or(0);
    let mut defines = vec![
        format!("NAME=\"{name}\""), format!("VERSION=\"{ver}\""), format!("ARCH=\"{arch}\""),
        format!("OS={os}_"), format!("OS_QUOTED=\"{os}\""), format!("__CPU_{arch}"),
        format!("__OS_{}", os.to_ascii_lowercase()), format!("VERSIONVAL={versionval}"), "MOD_NAME=\"dispatcher\"".into(),
    ];
    defines.extend(HIDDEN_DEFINES.iter().map(|s| s.to_string()));
    for tok in flags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match tok {
            "TLS_PTHREAD_MUTEX_SHARED" => defines.push("KSR_PTHREAD_MUTEX_SHARED".into()),
            t if t.starts_with("FAST_LOCK") => {
                defines.push("FAST_LOCK".into());
                for part in t.split('-').skip(1) {
                    match part {
                        "ADAPTIVE_WAIT" => {
                            defines.push("ADAPTIVE_WAIT".into());
                            defines.push(format!("ADAPTIVE_WAIT_LOOPS={}", loops.clone().unwrap_or_else(|| "1024".into())));
                        }
                        "BUSY_WAIT" => defines.push("BUSY_WAIT".into()),
                        "NOSMP" => defines.push("NOSMP".into()),
                        other => defines.push(other.to_string()),
                    }
                }
            }
            t if MALLOC_DEBUG_TOKENS.contains(&t) => {}
            t if defines.iter().any(|d| d == t) => {}
            t => defines.push(t.to_string()),
        }
    }
    Ok(KamVersion { full_version, flags, defines, versionval })
}

fn no_kamailio(reason: &str) {
    println!("cargo:warning=building without Kamailio bindings ({reason}); only the pure core is usable");
    println!("cargo:rustc-cfg=no_kamailio");
}

fn main() {
    println!("cargo:rustc-check-cfg=cfg(no_kamailio)");
    println!("cargo:rerun-if-env-changed=KAMAILIO_BIN");
    println!("cargo:rerun-if-env-changed=KAMAILIO_SRC");
    println!("cargo:rerun-if-changed=kamailio-headers/wrapper.h");
    println!("cargo:rerun-if-changed=kamailio-headers/shim.c");
    println!("cargo:rerun-if-changed=kamailio-headers/probe.c");
    println!("cargo:rerun-if-changed=kamailio-headers/probe_flags.c");
    println!("cargo:rerun-if-changed=build.rs");

    println!("cargo:rustc-check-cfg=cfg(kam_ge_5_7)");
    println!("cargo:rustc-check-cfg=cfg(kam_ge_5_8)");
    println!("cargo:rustc-check-cfg=cfg(kam_ge_6_0)");
    println!("cargo:rustc-check-cfg=cfg(kam_ge_6_1)");
    println!("cargo:rerun-if-env-changed=KAMAILIO_PREFIX");
    // `make` requires the bindings: a pure-core build cached by a plain `cargo build` before the
    // headers were fetched must not be reused by it
    println!("cargo:rerun-if-env-changed=DS_REQUIRE_KAMAILIO");

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // KAMAILIO_PREFIX: a Kamailio built by `make kamailio` (kamailio-headers/build-kamailio.sh);
    // KAMAILIO_BIN / KAMAILIO_SRC / KAMAILIO_LIBDIR override single paths. Nothing set: Debian's.
    let prefix = env::var("KAMAILIO_PREFIX").ok().filter(|p| !p.is_empty()).map(PathBuf::from);
    let kbin = env::var("KAMAILIO_BIN").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| match &prefix {
        Some(p) => p.join("sbin/kamailio").to_string_lossy().into_owned(),
        None => "/usr/sbin/kamailio".into(),
    });

    let out = match Command::new(&kbin).arg("-V").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            if prefix.is_some() || env::var("DS_REQUIRE_KAMAILIO").is_ok() {
                panic!("cannot run `{kbin} -V` (KAMAILIO_PREFIX={prefix:?}): build that Kamailio with `make kamailio`");
            }
            return no_kamailio(&format!("cannot run `{kbin} -V`"));
        }
    };
    let kver = out.lines().find_map(|l| l.strip_prefix("version: kamailio "))
        .and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string();
    let ksrc = match env::var("KAMAILIO_SRC").ok().filter(|p| !p.is_empty()) {
        Some(s) => PathBuf::from(s),
        None => match &prefix {
            Some(p) => p.join("share/kamailio-rs/src"),
            // Debian's package: headers fetched by kamailio-headers/fetch.sh for that version
            None => {
                let v = root.join(format!("kamailio-headers/src-{kver}/src"));
                if v.exists() { v } else { root.join("kamailio-headers/current/src") }
            }
        },
    };
    if !ksrc.join("core/sr_module.h").exists() {
        // a missing file counts as changed: the next build looks again
        println!("cargo:rerun-if-changed={}", ksrc.join("core/sr_module.h").display());
        if env::var("DS_REQUIRE_KAMAILIO").is_ok() {
            panic!("Kamailio headers not found in {} (run kamailio-headers/fetch.sh)", ksrc.display());
        }
        return no_kamailio(&format!("no headers in {} — run kamailio-headers/fetch.sh", ksrc.display()));
    }
    println!("cargo:rerun-if-changed={}", ksrc.join("core/sr_module.h").display());
    let mut kv = parse_kamailio_v(&out).unwrap_or_else(|e| panic!("cannot parse `{kbin} -V`: {e}"));
    // a cmake-built Kamailio: take its exact compile defines (they differ from what `-V` implies)
    let ccmds = ksrc.parent().map(|d| d.join("compile_commands.json"));
    if let Some(cc) = ccmds.as_ref().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", cc.display());
        kv.defines = cmake_defines(cc).unwrap_or_else(|e| panic!("{}: {e}", cc.display()));
    }
    let vv = kv.versionval;
    for (flag, min) in [("kam_ge_5_7", 5_007_000), ("kam_ge_5_8", 5_008_000), ("kam_ge_6_0", 6_000_000), ("kam_ge_6_1", 6_001_000)] {
        if vv >= min { println!("cargo:rustc-cfg={flag}"); }
    }
    println!("cargo:rustc-env=KAMAILIO_VERSIONVAL={vv}");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let hdr_dir = root.join("kamailio-headers");

    // (1) C probe: version strings and layouts as gcc sees them.
    let probe = run_probe(&ksrc, &hdr_dir, &kv, &out_dir);
    let mut sizes = Vec::new();
    let mut offs = Vec::new();
    for line in probe.lines() {
        if let Some(v) = line.strip_prefix("version ") {
            assert_eq!(v, kv.full_version, "SER_FULL_VERSION from headers differs from `kamailio -V`");
        } else if let Some(f) = line.strip_prefix("flags ") {
            assert_eq!(strip_malloc_tokens(f), strip_malloc_tokens(&kv.flags),
                "SER_COMPILE_FLAGS from headers+defines differs from `kamailio -V`: wrong -D set");
        } else if let Some(s) = line.strip_prefix("size ") {
            let (t, n) = s.rsplit_once(' ').expect("probe size line");
            sizes.push((t.to_string(), n.to_string()));
        } else if let Some(s) = line.strip_prefix("off ") {
            let mut p = s.rsplitn(3, ' ');
            let n = p.next().expect("probe").to_string();
            let f = p.next().expect("probe").to_string();
            let t = p.next().expect("probe").to_string();
            offs.push((t, f, n));
        }
    }

    // (2) shim
    let mut b = cc::Build::new();
    b.file(hdr_dir.join("shim.c")).include(&ksrc).flag("-pthread").flag("-fPIC").warnings(false);
    for d in &kv.defines {
        let (k, v) = match d.split_once('=') { Some((k, v)) => (k, Some(v)), None => (d.as_str(), None) };
        b.define(k, v);
    }
    b.compile("dsshim");

    // (3) bindings
    let mut bg = bindgen::Builder::default()
        .header(hdr_dir.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", ksrc.display()))
        .clang_args(kv.defines.iter().map(|d| format!("-D{d}")))
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);
    for f in ALLOW_FUNCS { bg = bg.allowlist_function(f); }
    for t in ALLOW_TYPES { bg = bg.allowlist_type(t); }
    for v in ALLOW_VARS { bg = bg.allowlist_var(v); }
    bg = bg.blocklist_function("fixup_get_svalue").blocklist_function("fixup_get_ivalue");
    let bindings = bg.generate().expect("bindgen failed");
    bindings.write_to_file(out_dir.join("bindings.rs")).expect("write bindings");

    // (4) layout asserts against the probe
    let mut asserts = String::from("// generated by build.rs from the C probe\n");
    for (t, n) in &sizes {
        asserts.push_str(&format!("const _: () = assert!(::core::mem::size_of::<{}>() == {n}, \"size of {t}\");\n", rust_type(t)));
    }
    for (t, f, n) in &offs {
        asserts.push_str(&format!("const _: () = assert!(::core::mem::offset_of!({}, {}) == {n}, \"offset of {t}.{f}\");\n", rust_type(t), f));
    }
    fs::write(out_dir.join("layout_asserts.rs"), asserts).expect("write asserts");

    // DB API (db_bind_mod, db_table_version): in libsrdb1 next to the modules before 6.0;
    // from 6.0 srdb1 is compiled into the kamailio binary itself
    println!("cargo:rerun-if-env-changed=KAMAILIO_LIBDIR");
    if vv < 6_000_000 {
        let libdir = env::var("KAMAILIO_LIBDIR").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| match &prefix {
            Some(p) => ["lib64/kamailio", "lib/kamailio", "lib/x86_64-linux-gnu/kamailio"].iter()
                .map(|d| p.join(d)).find(|d| d.join("libsrdb1.so").exists() || d.join("libsrdb1.so.1").exists())
                .unwrap_or_else(|| p.join("lib64/kamailio")).to_string_lossy().into_owned(),
            None => "/usr/lib/x86_64-linux-gnu/kamailio".into(),
        });
        // only for the module itself: unit-test binaries must not pull in Kamailio libraries
        println!("cargo:rustc-cdylib-link-arg=-L{libdir}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-cdylib-link-arg=-lsrdb1");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,{libdir}/");
    }

    // module_flags: what the loader's SER_COMPILE_FLAGS is (core/ver_defs.h alone)
    let module_flags = run_flags_probe(&ksrc, &hdr_dir, &kv, &out_dir);
    assert_eq!(strip_malloc_tokens(&module_flags), strip_malloc_tokens(&kv.flags),
        "module_flags from core/ver_defs.h differ from `kamailio -V`");
    println!("cargo:rustc-env=KAMAILIO_FULL_VERSION={}", kv.full_version);
    println!("cargo:rustc-env=KAMAILIO_COMPILE_FLAGS={module_flags}");
}

fn rust_type(c: &str) -> String {
    let t = c.trim_start_matches("struct ").trim();
    match t {
        "str" => "str_".to_string(),
        other => other.to_string(),
    }
}

/// `-D` defines of the dispatcher module's compile command in a cmake build's
/// `compile_commands.json` (installed beside the headers by build-kamailio.sh).
fn cmake_defines(path: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    const KEY: &str = "\"command\": \"";
    // every compile command as a decoded JSON string; the dispatcher's, else any module's
    let mut cmds = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let mut cmd = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => if let Some(n) = chars.next() { cmd.push(n) },
                '"' => break,
                c => cmd.push(c),
            }
        }
        cmds.push(cmd);
    }
    let cmd = cmds.iter().find(|c| c.contains("modules/dispatcher/dispatcher.c"))
        .or_else(|| cmds.iter().find(|c| c.contains("/modules/")))
        .ok_or("no module compile command")?;
    let mut defs = Vec::new();
    for tok in cmd.split_whitespace() {
        if let Some(d) = tok.strip_prefix("-D") {
            // shell quoting: NAME=\"kamailio\" -> NAME="kamailio"
            let d = d.replace("\\\"", "\"");
            let key = d.split('=').next().unwrap_or("");
            if matches!(key, "MOD_NAME" | "MOD_NAMEID" | "COMPILER" | "CFG_DIR" | "RUN_DIR" | "SHARE_DIR")
                || key.ends_with("_EXPORTS") || MALLOC_DEBUG_TOKENS.contains(&key) {
                continue;
            }
            defs.push(d);
        }
    }
    defs.push("MOD_NAME=\"dispatcher\"".into());
    if defs.len() < 10 { return Err(format!("too few defines found: {defs:?}")); }
    Ok(defs)
}

fn run_flags_probe(ksrc: &Path, hdr_dir: &Path, kv: &KamVersion, out_dir: &Path) -> String {
    let compiler = cc::Build::new().get_compiler();
    let exe = out_dir.join("kam_probe_flags");
    let mut cmd = compiler.to_command();
    cmd.arg("-o").arg(&exe).arg(hdr_dir.join("probe_flags.c"))
        .arg(format!("-I{}", ksrc.display())).arg("-w");
    for d in &kv.defines { cmd.arg(format!("-D{d}")); }
    let st = cmd.status().expect("run C compiler for the flags probe");
    assert!(st.success(), "C flags probe failed to compile");
    let o = Command::new(&exe).output().expect("run flags probe");
    assert!(o.status.success(), "C flags probe failed");
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

fn run_probe(ksrc: &Path, hdr_dir: &Path, kv: &KamVersion, out_dir: &Path) -> String {
    let compiler = cc::Build::new().get_compiler();
    let exe = out_dir.join("kam_probe");
    let mut cmd = compiler.to_command();
    cmd.arg("-o").arg(&exe).arg(hdr_dir.join("probe.c"))
        .arg(format!("-I{}", ksrc.display())).arg(format!("-I{}", hdr_dir.display())).arg("-pthread").arg("-w");
    for d in &kv.defines { cmd.arg(format!("-D{d}")); }
    let st = cmd.status().expect("run C compiler for the probe");
    assert!(st.success(), "C probe failed to compile");
    let o = Command::new(&exe).output().expect("run probe");
    assert!(o.status.success(), "C probe failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const ALLOW_FUNCS: &[&str] = &[
    "set_dst_uri", "reset_dst_uri", "rewrite_uri", "append_branch", "get_str_fparam", "get_int_fparam", "get_is_fparam",
    "fixup_spve_null", "fixup_free_spve_null", "fixup_igp_null", "fixup_free_igp_null",
    "fixup_igp_igp", "fixup_free_igp_igp", "fixup_spve_all", "fixup_free_spve_all",
    "fixup_igp_all", "fixup_free_igp_all", "fixup_spve_spve", "fixup_free_spve_spve", "fixup_igp_spve", "fixup_free_igp_spve", "fixup_spve_spve_igp",
    "fix_param", "fix_param_types", "fixup_free_fparam_all",
    "parse_headers", "parse_credentials", "parse_from_header", "parse_to_header", "parse_sip_msg_uri",
    "xavp_add_value", "xavp_add_value_after", "xavp_add_xavp_value", "xavp_get", "xavp_get_by_index", "xavp_get_child",
    "xavp_rm_by_name", "xavp_rm_by_index", "xavp_destroy_list", "xavp_rm", "xavp_get_crt_list",
    "pv_cache_get", "pv_get_spec_value", "pv_parse_spec2", "pv_spec_free", "pv_printf_s",
    "pv_parse_format", "pv_elem_free_all", "pv_value_destroy", "pv_get_null", "pv_get_sintval", "pv_get_strval",
    "str2ip", "str2ip6", "ip_addr2a", "ip_addr2sbuf", "ip_addr2sbufz", "grep_sock_info", "parse_phostport",
    "ksr_get_socket_by_name", "socket2str", "get_max_procs", "rpc_register_array", "get_ticks",
    "get_ticks_raw", "my_pid", "dns_resolvehost", "dns_sip_resolvehost", "dns_set_local_ttl", "find_export",
    "register_basic_timers", "fork_basic_timer", "fork_basic_utimer", "sr_wtimer_add", "register_timer",
    "route_lookup", "faked_msg_init", "faked_msg_next", "run_top_route", "sr_kemi_modules_add",
    "sr_kemi_eng_get", "sr_kemi_route", "cfg_declare", "fastrand", "fastrand_max", "ksr_module_set_flag", "do_action", "pv_cache_get", "db_bind_mod", "db_table_version",
];
const ALLOW_TYPES: &[&str] = &[
    "sip_msg", "sip_msg_t", "module_exports", "cmd_export_t", "param_export_t", "rpc_export_t", "rpc_t",
    "gen_lock_t", "fparam_t", "sr_shm_api_t", "sr_pkg_api_t", "tm_binds", "sip_uri", "to_body",
    "sr_xavp_t", "sr_xval_t", "hdr_field", "pv_spec_t", "pv_value_t", "pv_elem_t", "receive_info",
    "ip_addr", "socket_info", "str", "dest_info", "auth_body_t", "dig_cred_t", "sr_kemi_t",
    "run_act_ctx", "route_list", "cfg_def_t", "uac_req_t", "tmcb_params", "cell", "load_tm_f",
    "hostent", "db_func_t", "db1_con_t", "db1_res_t", "db_row_t", "db_val_t", "db_type_t", "cseq_body", "pv_export_t", "sr_kemi_eng_t", "action", "action_type", "_operators", "route_struct.*",
];
const ALLOW_VARS: &[&str] = &[
    "_shm_root", "_pkg_root", "process_no", "ruri_is_new", "route_type", "event_rt",
    "default_core_cfg", "core_cfg", "dprint_crit",
    "PROC_.*", "PARAM_.*", "L_.*", ".*_ROUTE", "MODULE_INTERFACE_VER", "DEFAULT_DLFLAGS",
    "VAR_PARAM_NO", "PV_.*", "SR_KEMIP_.*", "TMCB_.*", "HDR_.*", "E_.*", "FPARAM_.*",
];
