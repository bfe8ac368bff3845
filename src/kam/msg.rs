//! The SIP message: destination URI, R-URI host, sending socket, source address, headers.
use std::net::IpAddr;
use std::os::raw::{c_char, c_int};

use crate::ds::select::AddrList;
use crate::kam::param::unsafe_bytes;
use crate::sys;

/// The (user, host[:port]) keys of a URI hash; either may be absent.
pub type HashKeys<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A borrowed `sip_msg*` handed to a cfg function by the core.
#[derive(Clone, Copy)]
pub struct Msg(pub *mut sys::sip_msg);

fn kstr(b: &[u8]) -> sys::str_ {
    sys::str_ { s: b.as_ptr() as *mut c_char, len: b.len() as c_int }
}

impl Msg {
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
    fn m(&self) -> &sys::sip_msg {
        // SAFETY: cfg functions get a valid message from the core for the whole call.
        unsafe { &*self.0 }
    }
    /// Current `$du` (empty when unset).
    pub fn dst_uri(&self) -> &[u8] {
        unsafe_bytes(self.m().dst_uri)
    }
    /// Sets `$du` and marks the R-URI as new (re-used for the branch), as the C module does.
    pub fn set_dst_uri(&self, uri: &[u8]) -> bool {
        let s = kstr(uri);
        // SAFETY: set_dst_uri copies the value into pkg memory owned by the message.
        let rc = unsafe { sys::set_dst_uri(self.0, &s) };
        if rc < 0 {
            return false;
        }
        // SAFETY: ruri_is_new is a plain int global of the core (what ruri_mark_new() sets).
        unsafe { sys::ruri_is_new = 1 };
        true
    }
    /// Replaces host, port, params and headers of the R-URI by `hostall` (dispatcher's
    /// "domain" mode), through the core's own SET_HOSTALL action.
    pub fn set_ruri_hostall(&self, uri: &[u8]) -> bool {
        let rest: &[u8] = if uri.len() > 4 && uri[..4].eq_ignore_ascii_case(b"sip:") {
            &uri[4..]
        } else if uri.len() > 5 && uri[..5].eq_ignore_ascii_case(b"sips:") {
            &uri[5..]
        } else {
            uri
        };
        let mut z = rest.to_vec();
        z.push(0);
        let mut act: sys::action = Default::default();
        act.type_ = sys::action_type_SET_HOSTALL_T;
        act.val[0].type_ = sys::_operand_subtype_STRING_ST as _;
        act.val[0].u.string = z.as_mut_ptr() as *mut c_char;
        let mut ctx: sys::run_act_ctx = Default::default();
        // SAFETY: the action is fully initialised, the string outlives the call and the core
        // copies what it keeps into the message.
        unsafe { sys::do_action(&mut ctx, &mut act, self.0) >= 0 }
    }
    /// Forces the sending socket (opaque `socket_info*`, 0 = leave as is). Like the core
    /// macro `set_force_socket` the C module uses from 5.6.5/5.7.1/5.8.0 on, this also sets
    /// `SND_F_FORCE_SOCKET` in the message's forwarding send flags (so that, e.g., a new TCP
    /// connection is bound to that socket's address); 5.6.3 and 5.7.0 set only the pointer.
    pub fn force_socket(&self, sock: usize) {
        if sock == 0 {
            return;
        }
        let with_flag = force_socket_flag();
        // SAFETY: the handle is a socket_info* obtained from the core at load time; the
        // socket list lives for the whole run; the message is valid for the cfg call.
        unsafe {
            (*self.0).force_send_socket = sock as *mut sys::socket_info;
            if with_flag {
                (*self.0).fwd_send_flags.f |= SND_F_FORCE_SOCKET;
            }
        }
    }
    /// Source IP, port and protocol of the received message.
    pub fn source(&self) -> (Option<IpAddr>, u16, u8) {
        let rcv = &self.m().rcv;
        (ip_from_kam(&rcv.src_ip), rcv.src_port, rcv.proto as u8)
    }
    /// The socket the message was received on (`rcv.bind_address`, an opaque
    /// `socket_info*`; 0 when none), as compared with a destination's `socket`.
    pub fn bind_address(&self) -> usize {
        self.m().rcv.bind_address as usize
    }
}

