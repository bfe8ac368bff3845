//! Pure helpers of the differential selection test (tests/it_diff.rs): a seeded PRNG, the
//! SIP request generator, reply extraction, and the chi-square goodness-of-fit test with
//! the expected distributions of the random algorithms (6, 9, 11). Nothing here starts a
//! process or opens a socket.
#![allow(dead_code)]

use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, seedable, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Pick by integer weights: `items` are (weight, value).
    pub fn weighted<'a, T>(&mut self, items: &'a [(u32, T)]) -> &'a T {
        let total: u32 = items.iter().map(|(w, _)| *w).sum();
        let mut r = self.below(total as usize) as u32;
        for (w, v) in items {
            if r < *w {
                return v;
            }
            r -= w;
        }
        &items[items.len() - 1].1
    }

    pub fn alnum(&mut self, min: usize, max: usize) -> Vec<u8> {
        const CS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| CS[self.below(CS.len())]).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Request generator
// ---------------------------------------------------------------------------------------

/// One generated request; `render` adds the Via for the sending socket (the only part that
/// differs between the two instances).
#[derive(Clone, Debug)]
pub struct Msg {
    pub seq: u32,
    pub method: &'static str,
    pub ruri: Vec<u8>,
    /// From header value without the tag
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub callid: Vec<u8>,
    /// complete extra header lines, without CRLF
    pub headers: Vec<Vec<u8>>,
}

impl Msg {
    pub fn render(&self, via_port: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(512);
        m.extend_from_slice(self.method.as_bytes());
        m.push(b' ');
        m.extend_from_slice(&self.ruri);
        m.extend_from_slice(b" SIP/2.0\r\n");
        m.extend_from_slice(
            format!("Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK-diff-{};rport\r\n", self.seq).as_bytes(),
        );
        m.extend_from_slice(b"From: ");
        m.extend_from_slice(&self.from);
        m.extend_from_slice(format!(";tag=df{}\r\n", self.seq).as_bytes());
        m.extend_from_slice(b"To: ");
        m.extend_from_slice(&self.to);
        m.extend_from_slice(b"\r\nCall-ID: ");
        m.extend_from_slice(&self.callid);
        m.extend_from_slice(format!("\r\nCSeq: {} {}\r\nMax-Forwards: 70\r\n", self.seq, self.method).as_bytes());
        for h in &self.headers {
            m.extend_from_slice(h);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        m
    }

    /// The request as printable text (non-ASCII bytes escaped), Via shown with port 0.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for line in self.render(0).split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let _ = writeln!(s, "    {}", esc(line));
        }
        s
    }
}

/// Bytes as text, non-printable and non-ASCII bytes as \xNN.
pub fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// How the instance pair computes hash_pvar (alg 7): decides whether X-Hash is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashPvar {
    /// `$hdr(X-Hash)`
    Header,
    /// `$fU@$ci`
    FromUserCallId,
}

/// Generates the request sequence for one algorithm. The sequence depends only on the
/// seed (never on replies), so both instances see exactly the same requests in the same
/// order.
pub struct Gen {
    rng: Rng,
    pub alg: u32,
    seq: u32,
    hash_pvar: HashPvar,
    /// Call-IDs of INVITEs sent (alg 10: BYE/CANCEL release their load)
    open_calls: Vec<Vec<u8>>,
    /// deterministic algorithms, for the extra rules of ds_select_routes
    det_algs: Vec<u32>,
}

/// The sets of tests/data/diff/diff.list plus one unknown set, with pick weights.
const SETS: &[(u32, &str)] = &[(10, "1"), (28, "2"), (40, "3"), (5, "4"), (8, "5"), (5, "6"), (6, "7"), (2, "77")];

impl Gen {
    pub fn new(seed: u64, alg: u32, first_seq: u32, hash_pvar: HashPvar, det_algs: &[u32]) -> Gen {
        Gen {
            rng: Rng::new(seed ^ (alg as u64).wrapping_mul(0x1000_0000_01B3)),
            alg,
            seq: first_seq,
            hash_pvar,
            open_calls: Vec::new(),
            det_algs: det_algs.to_vec(),
        }
    }

    fn user(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(14) {
            0 => b"alice".to_vec(),
            1 => b"bob".to_vec(),
            2 => b"carol".to_vec(),
            3 => b"Alice".to_vec(),
            4 => b"+4930123456".to_vec(),
            5 => b"ren\xc3\xa9".to_vec(),            // UTF-8 é
            6 => b"\xe9t\xe9".to_vec(),              // latin-1 é (raw 0xE9)
            7 => b"\xc3\xa9t\xc3\xa9".to_vec(),      // "été" in UTF-8
            8 => b"a.b-c_d!~*".to_vec(),
            9 => b"%41lice".to_vec(),
            10 => format!("{}", r.next_u64() % 100_000).into_bytes(),
            _ => r.alnum(1, 14),
        }
    }

