//! A SIP URI parser that accepts and rejects what Kamailio 5.6.3's core `parse_uri` does.
//!
//! The core parser is a lenient, single pass state machine, and the dispatcher relies on its
//! exact verdicts (for example to decide whether a list entry needs a `sip:` prefix). This is
//! an independent implementation of the same automaton. Some of its notable properties:
//!
//! * the scheme is recognised from the first four bytes OR-ed with 0x20 (`sip:`, `sips` followed
//!   by `:`, `tel:`, `urn:`), and the URI must be at least 5 bytes long;
//! * a host reached after `user@` must start with a letter/digit (or `[` for IPv6) and contain
//!   only letters, digits, `.` and `-`; a host that is not preceded by a user is not validated;
//! * a port is at most 5 digits and at most 65535 (a numeric "password" in `user:pass@` is held
//!   to the same limit while it still might be a port);
//! * an `@` found inside what looked like params or headers means that text was the user part;
//! * `;transport=` values `udp`, `tcp`, `tls`, `sctp`, `ws` (any case) set the protocol; any
//!   other value (including `wss`) leaves it unchanged, exactly as in 5.6.3;
//! * for `tel:` URIs the number is reported as the user and the host is empty;
//! * a URI whose last parameter is `ma`, `mad`, `madd`, `maddr` or `maddr=` is rejected
//!   (a gap in the C parser's end-of-input handling).

use std::ops::Range;

/// Transport protocol, numbered like Kamailio's `enum sip_protos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Proto {
    None = 0,
    Udp = 1,
    Tcp = 2,
    Tls = 3,
    Sctp = 4,
    Ws = 5,
    Wss = 6,
    Other = 7,
}

/// URI scheme. `Tels` is never produced by [`parse_uri`] (Kamailio 5.6.3 does not accept it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Tels,
    Urn,
}

/// The parts of a parsed URI, as byte ranges into the parsed input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriParts {
    pub scheme: Scheme,
    pub user: Option<Range<usize>>,
    pub password: Option<Range<usize>>,
    /// IPv6 references keep their `[` `]`. Empty (and not followed by the port) for `tel:`.
    pub host: Range<usize>,
    /// The port text as written; `Some` (possibly empty, as in `sip:h:`) when a `:` port
    /// separator was present.
    pub port_text: Option<Range<usize>>,
    /// Numeric port, 0 when absent or empty.
    pub port: u16,
    /// Parameters without the leading `;`.
    pub params: Option<Range<usize>>,
    /// Headers without the leading `?`.
    pub headers: Option<Range<usize>>,
    /// Protocol from `;transport=`, with Kamailio 5.6.3 semantics: only `udp`, `tcp`, `tls`,
    /// `sctp` and `ws` are recognised (case-insensitive); an unrecognised value leaves it
    /// unchanged, so it is [`Proto::None`] when no recognised transport parameter is present.
    /// Use [`transport_from_name`] with [`uri_param_value`] for a wider classification.
    pub transport: Proto,
}

/// A URI parse error, with a human readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(pub String);

impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

/// Classifies a transport name (case-insensitive): `udp tcp tls sctp ws wss`, anything else
/// non-empty is [`Proto::Other`], empty is [`Proto::None`]. This is the wide classification,
/// not the one `parse_uri` applies to [`UriParts::transport`].
pub fn transport_from_name(name: &[u8]) -> Proto {
    let l = name.to_ascii_lowercase();
    match l.as_slice() {
        b"" => Proto::None,
        b"udp" => Proto::Udp,
        b"tcp" => Proto::Tcp,
        b"tls" => Proto::Tls,
        b"sctp" => Proto::Sctp,
        b"ws" => Proto::Ws,
        b"wss" => Proto::Wss,
        _ => Proto::Other,
    }
}

