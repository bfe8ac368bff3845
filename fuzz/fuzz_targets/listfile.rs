//! List-file parser: `parse_list` on arbitrary bytes. Byte 0 picks the emulated release.
//! Checks: no panic; every entry's URI and attrs are where the entry says in the input, hold
//! no separator, and the entries come in file order; an error points into the input.
use dispatcher::ds::listfile::{parse_list, FGETS_BUF};
use dispatcher_fuzz::Cfg;

fn check(text: &[u8]) {
    // physical line starts
    let mut starts = vec![0usize];
    for (i, &c) in text.iter().enumerate() {
        if c == b'\n' {
            starts.push(i + 1);
        }
    }
    match parse_list(text, "fuzz.list") {
        Ok(entries) => {
            let mut last = (0usize, 0usize);
            for e in &entries {
                assert!(e.line >= 1 && e.line <= starts.len() && e.col >= 1, "position {}:{}", e.line, e.col);
                assert!((e.line, e.col) > last, "file order");
                last = (e.line, e.col);
                let at = starts[e.line - 1] + e.col - 1;
                assert_eq!(text.get(at..at + e.uri.len()), Some(&e.uri[..]), "uri at its position");
                assert!(!e.uri.is_empty());
                assert!(!e.uri.iter().any(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'#' | 0)), "uri separator");
                assert!(!e.attrs.iter().any(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0)), "attrs separator");
                assert!(e.uri.len() + e.attrs.len() < FGETS_BUF, "one chunk");
                // the attrs are in the same line, after the uri
                if !e.attrs.is_empty() {
                    let end = text.get(at..).map(|r| r.len()).unwrap_or(0);
                    let line = &text[at..at + end.min(FGETS_BUF)];
                    assert!(line.windows(e.attrs.len()).any(|w| w == &e.attrs[..]), "attrs in the line");
                }
            }
        }
        Err(err) => {
            assert!(err.line >= 1 && err.line <= starts.len() && err.col >= 1);
            assert!(err.to_string().starts_with("fuzz.list:"));
        }
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&b, text)) = data.split_first() else { return };
        Cfg::from_byte(b).apply();
        check(text);
    });
}