    fn host(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(12) {
            0 => b"example.com".to_vec(),
            1 => b"Example.COM".to_vec(),
            2 => b"server.com".to_vec(),
            3 => b"10.0.0.1".to_vec(),
            4 => b"127.0.0.1".to_vec(),
            5 => b"[2001:db8::1]".to_vec(),
            6 => b"example.org".to_vec(),
            7 => b"h\xc3\xa9.test".to_vec(),
            _ => {
                let mut h = b"h".to_vec();
                h.extend(r.alnum(1, 6));
                h.extend_from_slice(b".example.net");
                h
            }
        }
    }

    /// A SIP/SIPS/TEL URI with and without user, port (incl. the default ports) and params.
    fn uri(&mut self) -> Vec<u8> {
        let scheme: &[u8] = *self.rng.weighted(&[(75, &b"sip"[..]), (18, &b"sips"[..]), (4, &b"tel"[..]), (3, &b"SIP"[..])]);
        if scheme == b"tel" {
            let mut u = b"tel:+".to_vec();
            u.extend(format!("{}", self.rng.next_u64() % 1_000_000_000).into_bytes());
            return u;
        }
        let mut u = scheme.to_vec();
        u.push(b':');
        if !self.rng.chance(0.1) {
            u.extend(self.user());
            u.push(b'@');
        }
        u.extend(self.host());
        let port: &str = *self.rng.weighted(&[(45, ""), (15, "5060"), (15, "5061"), (12, "5080"), (5, "65535"), (4, "05060"), (4, "1")]);
        if !port.is_empty() {
            u.push(b':');
            u.extend_from_slice(port.as_bytes());
        }
        let params: &str = *self.rng.weighted(&[(70, ""), (10, ";transport=tcp"), (8, ";user=phone"), (6, ";lr"), (6, "?subject=x")]);
        u.extend_from_slice(params.as_bytes());
        u
    }

    /// A From/To header value (no tag).
    fn name_addr(&mut self) -> Vec<u8> {
        let uri = self.uri();
        match self.rng.below(10) {
            0 | 1 => {
                let mut v = b"\"Display N\xc3\xa4me\" <".to_vec();
                v.extend(uri);
                v.push(b'>');
                v
            }
            2 => uri.iter().copied().filter(|&c| c != b'?').collect(), // bare URI (no headers part)
            _ => {
                let mut v = b"<".to_vec();
                v.extend(uri);
                v.push(b'>');
                v
            }
        }
    }

    fn callid(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(12) {
            0 => {
                let mut c = r.alnum(4, 10);
                c.extend_from_slice(b"\xc3\xa9\xe9");
                c
            }
            1 => r.alnum(1, 2),
            2 => format!("{}", r.next_u64()).into_bytes(),
            3 | 4 | 5 => {
                let mut c = r.alnum(8, 20);
                c.extend_from_slice(b"@");
                c.extend(r.alnum(3, 8));
                c
            }
            _ => r.alnum(6, 32),
        }
    }