/// `SND_F_FORCE_SOCKET` of the core's `send_flags_t` (ip_addr.h; 1 << 2 in every release).
pub const SND_F_FORCE_SOCKET: u16 = 1 << 2;

/// Whether the emulated release's C module sets `SND_F_FORCE_SOCKET` with the socket
/// (`set_force_socket` in `ds_push_dst`: 5.6.5+, 5.7.1+, 5.8.0+; not 5.6.0–5.6.4, 5.7.0).
pub fn force_socket_flag() -> bool {
    use crate::ds::compat::{get, val};
    let v = get();
    (v >= val(5, 6, 5) && v < val(5, 7, 0)) || v >= val(5, 7, 1)
}

/// Converts a core `ip_addr` into a std address.
pub fn ip_from_kam(ip: &sys::ip_addr) -> Option<IpAddr> {
    // SAFETY: reading the byte view of the address union is always valid.
    let b = unsafe { ip.u.addr };
    match ip.af as i32 {
        libc::AF_INET => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        libc::AF_INET6 => Some(IpAddr::from(b)),
        _ => None,
    }
}

/// Resolves a host name with the core resolver (honours the core DNS settings and cache).
/// Only the first address is used, like the C module.
pub fn resolve_host(host: &[u8]) -> Option<IpAddr> {
    resolve_host_ttl(host, 0)
}

/// TTL (`ds_dns_ttl`) given to answers stored in the core DNS cache by our lookups.
static DNS_TTL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
pub fn set_dns_ttl(ttl: i32) {
    DNS_TTL.store(ttl.max(0), std::sync::atomic::Ordering::Relaxed);
}

fn with_ttl<R>(f: impl FnOnce() -> R) -> R {
    let ttl = DNS_TTL.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain core calls setting a process-local DNS cache parameter.
    unsafe {
        if ttl > 0 {
            sys::dns_set_local_ttl(ttl);
        }
        let r = f();
        if ttl > 0 {
            sys::dns_set_local_ttl(0);
        }
        r
    }
}

/// Every address of a hostent (up to the list's capacity), in order.
fn hostent_ips(he: *mut sys::hostent, out: &mut AddrList) {
    out.clear();
    // SAFETY: `he` is null or the resolver's static hostent, read immediately; the address
    // list is NULL-terminated and each entry has `h_length` bytes.
    unsafe {
        if he.is_null() || (*he).h_addr_list.is_null() {
            return;
        }
        let (af, len) = ((*he).h_addrtype, (*he).h_length);
        let mut i = 0usize;
        while !out.is_full() {
            let a = *(*he).h_addr_list.add(i) as *const u8;
            if a.is_null() {
                break;
            }
            match af {
                libc::AF_INET if len == 4 => {
                    let s = std::slice::from_raw_parts(a, 4);
                    out.push(IpAddr::from([s[0], s[1], s[2], s[3]]));
                }
                libc::AF_INET6 if len == 16 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(std::slice::from_raw_parts(a, 16));
                    out.push(IpAddr::from(o));
                }
                _ => break,
            }
            i += 1;
        }
    }
}

/// A host name as a NUL-terminated C string: on the stack for names up to 255 bytes (every
/// destination host: longer ones are rejected at load), on the heap otherwise.
/// `f` gets the string and its length without the NUL (a name is cut at an embedded NUL).
fn with_cstr<R>(host: &[u8], f: impl FnOnce(*mut c_char, usize) -> R) -> R {
    let host = host.split(|&c| c == 0).next().unwrap_or(&[]);
    let mut buf = [0u8; 256];
    if host.len() < buf.len() {
        buf[..host.len()].copy_from_slice(host);
        f(buf.as_mut_ptr() as *mut c_char, host.len())
    } else {
        let mut z = host.to_vec();
        z.push(0);
        f(z.as_mut_ptr() as *mut c_char, host.len())
    }
}