/// The transport names Kamailio 5.6.3's URI parser turns into a protocol.
fn kamailio_uri_transport(value: &[u8]) -> Option<Proto> {
    let l = value.to_ascii_lowercase();
    match l.as_slice() {
        b"udp" => Some(Proto::Udp),
        b"tcp" => Some(Proto::Tcp),
        b"tls" => Some(Proto::Tls),
        b"sctp" => Some(Proto::Sctp),
        b"ws" => Some(Proto::Ws),
        _ => None,
    }
}

/// Value of the last URI parameter `name` (case-insensitive) that has a non-empty value, as a
/// range into `input`. `params` is the params range of a [`UriParts`] (no leading `;`).
/// Parameters are split at `;` only, which is how the core parser delimits them.
pub fn uri_param_value(input: &[u8], params: Range<usize>, name: &[u8]) -> Option<Range<usize>> {
    let text = input.get(params.clone())?;
    let mut found = None;
    let mut start = 0usize;
    for piece in text.split(|&c| c == b';') {
        if let Some(eq) = piece.iter().position(|&c| c == b'=') {
            let (n, rest) = piece.split_at(eq);
            let v = rest.get(1..).unwrap_or_default();
            if n.eq_ignore_ascii_case(name) && !v.is_empty() {
                let vs = params.start + start + eq + 1;
                found = Some(vs..vs + v.len());
            }
        }
        start += piece.len() + 1;
    }
    found
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// first character after the scheme
    Init,
    /// user part, or the host when no `@` follows
    User,
    /// after `user:`: a password, or the port when no `@` follows
    Password,
    /// the password contains a non-digit: it cannot be a port any more
    PasswordAlpha,
    /// first character of the host, after `@`
    Host,
    /// inside a host name / IPv4 address
    HostName,
    /// inside `[...]`
    Host6,
    /// right after the closing `]`
    Host6End,
    Port,
    Params,
    Headers,
}

fn err(msg: impl Into<String>) -> UriError {
    UriError(msg.into())
}

fn show(c: u8) -> String {
    if c.is_ascii_graphic() || c == b' ' {
        format!("'{}'", c as char)
    } else {
        format!("0x{c:02x}")
    }
}

/// Everything collected while scanning; reset (except the scheme) when an `@` shows that
/// the text scanned so far was the user part.
#[derive(Default)]
struct Acc {
    user: Option<Range<usize>>,
    password: Option<Range<usize>>,
    host: Option<Range<usize>>,
    port_text: Option<Range<usize>>,
    port: u32,
    params: Option<Range<usize>>,
    headers: Option<Range<usize>>,
    proto: Option<Proto>,
}

struct Parser<'a> {
    buf: &'a [u8],
    st: St,
    /// start of the current component
    s: usize,
    acc: Acc,
    found_user: bool,
    /// position of a `:` seen in params/headers that may separate user and password
    pass: Option<usize>,
    error_headers: bool,
    port_no: u32,
    /// start of the parameter being scanned (in `St::Params`)
    param_start: usize,
}

impl<'a> Parser<'a> {
    /// Digit of a port: accumulate and check the 65535 limit.
    fn port_digit(&mut self, c: u8, p: usize) -> Result<(), UriError> {
        self.port_no = self.port_no * 10 + u32::from(c - b'0');
        if self.port_no > 65535 {
            return Err(err(format!(
                "bad port in uri (value too large at byte {p})"
            )));
        }
        Ok(())
    }

    /// A `:` while the user is still unknown may separate user and password; a second one
    /// means there is no user part.
    fn colon(&mut self, p: usize) {
        if self.found_user {
            return;
        }
        if self.pass.take().is_some() {
            self.found_user = true;
        } else {
            self.pass = Some(p);
        }
    }

    /// A `;` or `?` after a possible `user:` ends the chance of a user:password.
    fn drop_pass(&mut self) {
        if self.pass.take().is_some() {
            self.found_user = true;
        }
    }