    fn digest(&mut self, hname: &str) -> Vec<u8> {
        let mut h = format!("{hname}: ").into_bytes();
        let r = &mut self.rng;
        match r.below(14) {
            0 => h.extend_from_slice(b"Digest garbage"),
            1 => h.extend_from_slice(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            2 => h.extend_from_slice(b"Digest realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"00\""),
            _ => {
                let user: Vec<u8> = match r.below(9) {
                    0 => b"".to_vec(),
                    1 => b"alice@example.com".to_vec(),
                    2 => b"\xe9t\xe9".to_vec(),
                    3 => b"ren\xc3\xa9@d".to_vec(),
                    4 => b"carol".to_vec(),
                    5 => b"bob".to_vec(),
                    _ => r.alnum(1, 10),
                };
                h.extend_from_slice(b"Digest username=\"");
                h.extend(user);
                h.extend_from_slice(b"\", realm=\"example.com\", nonce=\"abc123\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"");
                if r.chance(0.3) {
                    h.extend_from_slice(b", algorithm=MD5");
                }
            }
        }
        h
    }

    fn rules(&mut self) -> Vec<u8> {
        let n = 1 + self.rng.below(3);
        let mut s = Vec::new();
        for i in 0..n {
            if i > 0 {
                s.push(b';');
            }
            let set: &str = *self.rng.weighted(SETS);
            s.extend_from_slice(set.as_bytes());
            s.push(b'=');
            match self.rng.below(20) {
                0 => {} // empty alg: 0
                1 => s.push(b'x'), // invalid character
                2..=5 => {
                    let a = *self.rng.pick(&self.det_algs);
                    s.extend(a.to_string().into_bytes());
                }
                _ => s.extend(self.alg.to_string().into_bytes()),
            }
        }
        if self.rng.chance(0.2) {
            s.push(b';');
        }
        s
    }

    pub fn next_msg(&mut self) -> Msg {
        self.seq += 1;
        let seq = self.seq;
        let alg = self.alg;
        let release = !self.open_calls.is_empty();
        let method: &'static str = if alg == 10 {
            *self.rng.weighted(&[(52, "INVITE"), (if release { 28 } else { 0 }, "BYE"), (5, "CANCEL"), (10, "OPTIONS"), (5, "MESSAGE")])
        } else {
            *self.rng.weighted(&[(50, "INVITE"), (25, "OPTIONS"), (15, "MESSAGE"), (10, "BYE")])
        };
        let callid = match method {
            "BYE" | "CANCEL" if release && self.rng.chance(0.9) => {
                let i = self.rng.below(self.open_calls.len());
                self.open_calls.swap_remove(i)
            }
            "INVITE" if release && self.rng.chance(0.04) => {
                // duplicate Call-ID: alg 10 cannot add a second load entry
                self.open_calls[self.rng.below(self.open_calls.len())].clone()
            }
            _ => self.callid(),
        };
        if method == "INVITE" && !self.open_calls.contains(&callid) {
            self.open_calls.push(callid.clone());
        }
        let ruri = self.uri();
        let from = self.name_addr();
        let to = self.name_addr();
        let func: &str = *self.rng.weighted(&[(45, "dst"), (20, "domain"), (15, "select"), (20, "routes")]);
        let set: &str = *self.rng.weighted(SETS);
        let mut headers: Vec<Vec<u8>> = Vec::new();
        headers.push(format!("X-Set: {}", if func == "routes" { "0" } else { set }).into_bytes());
        headers.push(format!("X-Alg: {alg}").into_bytes());
        headers.push(format!("X-Func: {func}").into_bytes());
        let limit: &str = *self.rng.weighted(&[(28, ""), (10, "0"), (22, "1"), (20, "2"), (15, "3"), (5, "40")]);
        if !limit.is_empty() {
            headers.push(format!("X-Limit: {limit}").into_bytes());
        }
        if func == "routes" {
            let mut h = b"X-Rules: ".to_vec();
            h.extend(self.rules());
            headers.push(h);
            let mode: &str =
                *self.rng.weighted(&[(20, "d"), (20, "r"), (20, "x"), (5, "D"), (5, "R"), (5, "X"), (5, "0"), (5, "1"), (5, "2"), (3, "rx"), (2, "q")]);
            headers.push(format!("X-Mode: {mode}").into_bytes());
        }
        if self.hash_pvar == HashPvar::Header && self.rng.chance(0.9) {
            let mut h = b"X-Hash: ".to_vec();
            match self.rng.below(10) {
                0 => {}                                   // empty value
                1 => h.extend_from_slice(b"  padded  "), // trimmed by hash_pvar handling
                2 => h.extend_from_slice(b"\xe9t\xe9"),
                3 => h.extend_from_slice(b"\xc3\xa9t\xc3\xa9"),
                _ => h.extend(self.rng.alnum(1, 24)),
            }
            headers.push(h);
        }
        // credentials: mostly relevant for alg 5, harmless elsewhere
        if self.rng.chance(0.55) {
            match self.rng.below(5) {
                0 => {
                    let h = self.digest("Proxy-Authorization");
                    headers.push(h);
                }
                1 => {
                    let h = self.digest("Proxy-Authorization");
                    headers.push(h);
                    let h = self.digest("Authorization");
                    headers.push(h);
                }
                _ => {
                    let h = self.digest("Authorization");
                    headers.push(h);
                }
            }
        }
        Msg { seq, method, ruri, from, to, callid, headers }
    }
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// The comparable part of a reply: the status line and every `X-O-*` header line, in
/// order, as raw bytes.
pub fn reply_lines(raw: &[u8]) -> Vec<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let mut out = Vec::new();
    for (i, line) in raw[..head_end].split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i == 0 || line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"X-O-") {
            out.push(line.to_vec());
        }
    }
    out
}

/// The CSeq number of a reply (to match it with its request).
pub fn reply_cseq(raw: &[u8]) -> Option<u32> {
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"CSeq:") {
            let v = String::from_utf8_lossy(&line[5..]).into_owned();
            return v.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Value of the first header line `name: value` among `lines` (as text).
pub fn line_value(lines: &[Vec<u8>], name: &str) -> Option<String> {
    let p = format!("{name}:");
    lines
        .iter()
        .find(|l| l.len() >= p.len() && l[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
        .map(|l| String::from_utf8_lossy(&l[p.len()..]).trim().to_string())
}

// ---------------------------------------------------------------------------------------
// Chi-square
// ---------------------------------------------------------------------------------------

/// ln Γ(x) for x > 0 (Lanczos, g=7, n=9).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (series / continued fraction).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        // P by series, Q = 1 - P
        let mut ap = a;
        let mut sum = 1.0 / a;
        let mut del = sum;
        for _ in 0..1000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - gln).exp()
    } else {
        // Lentz continued fraction
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (-x + a * x.ln() - gln).exp() * h
    }
}

