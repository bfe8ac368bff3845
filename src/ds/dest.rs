//! Turning a raw list entry into a destination, like the C `add_dest2list` + `pack_dest`.
//!
//! Steps, in the C order (the first failing step rejects the entry):
//! 1. parse the URI; when that fails and the URI does not start with `sip:` (case-sensitive)
//!    and its length is 5..=499, retry with `sip:` in front (INFO "uri without sip scheme -
//!    fixing it"); the stored URI is the fixed one;
//! 2. reject a host longer than 254 bytes;
//! 3. reject an IPv6 reference (`[...]`) when the core has `dns_try_ipv6=0`;
//! 4. parse the attrs;
//! 5. choose the sending socket: `sockname` attr, else `socket` attr (both must name a local
//!    socket), else the module default;
//! 6. unless flag 16 (no DNS) is set, and only when `ds_dns_mode` has the INIT (1) or TIMER (4)
//!    bit, resolve the host: an IP literal is converted like the core `str2ip`/`str2ip6`
//!    (which accept some sloppy forms, see [`str2ip`]), anything else goes to the resolver.
//!    With the QSRV bit (8) the C code uses `sip_resolvehost`, which fills in a missing
//!    protocol (UDP) and port (5060, or 5061 for TLS); that defaulting is reproduced here
//!    (an SRV-provided port cannot be, as [`LoadEnv::resolve_host`] returns only an address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ds::logfmt::{Level, Note};
use crate::ds::attrs::{parse_attrs_in, Attrs};
use crate::ds::listfile::{EntryRef, RawEntry};
use crate::ds::uri::{parse_uri, Proto, Scheme};

/// Destination flag: no DNS resolution at load (`DS_NODNSARES_DST`).
pub const DS_NODNSARES_DST: i32 = 16;
/// `ds_dns_mode` bits.
pub const DS_DNS_MODE_INIT: i32 = 1;
pub const DS_DNS_MODE_ALWAYS: i32 = 2;
pub const DS_DNS_MODE_TIMER: i32 = 4;
pub const DS_DNS_MODE_QSRV: i32 = 8;
/// Longest accepted host (C: `DS_HN_SIZE - 2`).
pub const MAX_HOST_LEN: usize = 254;
/// Addresses kept per destination with `ds_dns_match_all` (Kamailio master `DS_DNS_MAX_ADDRS`).
pub const DNS_MAX_ADDRS: usize = 32;

/// What the loader needs from the running Kamailio.
pub trait LoadEnv {
    /// resolve a host name (not an IP literal); None = unresolvable
    fn resolve_host(
        &mut self,
        host: &[u8],
        scheme: Scheme,
        proto: Proto,
        port: u16,
    ) -> Option<IpAddr>;
    /// SIP resolution (NAPTR/SRV/A, `ds_dns_mode` bit 8): address plus the port and protocol
    /// found (0 / `Proto::None` when the lookup gave none). Default: plain resolution.
    fn resolve_sip(&mut self, host: &[u8], scheme: Scheme, proto: Proto, port: u16) -> Option<(IpAddr, u16, Proto)> {
        self.resolve_host(host, scheme, proto, port).map(|ip| (ip, 0, Proto::None))
    }
    /// `ds_dns_match_all` (Kamailio master): keep every address of a lookup (up to
    /// [`DNS_MAX_ADDRS`]), not only the first. Default: off.
    fn match_all(&self) -> bool {
        false
    }
    /// Every address of a host lookup, in the resolver's order (used with [`match_all`]).
    /// Default: the single address of [`resolve_host`].
    ///
    /// [`match_all`]: LoadEnv::match_all
    /// [`resolve_host`]: LoadEnv::resolve_host
    fn resolve_host_all(&mut self, host: &[u8], scheme: Scheme, proto: Proto, port: u16) -> Vec<IpAddr> {
        self.resolve_host(host, scheme, proto, port).into_iter().collect()
    }
    /// Every address of a SIP resolution, with the port and protocol found (used with
    /// [`match_all`](LoadEnv::match_all)). Default: the single address of `resolve_sip`.
    fn resolve_sip_all(&mut self, host: &[u8], scheme: Scheme, proto: Proto, port: u16) -> Option<(Vec<IpAddr>, u16, Proto)> {
        self.resolve_sip(host, scheme, proto, port).map(|(ip, p, pr)| (vec![ip], p, pr))
    }
    /// "proto:host:port" socket attr → opaque socket handle (0 = not a local socket)
    fn socket_by_addr(&mut self, spec: &[u8]) -> usize;
    /// sockname attr → opaque handle (0 = unknown)
    fn socket_by_name(&mut self, name: &[u8]) -> usize;
    /// ds_default_sockname/ds_default_socket handle, 0 if none
    fn default_socket(&self) -> usize;
    /// core dns_try_ipv6
    fn allow_ipv6(&self) -> bool;
}