    /// Looks at one finished `name=value` parameter (`param_start..end`).
    fn finish_param(&mut self, end: usize) {
        let Some(piece) = self.buf.get(self.param_start..end) else {
            return;
        };
        if let Some(eq) = piece.iter().position(|&c| c == b'=') {
            let (n, rest) = piece.split_at(eq);
            let v = rest.get(1..).unwrap_or_default();
            if n.eq_ignore_ascii_case(b"transport") {
                if let Some(pr) = kamailio_uri_transport(v) {
                    self.acc.proto = Some(pr);
                }
            }
        }
    }

    /// An `@` inside params or headers: what was scanned so far is the user (and password).
    fn still_at_user(&mut self, p: usize) -> Result<(), UriError> {
        if self.found_user {
            return Err(err(format!("bad char '@' at byte {p}")));
        }
        let ustart = self.acc.host.as_ref().map(|h| h.start).unwrap_or(self.s);
        let (user, password) = match self.pass {
            Some(q) => (ustart..q, Some(q + 1..p)),
            None => (ustart..p, None),
        };
        self.acc = Acc {
            user: Some(user),
            password,
            ..Acc::default()
        };
        self.s = p + 1;
        self.found_user = true;
        self.error_headers = false;
        self.st = St::Host;
        Ok(())
    }

    /// `@` `;` `?` `:` handling in the parameters (the C parser shares it between all its
    /// parameter name/value states).
    fn param_char(&mut self, c: u8, p: usize) -> Result<(), UriError> {
        match c {
            b'@' => self.still_at_user(p)?,
            b';' => {
                self.finish_param(p);
                self.drop_pass();
                self.param_start = p + 1;
            }
            b'?' => {
                self.finish_param(p);
                self.acc.params = Some(self.s..p);
                self.st = St::Headers;
                self.s = p + 1;
                self.drop_pass();
            }
            b':' => self.colon(p),
            _ => {}
        }
        Ok(())
    }

    /// The end of a host (`:` `;` `?`) after a validated host name or an IPv6 reference.
    /// Returns Ok(false) when `c` does not end the host.
    fn host_end(&mut self, c: u8, p: usize) -> Result<bool, UriError> {
        match c {
            b':' => {
                self.acc.host = Some(self.s..p);
                self.st = St::Port;
            }
            b';' => {
                self.acc.host = Some(self.s..p);
                self.st = St::Params;
                self.param_start = p + 1;
            }
            b'?' => {
                self.acc.host = Some(self.s..p);
                self.st = St::Headers;
            }
            b'&' | b'@' => return Err(err(format!("bad char {} in host at byte {p}", show(c)))),
            _ => return Ok(false),
        }
        self.s = p + 1;
        Ok(true)
    }