/// Resolves `host` with the core resolver into `out`: every address of the answer (an IP
/// literal is one address). False when it does not resolve. No heap allocation for hosts up
/// to 255 bytes.
pub fn resolve_host_into(host: &[u8], out: &mut AddrList) -> bool {
    out.clear();
    if let Some(ip) = crate::ds::dest::ip_literal(host) {
        out.push(ip);
        return true;
    }
    // SAFETY: the C string outlives the call; the hostent is read before the next lookup.
    let he = with_cstr(host, |p, _| with_ttl(|| unsafe { sys::dns_resolvehost(p) }));
    hostent_ips(he, out);
    !out.is_empty()
}

/// SIP resolution (NAPTR/SRV/A) into `out` (every address of the answer): the port and
/// protocol id found. None when it does not resolve.
pub fn sip_resolve_into(host: &[u8], port: u16, proto: u8, out: &mut AddrList) -> Option<(u16, u8)> {
    out.clear();
    let mut p = port;
    let mut pr = proto as c_char;
    let he = with_cstr(host, |z, n| {
        let mut s = sys::str_ { s: z, len: n as c_int };
        // SAFETY: the host buffer outlives the call; port/proto are in/out values.
        with_ttl(|| unsafe { sys::dns_sip_resolvehost(&mut s, &mut p, &mut pr) })
    });
    hostent_ips(he, out);
    if out.is_empty() {
        None
    } else {
        Some((p, pr as u8))
    }
}

/// SIP resolution (NAPTR/SRV/A) with the core resolver: address, port, protocol id.
pub fn sip_resolve(host: &[u8], port: u16, proto: u8) -> Option<(IpAddr, u16, u8)> {
    let mut out = AddrList::new();
    let (p, pr) = sip_resolve_into(host, port, proto, &mut out)?;
    out.first().map(|ip| (ip, p, pr))
}

fn resolve_host_ttl(host: &[u8], _unused: i32) -> Option<IpAddr> {
    let mut out = AddrList::new();
    // IP literals the way the core reads them (str2ip/str2ip6), without DNS
    if resolve_host_into(host, &mut out) {
        out.first()
    } else {
        None
    }
}

/// Local listening socket for "proto:host:port" (None when not a local socket).
pub fn socket_by_addr(spec: &[u8]) -> Option<usize> {
    let mut z = spec.to_vec();
    z.push(0);
    let mut host: *mut c_char = std::ptr::null_mut();
    let (mut hlen, mut port, mut proto) = (0 as c_int, 0 as c_int, 0 as c_int);
    // SAFETY: z is NUL-terminated and outlives both calls; outputs point into z.
    unsafe {
        if sys::parse_phostport(z.as_mut_ptr() as *mut c_char, &mut host, &mut hlen, &mut port, &mut proto) != 0 {
            return None;
        }
        let mut h = sys::str_ { s: host, len: hlen };
        let si = sys::grep_sock_info(&mut h, port as u16, proto as u16);
        if si.is_null() { None } else { Some(si as usize) }
    }
}

/// Local listening socket by its `name` (listen=... name "x").
pub fn socket_by_name(name: &[u8]) -> Option<usize> {
    let mut v = name.to_vec();
    let mut s = sys::str_ { s: v.as_mut_ptr() as *mut c_char, len: v.len() as c_int };
    // SAFETY: the name buffer outlives the call; the socket list is static after startup.
    let si = unsafe { sys::ksr_get_socket_by_name(&mut s) };
    if si.is_null() { None } else { Some(si as usize) }
}

/// Text form of an address exactly as the core prints it (`ip_addr2sbufz`: IPv6 in [ ]).
pub fn ip_text(ip: Option<IpAddr>) -> String {
    let Some(ip) = ip else { return String::new() };
    let mut k: sys::ip_addr = Default::default();
    match ip {
        IpAddr::V4(v4) => {
            k.af = libc::AF_INET as _;
            k.len = 4;
            // SAFETY: writing the byte view of the address union.
            unsafe { k.u.addr[..4].copy_from_slice(&v4.octets()) };
        }
        IpAddr::V6(v6) => {
            k.af = libc::AF_INET6 as _;
            k.len = 16;
            k.u.addr = v6.octets();
        }
    }
    let mut buf = [0u8; 64];
    // SAFETY: the buffer is larger than IP_ADDR_MAX_STRZ_SIZE; the core writes at most len bytes.
    let n = unsafe { sys::ip_addr2sbufz(&mut k, buf.as_mut_ptr() as *mut c_char, buf.len() as c_int) };
    if n <= 0 {
        return String::new();
    }
    String::from_utf8_lossy(&buf[..(n as usize).min(buf.len())]).into_owned()
}

