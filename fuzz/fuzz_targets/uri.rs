//! URI parser: `parse_uri` and what is built on it (hash keys, transport parameter, IP
//! literals, transport defaulting) on arbitrary bytes. Byte 0 picks the release.
//! Checks: no panic; every range lies inside the input and in order; the port matches its text;
//! the hash keys are slices of the URI.
use dispatcher::ds::dest::{default_transport, ip_literal};
use dispatcher::ds::hash::{ds_hash, uri_hash_keys};
use dispatcher::ds::uri::{parse_uri, transport_from_name, uri_param_value, Scheme};
use dispatcher_fuzz::Cfg;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&b, uri)) = data.split_first() else { return };
        Cfg::from_byte(b).apply();
        let Ok(p) = parse_uri(uri) else {
            assert!(uri_hash_keys(uri, false).is_err());
            return;
        };
        let n = uri.len();
        let ok = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= n;
        assert!(ok(&p.host), "host range");
        for r in [&p.user, &p.password, &p.port_text, &p.params, &p.headers].into_iter().flatten() {
            assert!(ok(r), "range {r:?} in {n}");
        }
        if let Some(u) = &p.user {
            assert!(u.end <= p.host.start, "user before host");
        }
        if let Some(pt) = &p.port_text {
            assert!(pt.start >= p.host.end, "port after host");
            let txt = &uri[pt.clone()];
            if let Some(v) = std::str::from_utf8(txt).ok().and_then(|t| t.parse::<u16>().ok()) {
                // as in C, the port accumulator is not reset when a later '@' turns what was
                // read so far into the user part (`sip:h:5?x@h2:70` has port 570): the text's
                // value is then the low decimal digits of the port
                if txt.len() >= 6 {
                    assert_eq!(u32::from(v), u32::from(p.port), "port value");
                } else {
                    assert_eq!(u32::from(p.port) % 10u32.pow(txt.len() as u32), u32::from(v), "port value");
                }
            }
        } else {
            assert_eq!(p.port, 0);
        }
        if let Some(pr) = &p.params {
            assert!(pr.start >= p.host.end);
            for name in [&b"transport"[..], b"user", b"lr", b""] {
                if let Some(v) = uri_param_value(uri, pr.clone(), name) {
                    assert!(ok(&v) && v.start >= pr.start && v.end <= pr.end && !v.is_empty());
                    let _ = transport_from_name(&uri[v]);
                }
            }
        }
        if p.scheme == Scheme::Tel {
            assert!(p.host.is_empty());
        }
        let host = &uri[p.host.clone()];
        let _ = ip_literal(host);
        let _ = default_transport(host, p.port, p.scheme, p.transport);
        for user_only in [false, true] {
            let (x, y) = uri_hash_keys(uri, user_only).expect("hash keys of a parsed uri");
            if let Some(x) = x.as_ref().filter(|x| !x.is_empty()) {
                assert!(uri.windows(x.len()).any(|w| w == &x[..]), "user key is part of the uri");
            }
            assert_eq!(y.is_none(), user_only);
            let _ = ds_hash(x.as_deref(), y.as_deref());
        }
    });
}