    fn step(&mut self, c: u8, p: usize) -> Result<(), UriError> {
        match self.st {
            St::Init => match c {
                b'[' => {
                    self.st = St::Host6;
                    self.s = p;
                }
                b']' | b':' => return Err(err(format!("bad char {} at start of uri", show(c)))),
                _ => self.st = St::User,
            },
            St::User => match c {
                b'@' => {
                    if p == self.s {
                        return Err(err(format!("empty user before '@' at byte {p}")));
                    }
                    self.acc.user = Some(self.s..p);
                    self.st = St::Host;
                    self.found_user = true;
                    self.s = p + 1;
                }
                b':' => {
                    self.acc.user = Some(self.s..p);
                    self.st = St::Password;
                    self.s = p + 1;
                }
                b';' => {
                    self.acc.host = Some(self.s..p);
                    self.st = St::Params;
                    self.s = p + 1;
                    self.param_start = p + 1;
                }
                b'?' => {
                    self.acc.host = Some(self.s..p);
                    self.st = St::Headers;
                    self.s = p + 1;
                }
                b'[' | b']' => {
                    return Err(err(format!("bad char {} in user at byte {p}", show(c))))
                }
                _ => {}
            },
            St::Password => match c {
                b'@' => {
                    self.acc.password = Some(self.s..p);
                    self.port_no = 0;
                    self.st = St::Host;
                    self.found_user = true;
                    self.s = p + 1;
                }
                b';' | b'?' => {
                    // it was `host:port`
                    self.acc.port_text = Some(self.s..p);
                    self.acc.port = self.port_no;
                    self.acc.host = self.acc.user.take();
                    self.found_user = true;
                    self.s = p + 1;
                    if c == b';' {
                        self.st = St::Params;
                        self.param_start = p + 1;
                    } else {
                        self.st = St::Headers;
                    }
                }
                b'0'..=b'9' => self.port_digit(c, p)?,
                b'[' | b']' | b':' => {
                    return Err(err(format!(
                        "bad char {} in password/port at byte {p}",
                        show(c)
                    )))
                }
                _ => {
                    self.port_no = 0;
                    self.st = St::PasswordAlpha;
                }
            },
            St::PasswordAlpha => match c {
                b'@' => {
                    self.acc.password = Some(self.s..p);
                    self.st = St::Host;
                    self.found_user = true;
                    self.s = p + 1;
                }
                b';' | b'?' => {
                    return Err(err(format!("bad port in uri (non-digit) before byte {p}")))
                }
                b'[' | b']' | b':' => {
                    return Err(err(format!("bad char {} in password at byte {p}", show(c))))
                }
                _ => {}
            },
            St::Host => {
                if c == b'[' {
                    self.st = St::Host6;
                } else if c.is_ascii_alphanumeric() {
                    self.st = St::HostName;
                } else {
                    return Err(err(format!(
                        "bad host in uri (char {} at byte {p})",
                        show(c)
                    )));
                }
            }
            St::HostName => {
                if !(self.host_end(c, p)? || c.is_ascii_alphanumeric() || c == b'.' || c == b'-') {
                    return Err(err(format!(
                        "bad host in uri (char {} at byte {p})",
                        show(c)
                    )));
                }
            }
            St::Host6End => {
                if !self.host_end(c, p)? {
                    return Err(err(format!(
                        "bad host in uri (char {} after ']' at byte {p})",
                        show(c)
                    )));
                }
            }
            St::Host6 => match c {
                b']' => self.st = St::Host6End,
                b'[' | b'&' | b'@' | b';' | b'?' => {
                    return Err(err(format!(
                        "bad IPv6 reference (char {} at byte {p})",
                        show(c)
                    )))
                }
                _ => {}
            },
            St::Port => match c {
                b';' | b'?' => {
                    self.acc.port_text = Some(self.s..p);
                    self.acc.port = self.port_no;
                    self.s = p + 1;
                    if c == b';' {
                        self.st = St::Params;
                        self.param_start = p + 1;
                    } else {
                        self.st = St::Headers;
                    }
                }
                b'0'..=b'9' => self.port_digit(c, p)?,
                _ => {
                    return Err(err(format!(
                        "bad port in uri (char {} at byte {p})",
                        show(c)
                    )))
                }
            },
            St::Params => self.param_char(c, p)?,
            St::Headers => match c {
                b'@' => self.still_at_user(p)?,
                b';' => {
                    if self.found_user {
                        return Err(err(format!("bad char ';' in headers at byte {p}")));
                    }
                    self.error_headers = true;
                    if self.pass.is_some() {
                        return Err(err("bad uri headers"));
                    }
                }
                b':' => self.colon(p),
                b'?' => self.drop_pass(),
                _ => {}
            },
        }
        Ok(())
    }

