//! What a reload would change (`dispatcher.diff`), and collecting every error of a list file
//! (`dispatcher.validate`). Pure Rust.

/// One destination as the diff sees it: its key (set, URI) and the configured fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub setid: i32,
    pub uri: Vec<u8>,
    pub flags: i32,
    pub priority: i32,
    pub attrs: Vec<u8>,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add(Row),
    Remove(Row),
    /// (set, URI, [(field, old, new)])
    Change(i32, Vec<u8>, Vec<(&'static str, String, String)>),
}

/// Differences from `old` (running list) to `new` (a source), keyed by (set, URI; the URI
/// compared case-insensitively as the module's lookups do): in `new`'s order the changed and
/// added destinations, then the removed ones in `old`'s order. A URI listed twice in one set
/// is matched occurrence by occurrence.
pub fn diff(old: &[Row], new: &[Row]) -> Vec<Change> {
    let key = |r: &Row| (r.setid, r.uri.to_ascii_lowercase());
    let mut used = vec![false; old.len()];
    let mut out = Vec::new();
    for n in new {
        let k = key(n);
        match old.iter().enumerate().position(|(i, o)| !used[i] && key(o) == k) {
            Some(i) => {
                used[i] = true;
                let o = &old[i];
                let mut f = Vec::new();
                if o.flags != n.flags {
                    f.push(("flags", o.flags.to_string(), n.flags.to_string()));
                }
                if o.priority != n.priority {
                    f.push(("priority", o.priority.to_string(), n.priority.to_string()));
                }
                if o.attrs != n.attrs {
                    f.push(("attrs", String::from_utf8_lossy(&o.attrs).into_owned(), String::from_utf8_lossy(&n.attrs).into_owned()));
                }
                if !f.is_empty() {
                    out.push(Change::Change(n.setid, n.uri.clone(), f));
                }
            }
            None => out.push(Change::Add(n.clone())),
        }
    }
    for (i, o) in old.iter().enumerate() {
        if !used[i] {
            out.push(Change::Remove(o.clone()));
        }
    }
    out
}

/// Runs `parse` until it succeeds, blanking each line it rejects: every parse error of
/// `text`, in line order, plus the result without the bad lines. `parse` returns the
/// 1-based line of its error.
pub fn all_parse_errors<T, E>(text: &[u8], mut parse: impl FnMut(&[u8]) -> Result<T, (usize, E)>) -> (Vec<E>, Option<T>) {
    let mut t = text.to_vec();
    let mut errs = Vec::new();
    let max = text.iter().filter(|&&c| c == b'\n').count() + 2;
    for _ in 0..max {
        match parse(&t) {
            Ok(v) => return (errs, Some(v)),
            Err((line, e)) => {
                errs.push(e);
                if !blank_line(&mut t, line) {
                    return (errs, None);
                }
            }
        }
    }
    (errs, None)
}

/// Replaces line `n` (1-based) by spaces; false when there is no such line.
fn blank_line(t: &mut [u8], n: usize) -> bool {
    let mut line = 1;
    let mut hit = false;
    for c in t.iter_mut() {
        if *c == b'\n' {
            line += 1;
            if line > n {
                break;
            }
            continue;
        }
        if line == n && *c != b' ' {
            *c = b' ';
            hit = true;
        }
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: i32, u: &str, f: i32, p: i32, a: &str) -> Row {
        Row { setid: s, uri: u.into(), flags: f, priority: p, attrs: a.into() }
    }

    #[test]
    fn adds_removes_changes() {
        let old = vec![r(1, "sip:a", 0, 0, ""), r(1, "sip:b", 0, 0, "x=1"), r(2, "sip:a", 0, 0, "")];
        let new = vec![r(1, "sip:A", 0, 5, ""), r(1, "sip:c", 8, 0, ""), r(2, "sip:a", 0, 0, "")];
        let d = diff(&old, &new);
        assert_eq!(
            d,
            vec![
                Change::Change(1, b"sip:A".to_vec(), vec![("priority", "0".into(), "5".into())]),
                Change::Add(r(1, "sip:c", 8, 0, "")),
                Change::Remove(r(1, "sip:b", 0, 0, "x=1")),
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn every_parse_error_is_found() {
        let text = b"1 sip:a\nbad\n2 sip:b\nworse\n";
        let (errs, ok) = all_parse_errors(text, |t| {
            let s = String::from_utf8_lossy(t);
            for (i, l) in s.lines().enumerate() {
                let l = l.trim();
                if !l.is_empty() && !l.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err((i + 1, format!("line {}", i + 1)));
                }
            }
            Ok(s.lines().filter(|l| !l.trim().is_empty()).count())
        });
        assert_eq!(errs, vec!["line 2".to_string(), "line 4".to_string()]);
        assert_eq!(ok, Some(2));
    }
}