fn hdr_flag(t: sys::hdr_types_t) -> sys::hdr_flags_t {
    // HDR_T2F(): one bit per header type
    (1 as sys::hdr_flags_t) << t
}

/// `ds::trim_ws` (spaces, tabs, CR, LF at both ends), without its scans when both ends are
/// already other characters (the usual header body).
#[inline]
pub fn trim(b: &[u8]) -> &[u8] {
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if !ws(f) && !ws(l) => b,
        _ => crate::ds::trim_ws(b),
    }
}

impl Msg {
    /// Call-ID body (not trimmed), None when missing/unparsable.
    pub fn callid(&self) -> Option<&[u8]> {
        // SAFETY: parse_headers fills msg->callid within the message's own memory.
        unsafe {
            if (*self.0).callid.is_null()
                && (sys::parse_headers(self.0, hdr_flag(sys::_hdr_types_t_HDR_CALLID_T), 0) == -1 || (*self.0).callid.is_null())
            {
                return None;
            }
            Some(unsafe_bytes((*(*self.0).callid).body))
        }
    }
    /// From URI (trimmed).
    pub fn from_uri(&self) -> Option<&[u8]> {
        // SAFETY: parse_from_header parses into msg->from->parsed (a to_body in pkg).
        unsafe {
            if sys::parse_from_header(self.0) < 0 || (*self.0).from.is_null() || (*(*self.0).from).parsed.is_null() {
                return None;
            }
            let tb = (*(*self.0).from).parsed as *const sys::to_body;
            Some(trim(unsafe_bytes((*tb).uri)))
        }
    }
    /// To URI (trimmed).
    pub fn to_uri(&self) -> Option<&[u8]> {
        // SAFETY: parse_headers parses the To header into msg->to->parsed (a to_body).
        unsafe {
            if (*self.0).to.is_null()
                && (sys::parse_headers(self.0, hdr_flag(sys::_hdr_types_t_HDR_TO_T), 0) == -1 || (*self.0).to.is_null())
            {
                return None;
            }
            let p = (*(*self.0).to).parsed as *const sys::to_body;
            if p.is_null() {
                return None;
            }
            Some(trim(unsafe_bytes((*p).uri)))
        }
    }
    /// The current R-URI (`$ru`: the new URI when rewritten), None when it does not parse.
    pub fn ruri(&self) -> Option<&[u8]> {
        // SAFETY: parse_sip_msg_uri validates the current R-URI of the message.
        if unsafe { sys::parse_sip_msg_uri(self.0) } < 0 {
            return None;
        }
        Some(self.ruri_raw())
    }
    /// Hash keys of the current R-URI from the core's own parse (`msg->parsed_uri`), as the
    /// C module builds them: user, and host extended with `:port` when the port is explicit
    /// and not the scheme default. None when the R-URI does not parse or has no host.
    pub fn ruri_hash_keys(&self, user_only: bool) -> Option<HashKeys<'_>> {
        // SAFETY: parse_sip_msg_uri fills msg->parsed_uri, whose strings point into the
        // message's R-URI buffer; the host and port text are contiguous there ("host:port").
        unsafe {
            if sys::parse_sip_msg_uri(self.0) < 0 {
                return None;
            }
            let pu = &(*self.0).parsed_uri;
            if pu.host.s.is_null() {
                return None;
            }
            let user = if pu.user.s.is_null() { None } else { Some(unsafe_bytes(pu.user)) };
            if user_only {
                return Some((user, None));
            }
            let mut len = pu.host.len.max(0) as usize;
            if !pu.port.s.is_null() {
                let dflt = if pu.type_ == sys::_uri_type_SIPS_URI_T { 5061 } else { 5060 };
                if pu.port_no != dflt {
                    len += pu.port.len.max(0) as usize + 1;
                }
            }
            let host = std::slice::from_raw_parts(pu.host.s as *const u8, len);
            Some((user, Some(host)))
        }
    }
    /// The current R-URI text (`new_uri` when rewritten, else the request line), unparsed.
    pub fn ruri_raw(&self) -> &[u8] {
        let m = self.m();
        if !m.new_uri.s.is_null() && m.new_uri.len > 0 {
            unsafe_bytes(m.new_uri)
        } else {
            // SAFETY: the request part of the first-line union (cfg functions run on requests).
            unsafe_bytes(unsafe { m.first_line.u.request.uri })
        }
    }
    /// Digest username (user part) from Proxy-Authorization, else Authorization.
    /// Ok(None): no usable credentials; Err: header parse error.
    #[allow(clippy::result_unit_err)] // Err(()): the core has logged the parse error
    pub fn auth_user(&self) -> Result<Option<Vec<u8>>, ()> {
        // SAFETY: header parsing into the message's own structures, then read-only access.
        unsafe {
            let m = self.0;
            if sys::parse_headers(m, hdr_flag(sys::_hdr_types_t_HDR_PROXYAUTH_T), 0) == -1 {
                return Err(());
            }
            let mut h = (*m).proxy_auth;
            if !h.is_null() && (*h).parsed.is_null() {
                sys::parse_credentials(h);
            }
            if h.is_null() || (*h).parsed.is_null() {
                if sys::parse_headers(m, hdr_flag(sys::_hdr_types_t_HDR_AUTHORIZATION_T), 0) == -1 {
                    return Err(());
                }
                h = (*m).authorization;
                if !h.is_null() && (*h).parsed.is_null() {
                    sys::parse_credentials(h);
                }
                if h.is_null() || (*h).parsed.is_null() {
                    return Ok(None);
                }
            }
            let cred = (*h).parsed as *const sys::auth_body_t;
            let u = (*cred).digest.username.user;
            if u.len <= 0 {
                return Ok(None);
            }
            Ok(Some(trim(unsafe_bytes(u)).to_vec()))
        }
    }
    /// For `ds_load_update`: (is request, method id, CSeq method is INVITE, reply status).
    pub fn load_info(&self) -> Option<(bool, i32, bool, u32)> {
        // SAFETY: header parsing into the message; then read-only access to parsed bodies.
        unsafe {
            let m = self.0;
            if sys::parse_headers(m, hdr_flag(sys::_hdr_types_t_HDR_CSEQ_T) | hdr_flag(sys::_hdr_types_t_HDR_CALLID_T), 0) != 0
                || (*m).cseq.is_null()
                || (*m).callid.is_null()
            {
                return None;
            }
            let fl = &(*m).first_line;
            if fl.type_ == 1 {
                return Some((true, fl.u.request.method_value, false, 0));
            }
            let cs = (*(*m).cseq).parsed as *const sys::cseq_body;
            let inv = !cs.is_null() && (*cs).method_id == 1;
            Some((false, 0, inv, fl.u.reply.statuscode))
        }
    }
    /// True for an INVITE request.
    pub fn is_invite(&self) -> bool {
        let m = self.m();
        // SAFETY: reading the request part of the first-line union is valid for requests.
        m.first_line.type_ == 1 && unsafe { m.first_line.u.request.method_value } == 1
    }
    /// Appends a branch (parallel forking, alg 12). `dst` empty = none.
    pub fn append_branch(&self, uri: &[u8], dst: &[u8], sock: usize) -> bool {
        let mut u = kstr(uri);
        let mut d = kstr(dst);
        // SAFETY: append_branch copies everything into the branch set of this process.
        unsafe {
            sys::append_branch(
                self.0,
                &mut u,
                if dst.is_empty() { std::ptr::null_mut() } else { &mut d },
                std::ptr::null_mut(),
                -1, // Q_UNSPECIFIED
                0,
                sock as *mut sys::socket_info,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ) >= 0
        }
    }
    /// Whether the R-URI has a user part (for alg 12 in R-URI mode) and the R-URI user.
    pub fn ruri_user(&self) -> Option<Vec<u8>> {
        let r = self.ruri()?;
        let p = crate::ds::uri::parse_uri(r).ok()?;
        p.user.and_then(|u| r.get(u)).map(|u| u.to_vec())
    }
}