    /// End of input: close the component being scanned.
    fn finish(&mut self, is_urn: bool) -> Result<(), UriError> {
        let p = self.buf.len();
        match self.st {
            St::Init => return Err(err("uri too short")),
            St::User => {
                if self.found_user {
                    return Err(err("bad uri"));
                }
                self.acc.host = Some(self.s..p);
            }
            St::Password => {
                if self.found_user {
                    return Err(err("bad port in uri"));
                }
                self.acc.port_text = Some(self.s..p);
                self.acc.port = self.port_no;
                self.acc.host = self.acc.user.take();
            }
            St::PasswordAlpha => {
                if is_urn {
                    self.acc.host = Some(self.s..p);
                } else {
                    return Err(err("bad port in uri (non-digit)"));
                }
            }
            St::HostName | St::Host6End => self.acc.host = Some(self.s..p),
            St::Host => return Err(err("bad host in uri (empty host)")),
            St::Host6 => return Err(err("bad host in uri (unterminated IPv6 reference)")),
            St::Port => {
                self.acc.port_text = Some(self.s..p);
                self.acc.port = self.port_no;
            }
            St::Params => {
                // Kamailio quirk: its end-of-input handling has no case for the states that
                // scan a partial `maddr=` name, so a URI whose last parameter is exactly
                // `ma`, `mad`, `madd`, `maddr` or `maddr=` (any case) is rejected.
                let last = self.buf.get(self.param_start..p).unwrap_or_default();
                if last.len() >= 2
                    && last.len() <= 6
                    && b"maddr="
                        .get(..last.len())
                        .is_some_and(|m| last.eq_ignore_ascii_case(m))
                {
                    return Err(err("bad uri (unterminated maddr parameter)"));
                }
                self.finish_param(p);
                self.acc.params = Some(self.s..p);
            }
            St::Headers => {
                self.acc.headers = Some(self.s..p);
                if self.error_headers {
                    return Err(err("bad uri headers"));
                }
            }
        }
        Ok(())
    }
}