/// A validated destination, ready to be put in a set.
#[derive(Clone, Debug, PartialEq)]
pub struct Dest {
    pub setid: i32,
    /// The URI as stored (with the `sip:` prefix when it was added).
    pub uri: Vec<u8>,
    /// Flags as given, including bit 16.
    pub flags: i32,
    pub priority: i32,
    pub attrs: Attrs,
    pub scheme: Scheme,
    /// Host as written in the URI (IPv6 keeps its brackets; empty for `tel:`).
    pub host: Vec<u8>,
    /// URI port, 0 when absent (QSRV mode fills in the default).
    pub port: u16,
    /// Protocol from the URI `transport` parameter (5.6.3 rules, see `UriParts::transport`).
    pub proto: Proto,
    /// Address resolved at load; `None` with flag 16 or when the DNS mode does not resolve at
    /// load (`ds_dns_mode` without the INIT and TIMER bits).
    pub ip: Option<IpAddr>,
    /// Further addresses of the lookup with `ds_dns_match_all` (at most
    /// `DNS_MAX_ADDRS - 1`, in the resolver's order); empty otherwise.
    pub more_ips: Vec<IpAddr>,
    /// Sending socket handle (0 = none).
    pub sock: usize,
    pub line: usize,
    pub col: usize,
}

/// Why an entry was rejected. With `ds_load_mode=0` the caller skips the entry with a warning
/// ("unable to add destination ... -- skipping"); with 1 the whole load fails.
/// `level` and `func` are the severity and the function of the C module's message for the
/// same fault (`pack_dest`: ERROR, except the skipped IPv6 record: DEBUG).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
    pub level: Level,
    pub func: &'static str,
}

impl std::fmt::Display for DestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for DestError {}

/// IPv4 literal, converted like the core `str2ip`: exactly 3 dots, only digits and dots;
/// an empty group counts as 0 and a group wraps modulo 256 (`1..2.300` → 1.0.2.44).
pub fn str2ip(s: &[u8]) -> Option<Ipv4Addr> {
    if s.is_empty() {
        return None;
    }
    let mut o = [0u8; 4];
    let mut i = 0usize;
    for &c in s {
        match c {
            b'.' => {
                i += 1;
                if i > 3 {
                    return None;
                }
            }
            b'0'..=b'9' => {
                let slot = o.get_mut(i)?;
                *slot = slot.wrapping_mul(10).wrapping_add(c - b'0');
            }
            _ => return None,
        }
    }
    if i < 3 {
        return None;
    }
    Some(Ipv4Addr::from(o))
}

/// IPv6 literal (optionally in `[ ]`), converted like the core `str2ip6`: hex groups wrap
/// modulo 2^16, at most 7 colons, one `::`; no embedded IPv4 form.
pub fn str2ip6(s: &[u8]) -> Option<Ipv6Addr> {
    if s.is_empty() {
        return None;
    }
    let body = if s.first() == Some(&b'[') {
        if s.last() != Some(&b']') || s.len() < 2 {
            return None;
        }
        s.get(1..s.len() - 1)?
    } else {
        s
    };
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let mut in_tail = false;
    let mut idx = 0usize; // current group index in the active array
    let mut head_len = 0usize; // groups before '::'
    let mut colons = 0usize;
    let mut last_colon = false;
    for &c in body {
        if c == b':' {
            colons += 1;
            if colons > 7 {
                return None;
            }
            if last_colon {
                // '::'
                if in_tail {
                    return None;
                }
                head_len = idx;
                idx = 0;
                in_tail = true;
            } else {
                last_colon = true;
                idx += 1;
            }
        } else {
            let h = (c as char).to_digit(16)? as u16;
            let arr = if in_tail { &mut tail } else { &mut head };
            let g = arr.get_mut(idx)?;
            *g = g.wrapping_mul(16).wrapping_add(h);
            last_colon = false;
        }
    }
    if !last_colon {
        idx += 1;
    }
    let mut out = [0u16; 8];
    if in_tail {
        let rest = 8usize.checked_sub(idx + head_len)?;
        for (k, v) in head.iter().take(head_len).enumerate() {
            *out.get_mut(k)? = *v;
        }
        for (k, v) in tail.iter().take(idx).enumerate() {
            *out.get_mut(head_len + rest + k)? = *v;
        }
    } else {
        if colons < 7 {
            return None;
        }
        out = head;
    }
    Some(Ipv6Addr::from(out))
}

