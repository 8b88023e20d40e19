//! Where a key of cairn.toml is written: the line of `jobs.nightly.schedule`
//! for an error about its value, and the key path at the place the TOML
//! parser stopped. Errors then name the file, the line and the key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The 1-based line holding byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The span of the key `path` (dotted: `jobs.nightly.schedule`), or of
/// the nearest table above it that is written, if the text parses.
pub fn span_of(text: &str, path: &[&str]) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for (i, part) in path.iter().enumerate() {
        let (key, value) = table.get_key_value(*part)?;
        found = Some(key.span());
        if i + 1 == path.len() {
            break;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found
}

/// The dotted key path whose key or value covers byte `offset`: where a
/// parse error (an unknown key, a wrong type) points.
pub fn path_at(text: &str, offset: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(doc.get_ref(), offset, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

fn walk(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    for (key, value) in table.iter() {
        let covers = |s: Range<usize>| s.start <= offset && offset < s.end.max(s.start + 1);
        if covers(key.span()) {
            path.push(key.get_ref().to_string());
            return;
        }
        if let DeValue::Table(t) = value.get_ref() {
            if contains(t, offset) {
                path.push(key.get_ref().to_string());
                walk(t, offset, path);
                return;
            }
        }
        if covers(Spanned::span(value)) {
            path.push(key.get_ref().to_string());
            return;
        }
    }
}

/// Whether any key or value of `table` (at any depth) covers `offset`.
fn contains(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(k, v)| {
        let s = k.span();
        let vs = v.span();
        (s.start <= offset && offset < s.end)
            || (vs.start <= offset && offset < vs.end)
            || matches!(v.get_ref(), DeValue::Table(t) if contains(t, offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "[backends.a]\nurl = \"/x\"\n\n[jobs.nightly]\nschedule = \"bad\"\nbackup = [\"/srv\"]\n";

    #[test]
    fn keys_are_found_on_their_lines() {
        let s = span_of(TEXT, &["jobs", "nightly", "schedule"]).unwrap();
        assert_eq!(line_of(TEXT, s.start), 5);
        let s = span_of(TEXT, &["jobs", "nightly"]).unwrap();
        assert_eq!(line_of(TEXT, s.start), 4);
        assert!(span_of(TEXT, &["jobs", "other"]).is_none());
    }

    #[test]
    fn the_key_at_an_offset() {
        let at = TEXT.find("\"bad\"").unwrap() + 1;
        assert_eq!(path_at(TEXT, at).as_deref(), Some("jobs.nightly.schedule"));
        let at = TEXT.find("backup").unwrap();
        assert_eq!(path_at(TEXT, at).as_deref(), Some("jobs.nightly.backup"));
    }
}