/// The p-value threshold a correct implementation passes (p > P_MIN).
pub const P_MIN: f64 = 0.001;

#[derive(Clone, Debug)]
pub struct ChiSquare {
    pub chi2: f64,
    pub df: usize,
    pub p: f64,
    /// observations in categories whose expected probability is 0
    pub impossible: u64,
}

impl ChiSquare {
    pub fn passes(&self) -> bool {
        self.impossible == 0 && self.df > 0 && self.p > P_MIN
    }
}

/// Goodness of fit of `observed` counts to the probabilities `expected` (summing to 1).
/// Categories with expected probability 0 do not enter the statistic; any observation
/// there is counted in `impossible` (and fails `passes`).
pub fn chi_square(observed: &[u64], expected: &[f64]) -> ChiSquare {
    assert_eq!(observed.len(), expected.len());
    let n: u64 = observed.iter().sum();
    let mut chi2 = 0.0;
    let mut k = 0usize;
    let mut impossible = 0;
    for (o, p) in observed.iter().zip(expected) {
        if *p <= 0.0 {
            impossible += o;
            continue;
        }
        k += 1;
        let e = p * n as f64;
        let d = *o as f64 - e;
        chi2 += d * d / e;
    }
    let df = k.saturating_sub(1);
    let p = if df == 0 { 1.0 } else { gamma_q(df as f64 / 2.0, chi2 / 2.0) };
    ChiSquare { chi2, df, p, impossible }
}

// ---------------------------------------------------------------------------------------
// Expected distributions of the random algorithms (spec §6.1/§6.2, no use_default)
// ---------------------------------------------------------------------------------------

/// One destination of a set, in array order.
#[derive(Clone, Debug)]
pub struct DestSpec {
    pub weight: u32,
    pub rweight: u32,
    pub usable: bool,
}

/// Index `i` after the linear forward probe over unusable destinations.
fn probe(dests: &[DestSpec], i: usize) -> Option<usize> {
    let n = dests.len();
    (0..n).map(|k| (i + k) % n).find(|&j| dests[j].usable)
}

/// Per-slot probabilities (before probing) -> per-destination probabilities.
fn after_probe(dests: &[DestSpec], slot_p: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; dests.len()];
    for (i, p) in slot_p.iter().enumerate() {
        if let Some(j) = probe(dests, i) {
            out[j] += p;
        }
    }
    out
}

/// Alg 6: `rand % nr`, then the probe.
pub fn expected_alg6(dests: &[DestSpec]) -> Vec<f64> {
    let n = dests.len();
    after_probe(dests, &vec![1.0 / n as f64; n])
}

/// Alg 9: the 100-slot weight table built in array order (only when the first weight is
/// non-zero; the rest filled with nr-1), then the probe (the table is not rebuilt on
/// state changes).
pub fn expected_alg9(dests: &[DestSpec]) -> Vec<f64> {
    let n = dests.len();
    let w = |d: &DestSpec| if (1..=100).contains(&d.weight) { d.weight } else { 0 };
    let mut slots = vec![0usize; 100];
    if w(&dests[0]) != 0 {
        let mut k = 0;
        for (j, d) in dests.iter().enumerate() {
            for _ in 0..w(d) {
                if k < 100 {
                    slots[k] = j;
                    k += 1;
                }
            }
        }
        for s in slots.iter_mut().skip(k) {
            *s = n - 1;
        }
    }
    let mut slot_p = vec![0.0; n];
    for s in slots {
        slot_p[s] += 0.01;
    }
    after_probe(dests, &slot_p)
}

/// Alg 11: the 100-slot table rebuilt over the usable destinations, floor(rw*100/sum)
/// slots each, the rest filled with the last index written.
pub fn expected_alg11(dests: &[DestSpec]) -> Vec<f64> {
    let n = dests.len();
    let rw = |d: &DestSpec| if d.usable && (1..=100).contains(&d.rweight) { d.rweight } else { 0 };
    let sum: u32 = dests.iter().map(rw).sum();
    assert!(sum > 0, "expected_alg11: no usable destination with an rweight");
    let mut slot_p = vec![0.0; n];
    let mut written = 0u32;
    let mut last = n - 1;
    for (j, d) in dests.iter().enumerate() {
        let c = rw(d) * 100 / sum;
        if c > 0 {
            slot_p[j] += c as f64 / 100.0;
            written += c;
            last = j;
        }
    }
    slot_p[last] += (100 - written) as f64 / 100.0;
    after_probe(dests, &slot_p)
}
