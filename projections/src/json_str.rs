//! Strings read out of stored JSON text without copying them: [`JsonStr`] is a JSON
//! string literal (with its quotes) inside text a read model stored, kept where it is
//! so that a page can write it into an answer as it is (decision 69).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// A JSON string literal, quotes included, as the text it was read from holds it.
/// Equality, order and display are those of the string it stands for (escapes
/// decoded), so two literals of one string with different escapes are equal.
#[derive(Clone, Copy)]
pub struct JsonStr<'a> {
    literal: &'a str,
    /// No backslash in the literal (found once, where it is read).
    plain: bool,
}

impl<'a> JsonStr<'a> {
    /// `literal` if it is one JSON string literal (quotes included, nothing around
    /// it).
    pub fn parse(literal: &'a str) -> Option<JsonStr<'a>> {
        let raw = serde_json::from_str::<&serde_json::value::RawValue>(literal).ok()?;
        // the whole text, a string (whitespace around it is not part of the literal)
        (raw.get().len() == literal.len() && literal.starts_with('"')).then(|| JsonStr::of(literal))
    }

    /// `literal`, known to be one JSON string literal.
    fn of(literal: &'a str) -> JsonStr<'a> {
        JsonStr {
            literal,
            plain: !literal.as_bytes().contains(&b'\\'),
        }
    }

    /// The literal as JSON text: what serializing the string writes whenever
    /// [`JsonStr::is_plain`] (a literal without escapes needs none, and serde
    /// escapes only quotes, backslashes and control characters).
    pub fn json(self) -> &'a str {
        self.literal
    }

    /// Whether the literal has no escape: its text between the quotes is the string.
    pub fn is_plain(self) -> bool {
        self.plain
    }

    /// The string the literal stands for.
    pub fn get(self) -> Cow<'a, str> {
        if self.plain {
            Cow::Borrowed(&self.literal[1..self.literal.len() - 1])
        } else {
            // a literal checked when it was read: it decodes
            Cow::Owned(serde_json::from_str(self.literal).unwrap_or_default())
        }
    }
}

impl PartialEq for JsonStr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.literal == other.literal || (!(self.plain && other.plain) && self.get() == other.get())
    }
}

impl Eq for JsonStr<'_> {}

impl PartialEq<str> for JsonStr<'_> {
    fn eq(&self, other: &str) -> bool {
        self.get() == other
    }
}

impl PartialEq<&str> for JsonStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.get() == *other
    }
}

impl PartialEq<String> for JsonStr<'_> {
    fn eq(&self, other: &String) -> bool {
        self.get() == other.as_str()
    }
}

impl Ord for JsonStr<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.get().cmp(&other.get())
    }
}

impl PartialOrd for JsonStr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.get())
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.get(), f)
    }
}

/// Where a string literal is in a shared text: the text is kept once ([`Arc`]) and
/// each string is two offsets into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    start: u32,
    end: u32,
    plain: bool,
}

impl Span {
    /// Where `literal`, a subslice of `source`, is in it; `None` if it is not a
    /// JSON string literal of `source` (or `source` is 4 GiB or more).
    pub fn of(source: &str, literal: &str) -> Option<Span> {
        let plain = !literal.as_bytes().contains(&b'\\');
        Span::with(source, literal, plain)
    }

    /// [`Span::of`] for a literal its reader found no backslash in.
    pub(crate) fn unescaped(source: &str, literal: &str) -> Option<Span> {
        Span::with(source, literal, true)
    }

    fn with(source: &str, literal: &str, plain: bool) -> Option<Span> {
        let start = (literal.as_ptr() as usize).checked_sub(source.as_ptr() as usize)?;
        let end = start + literal.len();
        if end > source.len() || !literal.starts_with('"') || literal.len() < 2 {
            return None;
        }
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
            plain,
        })
    }

    /// The literal in `source`, the text [`Span::of`] found it in.
    pub fn in_text(self, source: &str) -> JsonStr<'_> {
        JsonStr {
            literal: &source[self.start as usize..self.end as usize],
            plain: self.plain,
        }
    }
}

/// A string as a JSON literal of its own (for a string that does not come from
/// stored JSON text but is written next to ones that do).
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedJsonStr {
    literal: Arc<str>,
    plain: bool,
}

impl OwnedJsonStr {
    pub fn new(text: &str) -> OwnedJsonStr {
        // a string always serializes
        let literal: Arc<str> = Arc::from(serde_json::to_string(text).unwrap_or_default());
        let plain = JsonStr::of(&literal).plain;
        OwnedJsonStr { literal, plain }
    }

    pub fn as_json_str(&self) -> JsonStr<'_> {
        JsonStr {
            literal: &self.literal,
            plain: self.plain,
        }
    }
}

impl fmt::Debug for OwnedJsonStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_json_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_stands_for_its_decoded_string() {
        let text = r#"["plain","tab\there","\u0041B","é",""]"#;
        let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).unwrap();
        let spans: Vec<Span> = raw
            .iter()
            .map(|r| Span::of(text, r.get()).unwrap())
            .collect();
        let strs: Vec<JsonStr> = spans.iter().map(|s| s.in_text(text)).collect();
        let decoded: Vec<String> = serde_json::from_str(text).unwrap();
        for (s, d) in strs.iter().zip(&decoded) {
            assert_eq!(s.get(), d.as_str());
            assert_eq!(s.to_string(), *d);
            assert_eq!(*s, d.as_str());
            assert_eq!(s.is_plain(), !s.json().contains('\\'));
            if s.is_plain() {
                // copied as it is, it is what serde writes
                assert_eq!(s.json(), serde_json::to_string(d).unwrap());
            }
        }
        // equal strings with other escapes are equal, and order by the string
        assert_eq!(strs[2], JsonStr::parse("\"AB\"").unwrap());
        assert_ne!(strs[0], strs[1]);
        assert!(strs[4] < strs[2] && strs[2] < strs[0]);
        // not a literal of the text, or not a string
        assert!(Span::of(text, "\"plain\"").is_none());
        assert!(JsonStr::parse("12").is_none());
        assert!(JsonStr::parse("\"a\" ").is_none());
        assert!(JsonStr::parse("\"a\u{1}\"").is_none());
        let owned = OwnedJsonStr::new("say \"hi\"");
        assert_eq!(owned.as_json_str().json(), r#""say \"hi\"""#);
        assert_eq!(owned.as_json_str(), "say \"hi\"");
    }
}