/// Parses a SIP/SIPS/TEL/URN URI like Kamailio 5.6.3's `parse_uri`.
pub fn parse_uri(buf: &[u8]) -> Result<UriParts, UriError> {
    if buf.len() < 5 {
        return Err(err("uri too short"));
    }
    let lower = |i: usize| buf.get(i).map(|c| c | 0x20).unwrap_or(0);
    let head = [lower(0), lower(1), lower(2), lower(3)];
    let (scheme, start) = match &head {
        b"sip:" => (Scheme::Sip, 4),
        b"sips" if buf.get(4) == Some(&b':') => (Scheme::Sips, 5),
        b"tel:" => (Scheme::Tel, 4),
        b"urn:" => (Scheme::Urn, 4),
        _ => return Err(err("bad uri (unknown or missing scheme)")),
    };
    let mut ps = Parser {
        buf,
        st: St::Init,
        s: start,
        acc: Acc::default(),
        found_user: false,
        pass: None,
        error_headers: false,
        port_no: 0,
        param_start: start,
    };
    for (p, &c) in buf.iter().enumerate().skip(start) {
        ps.step(c, p)?;
    }
    ps.finish(scheme == Scheme::Urn)?;
    let mut acc = ps.acc;
    let mut host = acc.host.take().unwrap_or(start..start);
    if scheme == Scheme::Tel {
        // the number is the user; the host is empty
        acc.user = Some(host.clone());
        host = host.end..host.end;
    }
    if acc.port_text.as_ref().map(|r| r.len()).unwrap_or(0) > 5 {
        return Err(err("bad port in uri (more than 5 digits)"));
    }
    if !host.is_empty() && acc.user.as_ref().map(|u| u.is_empty()).unwrap_or(true) {
        let before = host.start.checked_sub(1).and_then(|i| buf.get(i));
        if host.start > 0 && (before == Some(&b'@') || buf.get(host.start) == Some(&b'@')) {
            return Err(err("bad uri ('@' without a user part)"));
        }
    }
    Ok(UriParts {
        scheme,
        user: acc.user,
        password: acc.password,
        host,
        port_text: acc.port_text,
        port: u16::try_from(acc.port).unwrap_or(0),
        params: acc.params,
        headers: acc.headers,
        transport: acc.proto.unwrap_or(Proto::None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sl<'a>(b: &'a [u8], r: &Option<Range<usize>>) -> Option<&'a str> {
        r.clone().map(|r| std::str::from_utf8(&b[r]).expect("utf8"))
    }

    fn ok(u: &str) -> UriParts {
        parse_uri(u.as_bytes()).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    fn host(u: &str) -> String {
        let p = ok(u);
        String::from_utf8(u.as_bytes()[p.host].to_vec()).expect("utf8")
    }

    #[test]
    fn basic() {
        let u = "sip:alice@example.com";
        let p = ok(u);
        assert_eq!(p.scheme, Scheme::Sip);
        assert_eq!(sl(u.as_bytes(), &p.user), Some("alice"));
        assert_eq!(host(u), "example.com");
        assert_eq!(p.port, 0);
        assert_eq!(p.port_text, None);
        assert_eq!(p.params, None);
        assert_eq!(p.headers, None);
        assert_eq!(p.transport, Proto::None);
    }

    #[test]
    fn ipv6_port_transport() {
        let u = "sip:[::1]:5080;transport=tcp";
        let p = ok(u);
        assert_eq!(host(u), "[::1]");
        assert_eq!(p.user, None);
        assert_eq!(p.port, 5080);
        assert_eq!(sl(u.as_bytes(), &p.port_text), Some("5080"));
        assert_eq!(sl(u.as_bytes(), &p.params), Some("transport=tcp"));
        assert_eq!(p.transport, Proto::Tcp);
        let u = "sip:bob@[2001:db8::1]";
        assert_eq!(host(u), "[2001:db8::1]");
        assert!(parse_uri(b"sip:[::1").is_err());
        assert!(parse_uri(b"sip:[::1]x").is_err());
        assert!(parse_uri(b"sip:u@[::1]x:5060").is_err());
    }

    #[test]
    fn user_password_params_headers() {
        let u = "sips:alice:secret@Host.Example.com:5061;lr;Transport=TLS;x=y?subject=hi&a=b";
        let b = u.as_bytes();
        let p = ok(u);
        assert_eq!(p.scheme, Scheme::Sips);
        assert_eq!(sl(b, &p.user), Some("alice"));
        assert_eq!(sl(b, &p.password), Some("secret"));
        assert_eq!(host(u), "Host.Example.com");
        assert_eq!(p.port, 5061);
        assert_eq!(sl(b, &p.params), Some("lr;Transport=TLS;x=y"));
        assert_eq!(sl(b, &p.headers), Some("subject=hi&a=b"));
        assert_eq!(p.transport, Proto::Tls);
        // numeric password
        let u = "sip:alice:1234@h";
        assert_eq!(sl(u.as_bytes(), &ok(u).password), Some("1234"));
        // numeric password too large to be a port: rejected like Kamailio does
        assert!(parse_uri(b"sip:alice:99999@h").is_err());
    }

    #[test]
    fn transports() {
        let t = |u: &str| ok(u).transport;
        assert_eq!(t("sip:h;transport=udp"), Proto::Udp);
        assert_eq!(t("sip:h;transport=UDP;lr"), Proto::Udp);
        assert_eq!(t("sip:h:5060;transport=sctp?x=y"), Proto::Sctp);
        assert_eq!(t("sip:h;transport=ws"), Proto::Ws);
        assert_eq!(t("sip:h;transport=wss"), Proto::None);
        assert_eq!(t("sip:h;transport=foo"), Proto::None);
        assert_eq!(t("sip:h;transport=tcp;transport=foo"), Proto::Tcp);
        assert_eq!(t("sip:h;transport=tcp;transport=udp"), Proto::Udp);
        assert_eq!(t("sip:h;xtransport=tcp"), Proto::None);
        assert_eq!(t("sip:h;transport="), Proto::None);
        assert_eq!(transport_from_name(b"WSS"), Proto::Wss);
        assert_eq!(transport_from_name(b"foo"), Proto::Other);
        assert_eq!(transport_from_name(b""), Proto::None);
    }

    #[test]
    fn param_value_helper() {
        let u = b"sip:h;user=phone;user=;x=1";
        let p = parse_uri(u).expect("ok");
        let r = uri_param_value(u, p.params.clone().expect("params"), b"USER").expect("user");
        assert_eq!(&u[r], b"phone");
        assert!(uri_param_value(u, p.params.expect("params"), b"y").is_none());
    }

    #[test]
    fn rejects() {
        for bad in [
            "127.0.0.1:5060",
            "example.invalid",
            "",
            "sip:",
            "sips:",
            "sipsx:a",
            "sip:@",
            "sip:alice@",
            "sip:alice@:5060",
            "sip:alice@host:50a0",
            "sip:alice@host:65536",
            "sip:host:70000",
            "sip:host:000005060",
            "sip:alice@ho_st",
            "sip:alice@-host;x",
            "sip:@host",
            "sip::5060",
            "sip:]",
            "sip:a[b",
            "sip:a:b",
            "sip:host:abc;x=y",
            "sip:a@b@c",
            "sip:a@b:5060@c",
            "sip:u@h?a;b",
            "sip:h?a;b",
            "http://x",
            "tels:+123",
            "sip:h;maddr=",
            "sip:h;lr;MAdd",
            "sip:h;ma",
        ] {
            assert!(
                parse_uri(bad.as_bytes()).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn lenient_cases_kamailio_accepts() {
        // a host not preceded by a user is not validated
        assert_eq!(host("sip:my_host"), "my_host");
        assert_eq!(host("SIP:EXAMPLE.COM"), "EXAMPLE.COM");
        // empty port after ':'
        let p = ok("sip:host:");
        assert_eq!(p.port, 0);
        assert_eq!(p.port_text, Some(9..9));
        assert_eq!(host("sip:host:"), "host");
        // leading zeros within 5 characters
        assert_eq!(ok("sip:h:05060").port, 5060);
        assert_eq!(ok("sip:h:65535").port, 65535);
        // empty params
        assert_eq!(ok("sip:a;").params, Some(6..6));
        // only the maddr prefixes at the very end are rejected
        assert!(parse_uri(b"sip:h;maddr=1.2.3.4").is_ok());
        assert!(parse_uri(b"sip:h;maddr=;lr").is_ok());
        assert!(parse_uri(b"sip:h;m").is_ok());
        assert!(parse_uri(b"sip:h;maddrx").is_ok());
    }

    #[test]
    fn at_sign_in_params_means_user() {
        let u = "sip:a;transport=tcp@host.com:5070;transport=udp";
        let b = u.as_bytes();
        let p = ok(u);
        assert_eq!(sl(b, &p.user), Some("a;transport=tcp"));
        assert_eq!(host(u), "host.com");
        assert_eq!(p.port, 5070);
        assert_eq!(p.transport, Proto::Udp);
        let u = "sip:a;x=1@h";
        let p = ok(u);
        assert_eq!(sl(u.as_bytes(), &p.user), Some("a;x=1"));
        assert_eq!(p.transport, Proto::None);
        // a user:password whose user contains ';'
        let u = "sip:a;b:pw@h";
        let p = ok(u);
        assert_eq!(sl(u.as_bytes(), &p.user), Some("a;b"));
        assert_eq!(sl(u.as_bytes(), &p.password), Some("pw"));
        // header-looking user
        let u = "sip:a?b;c@h";
        let p = ok(u);
        assert_eq!(sl(u.as_bytes(), &p.user), Some("a?b;c"));
        assert_eq!(p.headers, None);
    }

    #[test]
    fn tel_and_urn() {
        let u = "tel:+1-555-0100;phone-context=example.com";
        let p = ok(u);
        assert_eq!(p.scheme, Scheme::Tel);
        assert_eq!(sl(u.as_bytes(), &p.user), Some("+1-555-0100"));
        assert!(p.host.is_empty());
        assert_eq!(
            sl(u.as_bytes(), &p.params),
            Some("phone-context=example.com")
        );
        let u = "urn:service:sos";
        let p = ok(u);
        assert_eq!(p.scheme, Scheme::Urn);
        assert_eq!(host(u), "sos");
    }
}