/// IP literal as the core resolver sees it (IPv4 first, then IPv6).
pub fn ip_literal(host: &[u8]) -> Option<IpAddr> {
    str2ip(host)
        .map(IpAddr::V4)
        .or_else(|| str2ip6(host).map(IpAddr::V6))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Validates one list entry and builds the destination (C `pack_dest`).
/// Returns the destination and the messages to log (INFO for the `sip:` fix-up, the attrs
/// weight messages).
/// RFC 3263 transport defaulting (Kamailio 6.1 list entries, 6.1.4 `ds_is_from_list` URI):
/// without a transport, an IP address or a host with a port means UDP (TCP for a `sips:`
/// host name with a port); a bare host name stays without one (left to NAPTR/SRV).
pub fn default_transport(host: &[u8], port: u16, scheme: Scheme, proto: Proto) -> Proto {
    if proto != Proto::None {
        proto
    } else if ip_literal(host).is_some() {
        Proto::Udp
    } else if port != 0 {
        if scheme == Scheme::Sip {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    } else {
        Proto::None
    }
}

pub fn prepare_dest(
    e: &RawEntry,
    attrs_none: bool,
    dns_mode: i32,
    env: &mut dyn LoadEnv,
) -> Result<(Dest, Vec<Note>), DestError> {
    prepare_entry(&e.view(), attrs_none, dns_mode, env)
}

/// [`prepare_dest`] of a borrowed entry.
pub fn prepare_entry(
    e: &EntryRef<'_>,
    attrs_none: bool,
    dns_mode: i32,
    env: &mut dyn LoadEnv,
) -> Result<(Dest, Vec<Note>), DestError> {
    prepare_entry_reusing(e, attrs_none, dns_mode, env, None)
}

/// [`prepare_entry`] that writes the URI, host and attrs body into the buffers of `spare`, a
/// destination prepared before and no longer needed (a list built set by set: no allocation
/// per destination once the first sets are built). The result does not depend on `spare`.
pub fn prepare_entry_reusing(
    e: &EntryRef<'_>,
    attrs_none: bool,
    dns_mode: i32,
    env: &mut dyn LoadEnv,
    spare: Option<Dest>,
) -> Result<(Dest, Vec<Note>), DestError> {
    let (mut uri_buf, mut host_buf, body_buf) = match spare {
        Some(d) => (d.uri, d.host, d.attrs.body),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let fail = |msg: String| DestError {
        line: e.line,
        col: e.col,
        msg,
        level: Level::Err,
        func: "pack_dest",
    };
    let mut notes = Vec::new();

    // 1. URI, with the "sip:" fix-up
    let (uri, parts) = match parse_uri(e.uri) {
        Ok(p) => {
            uri_buf.clear();
            uri_buf.extend_from_slice(e.uri);
            (uri_buf, p)
        }
        Err(first) => {
            let n = e.uri.len();
            if n > 4 && !e.uri.starts_with(b"sip:") && n < 500 {
                let mut fixed = b"sip:".to_vec();
                fixed.extend_from_slice(e.uri);
                match parse_uri(&fixed) {
                    Ok(p) => {
                        notes.push(Note::new(
                            Level::Info,
                            "pack_dest",
                            format!("uri without sip scheme - fixing it: {}", show(e.uri)),
                        ));
                        (fixed, p)
                    }
                    Err(second) => {
                        return Err(fail(format!("bad uri [{}]: {}", show(e.uri), second)))
                    }
                }
            } else {
                return Err(fail(format!("bad uri [{}]: {}", show(e.uri), first)));
            }
        }
    };
    host_buf.clear();
    host_buf.extend_from_slice(uri.get(parts.host.clone()).unwrap_or_default());
    let host = host_buf;

    // 2. host length
    if host.len() > MAX_HOST_LEN {
        return Err(fail(format!(
            "hostname in uri is too long [{}]",
            show(&uri)
        )));
    }

    // 3. IPv6 references when IPv6 is off
    if !env.allow_ipv6() && host.first() == Some(&b'[') && host.last() == Some(&b']') {
        // the C module only says so at DEBUG level (and then "unable to add ... -- skipping")
        return Err(DestError {
            level: Level::Dbg,
            ..fail(format!("skipping IPv6 record {} (dns_try_ipv6 is off)", show(&host)))
        });
    }

    // 4. attrs
    let (attrs, warnings) = parse_attrs_in(e.attrs, attrs_none, body_buf).map_err(|ae| {
        fail(format!(
            "cannot set attributes! [{}]: {}",
            show(e.attrs),
            ae
        ))
    })?;
    notes.extend(warnings);

    // 5. sending socket
    let sock = match (attrs.sockname(), attrs.socket()) {
        (Some(name), _) if !name.is_empty() => {
            let s = env.socket_by_name(name);
            if s == 0 {
                return Err(fail(format!("non-local socket name <{}>", show(name))));
            }
            s
        }
        (_, Some(spec)) if !spec.is_empty() => {
            let s = env.socket_by_addr(spec);
            if s == 0 {
                return Err(fail(format!("non-local socket <{}>", show(spec))));
            }
            s
        }
        _ => env.default_socket(),
    };
    // Kamailio 6.1: the keepalive socket must be local too
    if crate::ds::compat::ge(6, 1, 0) {
        if let Some(spec) = attrs.ping_socket().filter(|s| !s.is_empty()) {
            if env.socket_by_addr(spec) == 0 {
                return Err(fail(format!("non-local socket <{}>", show(spec))));
            }
        }
    }

    // 6. address
    let mut port = parts.port;
    let mut proto = parts.transport;
    // Kamailio 6.1 (RFC 3263): without `;transport=`, an IP address or a host with a port
    // means UDP (TCP for a `sips:` host name with a port); a bare host name is left to DNS
    if crate::ds::compat::ge(6, 1, 0) {
        proto = default_transport(&host, port, parts.scheme, proto);
    }
    let mut more_ips = Vec::new();
    let ip = if e.flags & DS_NODNSARES_DST != 0 {
        None
    } else if dns_mode & (DS_DNS_MODE_INIT | DS_DNS_MODE_TIMER) != 0 {
        let qsrv = dns_mode & DS_DNS_MODE_QSRV != 0;
        let all = env.match_all();
        // with ds_dns_match_all: the first address, the others kept in `more_ips`
        let mut first_of = |mut v: Vec<IpAddr>| -> Option<IpAddr> {
            v.truncate(DNS_MAX_ADDRS);
            let first = v.first().copied()?;
            more_ips = v.split_off(1);
            Some(first)
        };
        let resolved = match ip_literal(&host) {
            Some(ip) => Some(ip),
            None if qsrv && all => env.resolve_sip_all(&host, parts.scheme, proto, port).and_then(|(ips, p, pr)| {
                if p != 0 {
                    port = p;
                }
                if pr != Proto::None {
                    proto = pr;
                }
                first_of(ips)
            }),
            None if qsrv => env.resolve_sip(&host, parts.scheme, proto, port).map(|(ip, p, pr)| {
                if p != 0 {
                    port = p;
                }
                if pr != Proto::None {
                    proto = pr;
                }
                ip
            }),
            None if all => first_of(env.resolve_host_all(&host, parts.scheme, proto, port)),
            None => env.resolve_host(&host, parts.scheme, proto, port),
        };
        match resolved {
            None => {
                return Err(fail(format!(
                    "could not resolve {} (missing no-probing flag?!?)",
                    show(&host)
                )))
            }
            Some(ip) => {
                if qsrv {
                    if proto == Proto::None {
                        proto = Proto::Udp;
                    }
                    if port == 0 {
                        port = if proto == Proto::Tls { 5061 } else { 5060 };
                    }
                }
                Some(ip)
            }
        }
    } else {
        None
    };

    Ok((
        Dest {
            setid: e.setid,
            uri,
            flags: e.flags,
            priority: e.priority,
            attrs,
            scheme: parts.scheme,
            host,
            port,
            proto,
            ip,
            more_ips,
            sock,
            line: e.line,
            col: e.col,
        },
        notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeEnv {
        hosts: HashMap<Vec<u8>, IpAddr>,
        socks: HashMap<Vec<u8>, usize>,
        names: HashMap<Vec<u8>, usize>,
        default_sock: usize,
        ipv6: bool,
        resolve_calls: Vec<(Vec<u8>, Scheme, Proto, u16)>,
    }

    impl LoadEnv for FakeEnv {
        fn resolve_host(
            &mut self,
            host: &[u8],
            scheme: Scheme,
            proto: Proto,
            port: u16,
        ) -> Option<IpAddr> {
            self.resolve_calls
                .push((host.to_vec(), scheme, proto, port));
            self.hosts.get(host).copied()
        }
        fn socket_by_addr(&mut self, spec: &[u8]) -> usize {
            self.socks.get(spec).copied().unwrap_or(0)
        }
        fn socket_by_name(&mut self, name: &[u8]) -> usize {
            self.names.get(name).copied().unwrap_or(0)
        }
        fn default_socket(&self) -> usize {
            self.default_sock
        }
        fn allow_ipv6(&self) -> bool {
            self.ipv6
        }
    }

    fn env() -> FakeEnv {
        let mut f = FakeEnv {
            ipv6: true,
            default_sock: 0,
            ..Default::default()
        };
        f.hosts
            .insert(b"gw.example".to_vec(), "10.0.0.7".parse().expect("ip"));
        f.socks.insert(b"udp:192.168.0.125:5060".to_vec(), 11);
        f.names.insert(b"s1".to_vec(), 22);
        f
    }

    fn raw(uri: &str, flags: i32, attrs: &str) -> RawEntry {
        RawEntry {
            setid: 1,
            uri: uri.as_bytes().to_vec(),
            flags,
            priority: 0,
            attrs: attrs.as_bytes().to_vec(),
            line: 4,
            col: 3,
        }
    }

    fn prep(
        f: &mut FakeEnv,
        uri: &str,
        flags: i32,
        attrs: &str,
    ) -> Result<(Dest, Vec<Note>), DestError> {
        prepare_dest(&raw(uri, flags, attrs), false, DS_DNS_MODE_INIT, f)
    }

    /// A destination prepared with the buffers of another one is the one prepared without
    /// (long and short URIs, hosts and attrs, the `sip:` fix-up, no attrs, an error).
    #[test]
    fn reusing_buffers_changes_nothing() {
        let cases = [
            ("sip:127.0.0.1:5080;transport=tcp", 8, "weight=5;duid=abc"),
            ("gw.example", 0, ""),
            ("sip:[::1]:5060", 0, "socket=udp:192.168.0.125:5060;rweight=7;"),
            ("sip:a-rather-long-host-name-that-needs-more-room.example.org:5061", 16, "x=1;y=2;latency=30;weight=200"),
            ("sip:10.1.2.3", 0, "sockname=s1"),
            ("sip:nowhere.invalid", 0, "weight=1"),
        ];
        for (ui, &(u, fl, a)) in cases.iter().enumerate() {
            let want = prep(&mut env(), u, fl, a);
            for &(su, sfl, sa) in &cases {
                let Ok((spare, _)) = prep(&mut env(), su, sfl, sa) else { continue };
                let got = prepare_entry_reusing(&raw(u, fl, a).view(), false, DS_DNS_MODE_INIT, &mut env(), Some(spare));
                assert_eq!(got, want, "case {ui} with the buffers of {su}");
            }
        }
    }

    #[test]
    fn transport_defaulting_from_6_1() {
        use crate::ds::compat;
        let cases = [
            ("sip:127.0.0.1:5080", Proto::Udp),
            ("sips:127.0.0.1", Proto::Udp),
            ("sip:[::1]:5080", Proto::Udp),
            ("sip:gw.example:5080", Proto::Udp),
            ("sips:gw.example:5081", Proto::Tcp),
            ("sip:gw.example", Proto::None),
            ("sip:127.0.0.1;transport=tls", Proto::Tls),
        ];
        for (uri, want) in cases {
            let got = compat::with(compat::val(6, 1, 0), || prep(&mut env(), uri, 16, "").expect(uri).0.proto);
            assert_eq!(got, want, "{uri} on 6.1");
            let old = compat::with(compat::BASELINE, || prep(&mut env(), uri, 16, "").expect(uri).0.proto);
            let explicit = if uri.contains("transport=") { want } else { Proto::None };
            assert_eq!(old, explicit, "{uri} on 5.6.3");
        }
        // 6.1 rejects a non-local ping_socket
        let e = compat::with(compat::val(6, 1, 0), || prep(&mut env(), "sip:127.0.0.1", 0, "ping_socket=udp:10.9.9.9:5060"));
        assert!(e.is_err());
    }

    #[test]
    fn ip_literal_destination() {
        let mut f = env();
        let (d, notes) =
            prep(&mut f, "sip:127.0.0.1:5080;transport=tcp", 8, "weight=5").expect("ok");
        assert!(notes.is_empty());
        assert_eq!(d.uri, b"sip:127.0.0.1:5080;transport=tcp");
        assert_eq!(d.host, b"127.0.0.1");
        assert_eq!(d.port, 5080);
        assert_eq!(d.proto, Proto::Tcp);
        assert_eq!(d.ip, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(d.flags, 8);
        assert_eq!(d.attrs.weight, 5);
        assert_eq!((d.line, d.col, d.setid), (4, 3, 1));
        assert!(f.resolve_calls.is_empty());
    }

    #[test]
    fn hostname_resolution() {
        let mut f = env();
        let (d, _) = prep(&mut f, "sips:gw.example", 0, "").expect("ok");
        assert_eq!(d.ip, Some("10.0.0.7".parse().expect("ip")));
        assert_eq!(d.scheme, Scheme::Sips);
        assert_eq!(
            f.resolve_calls,
            vec![(b"gw.example".to_vec(), Scheme::Sips, Proto::None, 0)]
        );
        let err = prep(&mut f, "sip:nowhere.invalid", 0, "").expect_err("unresolvable");
        assert_eq!(
            err.msg,
            "could not resolve nowhere.invalid (missing no-probing flag?!?)"
        );
        assert_eq!((err.line, err.col), (4, 3));
        // flag 16: no resolution, flags kept
        let (d, _) = prep(&mut f, "sip:nowhere.invalid", 16 | 8, "").expect("no dns");
        assert_eq!(d.ip, None);
        assert_eq!(d.flags, 24);
        // flag 16 also skips IP literals
        assert_eq!(prep(&mut f, "sip:1.2.3.4", 16, "").expect("ok").0.ip, None);
    }

    #[test]
    fn dns_modes() {
        let mut f = env();
        // ALWAYS only: nothing resolved at load, not even a literal
        let (d, _) = prepare_dest(
            &raw("sip:nowhere.invalid", 0, ""),
            false,
            DS_DNS_MODE_ALWAYS,
            &mut f,
        )
        .expect("ok");
        assert_eq!(d.ip, None);
        let (d, _) = prepare_dest(
            &raw("sip:1.2.3.4", 0, ""),
            false,
            DS_DNS_MODE_ALWAYS,
            &mut f,
        )
        .expect("ok");
        assert_eq!(d.ip, None);
        // TIMER resolves at load too
        let (d, _) = prepare_dest(
            &raw("sip:gw.example", 0, ""),
            false,
            DS_DNS_MODE_TIMER,
            &mut f,
        )
        .expect("ok");
        assert!(d.ip.is_some());
        // QSRV fills in proto and port
        let m = DS_DNS_MODE_INIT | DS_DNS_MODE_QSRV;
        let (d, _) = prepare_dest(&raw("sip:gw.example", 0, ""), false, m, &mut f).expect("ok");
        assert_eq!((d.port, d.proto), (5060, Proto::Udp));
        let (d, _) =
            prepare_dest(&raw("sip:1.2.3.4;transport=tls", 0, ""), false, m, &mut f).expect("ok");
        assert_eq!((d.port, d.proto), (5061, Proto::Tls));
        let (d, _) = prepare_dest(
            &raw("sip:1.2.3.4:7000;transport=tcp", 0, ""),
            false,
            m,
            &mut f,
        )
        .expect("ok");
        assert_eq!((d.port, d.proto), (7000, Proto::Tcp));
        // without QSRV nothing is filled in
        let (d, _) = prep(&mut f, "sip:1.2.3.4", 0, "").expect("ok");
        assert_eq!((d.port, d.proto), (0, Proto::None));
    }

    #[test]
    fn scheme_fixup() {
        let mut f = env();
        let (d, notes) = prep(&mut f, "127.0.0.1:5060", 0, "").expect("fixed");
        assert_eq!(d.uri, b"sip:127.0.0.1:5060");
        assert_eq!(d.host, b"127.0.0.1");
        assert_eq!(d.port, 5060);
        // INFO, as the C module's pack_dest
        assert_eq!(
            notes,
            vec![Note::new(Level::Info, "pack_dest", "uri without sip scheme - fixing it: 127.0.0.1:5060".into())]
        );
        let (d, _) = prep(&mut f, "gw.example", 0, "").expect("fixed");
        assert_eq!(d.uri, b"sip:gw.example");
        // too short for the fix-up
        assert!(prep(&mut f, "1.2.3", 16, "").is_ok());
        assert!(prep(&mut f, "a.bc", 16, "")
            .expect_err("short")
            .msg
            .starts_with("bad uri [a.bc]"));
        // starting with "sip:" already: no second chance
        assert!(prep(&mut f, "sip:a@", 16, "").is_err());
        // case-sensitive "sip:" test: "SIP:a@" is retried as "sip:SIP:a@", which fails too
        assert!(prep(&mut f, "SIP:a@", 16, "").is_err());
        // fix-up that still fails
        assert!(prep(&mut f, "foo bar@", 16, "").is_err());
        // 499 bytes is the longest fix-up
        let long = format!("h;x={}", "a".repeat(495));
        assert_eq!(long.len(), 499);
        assert_eq!(prep(&mut f, &long, 16, "").expect("ok").0.uri.len(), 503);
        let long = format!("h;x={}", "a".repeat(496));
        assert!(prep(&mut f, &long, 16, "")
            .expect_err("500")
            .msg
            .starts_with("bad uri"));
    }

    #[test]
    fn host_limits_and_ipv6() {
        let mut f = env();
        let h254 = format!("sip:u@{}", "a".repeat(254));
        assert!(prep(&mut f, &h254, 16, "").is_ok());
        let h255 = format!("sip:u@{}", "a".repeat(255));
        assert!(prep(&mut f, &h255, 16, "")
            .expect_err("long")
            .msg
            .starts_with("hostname in uri is too long"));
        let (d, _) = prep(&mut f, "sip:[2001:db8::5]:5070", 0, "").expect("v6");
        assert_eq!(d.ip, Some("2001:db8::5".parse().expect("ip")));
        assert_eq!(d.host, b"[2001:db8::5]");
        f.ipv6 = false;
        let e = prep(&mut f, "sip:[2001:db8::5]:5070", 0, "").expect_err("v6 off");
        // the C module says so at DEBUG level only (then "unable to add ... -- skipping")
        assert_eq!((e.level, e.func), (Level::Dbg, "pack_dest"));
        assert!(prep(&mut f, "sip:[2001:db8::5]:5070", 16, "").is_err());
    }

    #[test]
    fn sockets() {
        let mut f = env();
        f.default_sock = 99;
        assert_eq!(prep(&mut f, "sip:1.2.3.4", 0, "").expect("ok").0.sock, 99);
        assert_eq!(
            prep(&mut f, "sip:1.2.3.4", 0, "socket=udp:192.168.0.125:5060")
                .expect("ok")
                .0
                .sock,
            11
        );
        assert_eq!(
            prep(&mut f, "sip:1.2.3.4", 0, "sockname=s1;socket=bogus")
                .expect("ok")
                .0
                .sock,
            22
        );
        let err = prep(&mut f, "sip:1.2.3.4", 0, "socket=udp:8.8.8.8:5060").expect_err("non-local");
        assert_eq!(err.msg, "non-local socket <udp:8.8.8.8:5060>");
        let err = prep(&mut f, "sip:1.2.3.4", 0, "sockname=nope").expect_err("non-local");
        assert_eq!(err.msg, "non-local socket name <nope>");
        // empty values fall through to the next choice
        assert_eq!(
            prep(&mut f, "sip:1.2.3.4", 0, "sockname=\"\";socket=")
                .expect("ok")
                .0
                .sock,
            99
        );
    }

    #[test]
    fn attrs_errors_and_warnings() {
        let mut f = env();
        let err = prep(&mut f, "sip:1.2.3.4", 0, "a=\"x").expect_err("bad attrs");
        assert!(err.msg.starts_with("cannot set attributes"));
        // every rejection is an ERROR of pack_dest, as in the C module
        assert_eq!((err.level, err.func), (Level::Err, "pack_dest"));
        let err = prep(&mut f, "sip:a@b@c:xx", 0, "").expect_err("bad uri");
        assert_eq!((err.level, err.func), (Level::Err, "pack_dest"));
        assert!(err.msg.starts_with("bad uri [sip:a@b@c:xx]"), "{}", err.msg);
        let (d, notes) = prep(&mut f, "sip:1.2.3.4", 0, "weight=0;duid=d1").expect("ok");
        assert_eq!(d.attrs.duid(), Some(&b"d1"[..]));
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].level, notes[0].func), (Level::Err, "ds_set_attrs"));
        let (d, _) = prepare_dest(&raw("sip:1.2.3.4", 0, ""), true, 1, &mut f).expect("ok");
        assert_eq!(d.attrs.body, b"none=yes");
    }

    #[test]
    fn tel_destination() {
        let mut f = env();
        let (d, _) = prep(&mut f, "tel:+4930123", 16, "").expect("tel");
        assert_eq!(d.scheme, Scheme::Tel);
        assert!(d.host.is_empty());
        assert!(prep(&mut f, "tel:+4930123", 0, "").is_err());
    }

    #[test]
    fn literal_conversion_like_core() {
        assert_eq!(str2ip(b"10.1.2.3"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(str2ip(b"010.1.2.3"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(str2ip(b"1..2.3"), Some(Ipv4Addr::new(1, 0, 2, 3)));
        assert_eq!(str2ip(b"1.2.3.300"), Some(Ipv4Addr::new(1, 2, 3, 44)));
        assert_eq!(str2ip(b"1.2.3"), None);
        assert_eq!(str2ip(b"1.2.3.4.5"), None);
        assert_eq!(str2ip(b"1.2.3.a"), None);
        assert_eq!(str2ip(b""), None);
        let v6 = |s: &str| str2ip6(s.as_bytes()).map(|a| a.to_string());
        assert_eq!(v6("[::1]"), Some("::1".into()));
        assert_eq!(v6("::1"), Some("::1".into()));
        assert_eq!(v6("[2001:DB8::5]"), Some("2001:db8::5".into()));
        assert_eq!(v6("1:2:3:4:5:6:7:8"), Some("1:2:3:4:5:6:7:8".into()));
        assert_eq!(v6("1:2:3:4:5:6::8"), Some("1:2:3:4:5:6:0:8".into()));
        assert_eq!(v6("fe80::"), Some("fe80::".into()));
        assert_eq!(v6("::"), Some("::".into()));
        assert_eq!(v6("1:2:3:4:5:6:7:"), Some("1:2:3:4:5:6:7:0".into()));
        assert_eq!(v6("1::2::3"), None);
        assert_eq!(v6("1:2:3"), None);
        assert_eq!(v6("1:2:3:4:5:6:7:8:9"), None);
        assert_eq!(v6("[::1"), None);
        assert_eq!(v6("[]"), None);
        assert_eq!(v6("::ffff:1.2.3.4"), None);
        assert_eq!(v6("g::1"), None);
        assert_eq!(ip_literal(b"gw.example"), None);
        assert_eq!(ip_literal(b"1"), None);
    }

    /// A resolver with several addresses per name and a `ds_dns_match_all` switch.
    struct MultiEnv {
        all: bool,
        ips: Vec<IpAddr>,
    }
    impl LoadEnv for MultiEnv {
        fn resolve_host(&mut self, _h: &[u8], _s: Scheme, _p: Proto, _port: u16) -> Option<IpAddr> {
            self.ips.first().copied()
        }
        fn resolve_host_all(&mut self, _h: &[u8], _s: Scheme, _p: Proto, _port: u16) -> Vec<IpAddr> {
            self.ips.clone()
        }
        fn resolve_sip_all(&mut self, _h: &[u8], _s: Scheme, _p: Proto, _port: u16) -> Option<(Vec<IpAddr>, u16, Proto)> {
            Some((self.ips.clone(), 5070, Proto::Tcp))
        }
        fn match_all(&self) -> bool {
            self.all
        }
        fn socket_by_addr(&mut self, _spec: &[u8]) -> usize {
            0
        }
        fn socket_by_name(&mut self, _name: &[u8]) -> usize {
            0
        }
        fn default_socket(&self) -> usize {
            0
        }
        fn allow_ipv6(&self) -> bool {
            true
        }
    }

    #[test]
    fn dns_match_all_keeps_every_address() {
        let ips: Vec<IpAddr> = (1..=40u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        // off (the default): only the first address
        let mut f = MultiEnv { all: false, ips: ips.clone() };
        let (d, _) = prepare_dest(&raw("sip:gw.example", 0, ""), false, DS_DNS_MODE_INIT, &mut f).expect("dest");
        assert_eq!(d.ip, Some(ips[0]));
        assert!(d.more_ips.is_empty());
        // on: up to 32 addresses, the first in `ip`, in the resolver's order
        let mut f = MultiEnv { all: true, ips: ips.clone() };
        let (d, _) = prepare_dest(&raw("sip:gw.example", 0, ""), false, DS_DNS_MODE_INIT, &mut f).expect("dest");
        assert_eq!(d.ip, Some(ips[0]));
        assert_eq!(d.more_ips, ips[1..DNS_MAX_ADDRS].to_vec());
        // SIP resolution (bit 8): every address, and the port/protocol found
        let (d, _) = prepare_dest(&raw("sip:gw.example", 0, ""), false, DS_DNS_MODE_INIT | DS_DNS_MODE_QSRV, &mut f).expect("dest");
        assert_eq!((d.ip, d.more_ips.len(), d.port, d.proto), (Some(ips[0]), DNS_MAX_ADDRS - 1, 5070, Proto::Tcp));
        // an IP literal is one address; flag 16 and dns mode 0 resolve nothing
        let (d, _) = prepare_dest(&raw("sip:10.9.9.9", 0, ""), false, DS_DNS_MODE_INIT, &mut f).expect("dest");
        assert_eq!((d.ip, d.more_ips.len()), (Some(IpAddr::from([10, 9, 9, 9])), 0));
        let (d, _) = prepare_dest(&raw("sip:gw.example", 16, ""), false, DS_DNS_MODE_INIT, &mut f).expect("dest");
        assert_eq!((d.ip, d.more_ips.len()), (None, 0));
        let (d, _) = prepare_dest(&raw("sip:gw.example", 0, ""), false, 0, &mut f).expect("dest");
        assert_eq!((d.ip, d.more_ips.len()), (None, 0));
        // no address at all: rejected as before
        let mut f = MultiEnv { all: true, ips: vec![] };
        assert!(prepare_dest(&raw("sip:gw.example", 0, ""), false, DS_DNS_MODE_INIT, &mut f).is_err());
    }
}
