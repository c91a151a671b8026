//! Canonical JSON serialisation.
//!
//! Content hashes are only useful if the same JSON value always produces the same
//! bytes, whatever order its object keys arrived in and however it was indented.
//! This module defines that one byte form:
//!
//! * object keys sorted by their UTF-8 bytes (which is also Unicode code point order),
//! * no insignificant whitespace,
//! * strings escaped exactly the way `serde_json` escapes them (`"`, `\` and control
//!   characters only; everything else, including non-ASCII, is written verbatim),
//! * numbers printed exactly the way `serde_json` prints them.
//!
//! Key order is sorted explicitly rather than taken from `serde_json::Map`, because
//! another crate in the workspace may enable `serde_json/preserve_order`, which turns
//! the map into an insertion-ordered one.
//!
//! This is deliberately *not* RFC 8785 (JCS): JCS sorts keys by UTF-16 code units and
//! prints numbers the ECMAScript way. Changing any rule above changes every content
//! hash, so treat this format as frozen.

use std::convert::Infallible;
use std::io::{self, Write};

use serde_json::{Map, Number, Value};

/// Writes `value` in canonical form to `out`.
///
/// Output is buffered internally and handed to `out` in chunks of a few kilobytes,
/// so `out` need not be buffered. The only errors are those returned by `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    let mut encoder = Encoder::new(IoSink(out));
    encoder.value(value)?;
    encoder.finish().map(drop)
}

/// Returns the canonical form of `value` as bytes (valid UTF-8).
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    let mut encoder = Encoder {
        buf: Vec::new(),
        sink: Collect,
    };
    let Ok(()) = encoder.value(value);
    encoder.buf
}

/// Where an [`Encoder`] drains its buffer.
pub(crate) trait Sink {
    /// `Infallible` for sinks that cannot fail (hashers, memory).
    type Error;
    /// Buffer size from which the encoder drains, checked between values.
    const CHUNK: usize = 8 * 1024;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

struct IoSink<'w, W>(&'w mut W);

impl<W: Write> Sink for IoSink<'_, W> {
    type Error = io::Error;

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

/// Keeps all output in the encoder's buffer.
struct Collect;

impl Sink for Collect {
    type Error = Infallible;
    const CHUNK: usize = usize::MAX;

    fn write(&mut self, _: &[u8]) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Writes canonical JSON tokens into a byte buffer that is drained into a [`Sink`]
/// in chunks. Appending to a `Vec` is much cheaper than a `Write` call per token,
/// and canonical output is mostly short tokens.
///
/// Callers write separators themselves and call [`Encoder::checkpoint`] between
/// values; the content hash module uses this to write its normalised view.
pub(crate) struct Encoder<S> {
    buf: Vec<u8>,
    sink: S,
}

impl<S: Sink> Encoder<S> {
    pub(crate) fn new(sink: S) -> Self {
        Encoder {
            buf: Vec::with_capacity(S::CHUNK.min(16 * 1024)),
            sink,
        }
    }

    /// Appends raw bytes, which must be valid canonical JSON syntax.
    #[inline]
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends one raw byte (a bracket, comma or colon).
    #[inline]
    pub(crate) fn byte(&mut self, byte: u8) {
        self.buf.push(byte);
    }

    /// Appends a string literal, escaped the way serde_json escapes it: `"`, `\`
    /// and the control characters U+0000 to U+001F (as `\b`, `\f`, `\n`, `\r`,
    /// `\t` or `\u00xx` with lowercase hex); everything else verbatim.
    pub(crate) fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = s.as_bytes();
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        let mut start = 0;
        let mut special = find_special(bytes, 0);
        while let Some(&b) = bytes.get(special) {
            self.buf.extend_from_slice(&bytes[start..special]);
            match b {
                b'"' => self.buf.extend_from_slice(b"\\\""),
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                0x08 => self.buf.extend_from_slice(b"\\b"),
                0x0c => self.buf.extend_from_slice(b"\\f"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                _ => self.buf.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
            start = special + 1;
            special = find_special(bytes, start);
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
    }

    /// Appends a string literal whose content the caller knows contains no byte
    /// that needs escaping (see [`find_special`]), such as a string borrowed from
    /// JSON input that had no escape sequences.
    #[inline]
    pub(crate) fn plain_string(&mut self, s: &str) {
        debug_assert_eq!(find_special(s.as_bytes(), 0), s.len());
        self.buf.reserve(s.len() + 2);
        self.buf.push(b'"');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b'"');
    }

    /// Appends a number exactly as serde_json prints it: its `Display` is the
    /// formatter its serializer uses (itoa for integers, shortest round-trip for
    /// floats, the original text with `arbitrary_precision`).
    pub(crate) fn number(&mut self, n: &Number) {
        if let Some(u) = n.as_u64() {
            self.unsigned(u);
        } else {
            self.buf.extend_from_slice(n.to_string().as_bytes());
        }
    }

    fn unsigned(&mut self, mut u: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[at..]);
    }

    /// Drains the buffer into the sink if it has grown past the chunk size.
    #[inline]
    pub(crate) fn checkpoint(&mut self) -> Result<(), S::Error> {
        if self.buf.len() >= S::CHUNK {
            self.sink.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Drains what is left and returns the sink.
    pub(crate) fn finish(mut self) -> Result<S, S::Error> {
        self.sink.write(&self.buf)?;
        Ok(self.sink)
    }

    /// Appends `value` in canonical form.
    pub(crate) fn value(&mut self, value: &Value) -> Result<(), S::Error> {
        match value {
            Value::Null => self.raw(b"null"),
            Value::Bool(true) => self.raw(b"true"),
            Value::Bool(false) => self.raw(b"false"),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.byte(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.byte(b',');
                    }
                    self.value(item)?;
                    self.checkpoint()?;
                }
                self.byte(b']');
            }
            Value::Object(map) => self.object(map)?,
        }
        Ok(())
    }

    fn object(&mut self, map: &Map<String, Value>) -> Result<(), S::Error> {
        // With serde_json's default `BTreeMap` the keys already come out sorted by
        // bytes (`str` ordering is byte ordering), so checking is cheaper than
        // sorting. With `preserve_order` they come out in insertion order.
        if map.keys().is_sorted() {
            self.entries(map.iter())
        } else {
            self.sorted_entries(map.iter())
        }
    }

    /// Sorts entries by key bytes, then writes them as an object. Keys come from a
    /// map and are unique, so an unstable sort is deterministic.
    fn sorted_entries<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a String, &'a Value)>,
    ) -> Result<(), S::Error> {
        let mut entries: Vec<(&String, &Value)> = entries.collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.entries(entries.into_iter())
    }

    /// Writes entries, which must already be in canonical key order, as an object.
    fn entries<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a String, &'a Value)>,
    ) -> Result<(), S::Error> {
        self.byte(b'{');
        for (i, (key, value)) in entries.enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            self.string(key);
            self.byte(b':');
            self.value(value)?;
            self.checkpoint()?;
        }
        self.byte(b'}');
        Ok(())
    }
}

/// Index of the first byte at or after `i` that serde_json escapes in a string
/// (`"`, `\` or a control character U+0000 to U+001F), or `bytes.len()` if there is
/// none. Also the end of a run of plain content when parsing a string literal.
///
/// Checks eight bytes at a time: for a word `x`, `(x - ONES * n) & !x & HIGHS` is
/// non-zero iff some byte of `x` is below `n` (for `n <= 0x80`), and its lowest set
/// bit marks the first such byte (borrows only propagate upwards).
pub(crate) fn find_special(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn canonical_string(value: &Value) -> String {
        String::from_utf8(to_canonical_vec(value)).unwrap()
    }

    /// Reference implementation: rebuild every map with keys inserted in sorted
    /// order, then let serde_json print it compactly. Correct with or without
    /// `preserve_order`.
    fn reference(value: &Value) -> Vec<u8> {
        fn sorted(value: &Value) -> Value {
            match value {
                Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    let mut out = Map::new();
                    for k in keys {
                        out.insert(k.clone(), sorted(&map[k]));
                    }
                    Value::Object(out)
                }
                other => other.clone(),
            }
        }
        serde_json::to_vec(&sorted(value)).unwrap()
    }

    /// Arbitrary JSON values. Floats are optional because serde_json's default
    /// float parser is not guaranteed to round-trip every f64 bit for bit.
    fn arb_json(floats: bool) -> impl Strategy<Value = Value> {
        let float = if floats {
            any::<f64>().prop_map(Value::from).boxed() // NaN and infinities become null
        } else {
            Just(Value::from(0.5)).boxed()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            float,
            ".*".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/\\x7f\u{e9}\u{2028}\u{1F600}a-c]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, 2, {"z": null, "y": true}], "c": "x"}, "A": false});
        assert_eq!(
            canonical_string(&v),
            r#"{"A":false,"a":{"c":"x","d":[1,2,{"y":true,"z":null}]},"b":1}"#
        );
    }

    #[test]
    fn keys_sort_by_utf8_bytes_not_utf16() {
        // U+FF61 sorts before U+1F600 in UTF-8 (EF.. < F0..) but after it in UTF-16
        // (FF61 > D83D), so this pins the byte order. A prefix sorts first.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2, "ab": 3, "a": 4, "B": 5, "é": 6});
        assert_eq!(
            canonical_string(&v),
            "{\"B\":5,\"a\":4,\"ab\":3,\"é\":6,\"\u{FF61}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn sorts_keys_that_arrive_unsorted() {
        // Exercises the path taken when `preserve_order` is enabled.
        let map: Map<String, Value> = [("b", 1), ("c", 2), ("a", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        let mut encoder = Encoder::new(Collect);
        let Ok(()) = encoder.sorted_entries(map.iter().rev());
        assert_eq!(encoder.buf, br#"{"a":3,"b":1,"c":2}"#);
    }

    #[test]
    fn escapes_strings_like_serde_json() {
        let v = json!("quote\" backslash\\ slash/ nl\n tab\t nul\u{0} del\u{7f} é \u{2028} 😀");
        assert_eq!(
            canonical_string(&v),
            "\"quote\\\" backslash\\\\ slash/ nl\\n tab\\t nul\\u0000 del\u{7f} é \u{2028} 😀\""
        );
    }

    #[test]
    fn prints_numbers_like_serde_json() {
        let v: Value = serde_json::from_str(
            "[0, -0, 1, -1, 1.0, 1.5, -2.25e-7, 1e21, 18446744073709551615, -9223372036854775808, 18446744073709551616, 0.1]",
        )
        .unwrap();
        assert_eq!(to_canonical_vec(&v), serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn empty_containers_and_scalars() {
        assert_eq!(canonical_string(&json!({})), "{}");
        assert_eq!(canonical_string(&json!([])), "[]");
        assert_eq!(canonical_string(&json!(null)), "null");
        assert_eq!(canonical_string(&json!(true)), "true");
        assert_eq!(canonical_string(&json!(false)), "false");
        assert_eq!(canonical_string(&json!([{}, [], ""])), r#"[{},[],""]"#);
    }

    #[test]
    fn write_canonical_matches_to_canonical_vec() {
        let v = json!({"z": [1, "two", {"b": 3.5, "a": null}], "y": {}});
        let mut out = Vec::new();
        write_canonical(&v, &mut out).unwrap();
        assert_eq!(out, to_canonical_vec(&v));
    }

    #[test]
    fn propagates_writer_errors() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for v in [json!({"a": 1}), json!("s"), json!(1), json!([null])] {
            let err = write_canonical(&v, &mut Failing).unwrap_err();
            assert_eq!(err.to_string(), "disk full");
        }
    }

    #[test]
    fn large_output_streams_in_chunks() {
        struct Recorder {
            chunks: usize,
            bytes: Vec<u8>,
        }
        impl Write for Recorder {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.chunks += 1;
                self.bytes.extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let v = Value::Array(
            (0..2000)
                .map(|i| json!({"i": i, "text": "x".repeat(i % 50), "nested": [i, {"b": 1, "a": 2}]}))
                .collect(),
        );
        let mut recorder = Recorder {
            chunks: 0,
            bytes: Vec::new(),
        };
        write_canonical(&v, &mut recorder).unwrap();
        assert!(recorder.chunks > 5, "{} chunks", recorder.chunks);
        assert_eq!(recorder.bytes, to_canonical_vec(&v));
        assert_eq!(recorder.bytes, reference(&v));
    }

    #[test]
    fn find_special_finds_each_special_byte() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 0..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes, 0), at, "{special:#x} at {at} of {len}");
                }
                assert_eq!(find_special(&vec![0xC3; len], 0), len);
            }
        }
    }

    /// A wider corpus than `arb_json`: every float bit pattern plus hand-picked
    /// edge numbers, big integers, every control character, escapes, U+2028,
    /// non-BMP characters, and object keys drawn from the same strings.
    fn wide_json() -> impl Strategy<Value = Value> {
        let edge_numbers = prop::sample::select(vec![
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1.0",
            "1e21",
            "1e20",
            "1.5e-7",
            "1e-7",
            "0.1",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "5e-324",
            "2.2250738585072014e-308",
            "9007199254740993",
            "-9223372036854775808",
            "9223372036854775807",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "-1e-400",
            "100000000000000000000000",
            "0.000001",
            "1e-6",
            "12345.678e3",
        ])
        .prop_map(|text| serde_json::from_str::<Value>(text).unwrap());
        let string = prop_oneof![
            ".*",
            "\\PC{0,12}",
            "[\\x00-\\x1f\"\\\\/\\x7f\u{80}\u{9f}\u{e9}\u{2028}\u{2029}\u{fffd}\u{ff61}\u{1F600}a-cA-C]{0,10}",
            any::<Vec<char>>().prop_map(|chars| chars.into_iter().collect::<String>()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<u64>().prop_map(|bits| Value::from(f64::from_bits(bits))),
            any::<f32>().prop_map(Value::from),
            edge_numbers,
            string.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((string.clone(), inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    // --- pinned bytes ------------------------------------------------------
    //
    // Hard-coded expected bytes, not compared with another encoder: every content
    // hash and every chain hash depends on them, so a serde_json update (or a
    // feature some dependency switches on) that changes one byte must fail here.

    fn canonical_of(json: &str) -> String {
        let value: Value = serde_json::from_str(json).unwrap();
        canonical_string(&value)
    }

    #[test]
    fn pins_integers() {
        for (value, bytes) in [
            (json!(0), "0"),
            (json!(1), "1"),
            (json!(-1), "-1"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(i64::MAX), "9223372036854775807"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(u64::MAX - 1), "18446744073709551614"),
        ] {
            assert_eq!(canonical_string(&value), bytes);
        }
        // As parsed: `-0` and integers beyond 64 bits become floats.
        for (json, bytes) in [
            ("-0", "-0.0"),
            ("0", "0"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            ("-9223372036854775809", "-9.223372036854776e+18"),
            ("123456789012345678901234567890", "1.2345678901234568e+29"),
        ] {
            assert_eq!(canonical_of(json), bytes, "{json}");
        }
    }

    #[test]
    fn pins_floats() {
        for (value, bytes) in [
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            // From 1e16 up the exponent carries a sign (so the serde_json in
            // Cargo.lock prints; versions that printed with ryu wrote `1e21`).
            (1e21, "1e+21"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "0.00001"),
            (1.5e-7, "1.5e-7"),
            (1e-7, "1e-7"),
            (0.000001, "1e-6"),
            (0.0001, "0.0001"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.5e-3, "0.0025"),
            (12345.678e3, "12345678.0"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN, "-1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (9007199254740993.0, "9007199254740992.0"),
        ] {
            assert_eq!(canonical_string(&json!(value)), bytes, "{value:e}");
        }
        // Not numbers in JSON: a Value made from them is null.
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(canonical_string(&json!(value)), "null");
        }
        // Parsed text: exponent forms, trailing zeros and `E` all normalise.
        for (json, bytes) in [
            ("1.50", "1.5"),
            ("1E2", "100.0"),
            ("1e+2", "100.0"),
            ("-2.25e-7", "-2.25e-7"),
            ("0.0", "0.0"),
            ("-0.0", "-0.0"),
            ("1e-400", "0.0"),
        ] {
            assert_eq!(canonical_of(json), bytes, "{json}");
        }
    }

    #[test]
    fn pins_string_escapes() {
        // Every control character U+0000..U+001F: short escapes for \b \t \n \f \r,
        // `\u00xx` with lowercase hex for the others.
        let controls: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            canonical_string(&json!(controls)),
            concat!(
                r#""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r"#,
                r#"\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018"#,
                r#"\u0019\u001a\u001b\u001c\u001d\u001e\u001f""#,
            )
        );
        for (text, bytes) in [
            ("\"", r#""\"""#),
            ("\\", r#""\\""#),
            ("/", r#""/""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            // DEL, C1 controls, U+2028/U+2029, non-ASCII and emoji: verbatim UTF-8.
            ("\u{7f}", "\"\u{7f}\""),
            ("\u{85}\u{9f}", "\"\u{85}\u{9f}\""),
            ("\u{2028}\u{2029}", "\"\u{2028}\u{2029}\""),
            ("é ü ß 中文", "\"é ü ß 中文\""),
            ("😀 \u{1F600}", "\"😀 😀\""),
            ("\u{feff}\u{fffd}", "\"\u{feff}\u{fffd}\""),
            ("", r#""""#),
        ] {
            assert_eq!(canonical_string(&json!(text)), bytes, "{text:?}");
        }
        // The same as bytes, for the non-ASCII cases.
        assert_eq!(
            to_canonical_vec(&json!("\u{2028}é😀\u{7f}")),
            b"\"\xe2\x80\xa8\xc3\xa9\xf0\x9f\x98\x80\x7f\""
        );
        // Keys are escaped like values.
        assert_eq!(canonical_of(r#"{"a\u0000\"\n":1}"#), r#"{"a\u0000\"\n":1}"#);
        // Escapes in the input are decoded, then written in canonical form.
        assert_eq!(
            canonical_of(r#""\/\u0041\u00e9\ud83d\ude00\u2028\u001F""#),
            "\"/Aé😀\u{2028}\\u001f\""
        );
    }

    #[test]
    fn pins_key_order() {
        // By UTF-8 bytes: uppercase before lowercase, a prefix first, U+00E9 (C3 A9)
        // after ASCII, U+FF61 (EF BD A1) before U+1F600 (F0 9F 98 80) although
        // UTF-16 would put the surrogate pair (D83D) first.
        let v = canonical_of(
            r#"{"\ud83d\ude00":1,"\uff61":2,"ab":3,"a":4,"B":5,"\u00e9":6,"":7,"a b":8,"~":9,"\u007f":10}"#,
        );
        assert_eq!(
            v,
            "{\"\":7,\"B\":5,\"a\":4,\"a b\":8,\"ab\":3,\"~\":9,\"\u{7f}\":10,\"é\":6,\"\u{FF61}\":2,\"\u{1F600}\":1}"
        );
        // Nested objects and objects inside arrays too; duplicate keys: the last wins.
        assert_eq!(
            canonical_of(r#"{"z":[{"b":1,"a":2}],"y":{"d":{"f":1,"e":2},"c":0},"y":{"c":1}}"#),
            r#"{"y":{"c":1},"z":[{"a":2,"b":1}]}"#
        );
    }

    #[test]
    fn map_keeps_keys_sorted() {
        // Canonical bytes are serde_json's own compact output of a `Value`, which
        // sorts keys only while serde_json's `preserve_order` feature is off. Should
        // any crate in the build switch it on, this fails (then sort the maps
        // before serializing).
        let mut map = Map::new();
        for key in ["b", "c", "a"] {
            map.insert(key.to_owned(), Value::Null);
        }
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["a", "b", "c"],
            "serde_json/preserve_order is enabled"
        );
    }

    proptest! {
        // `PROPTEST_CASES=100000` for the one-off check before switching encoders.
        #[test]
        fn hand_encoder_equals_plain_serde_json(v in wide_json()) {
            prop_assert_eq!(to_canonical_vec(&v), serde_json::to_vec(&v).unwrap());
            let mut streamed = Vec::new();
            write_canonical(&v, &mut streamed).unwrap();
            prop_assert_eq!(streamed, serde_json::to_vec(&v).unwrap());
        }
    }

    proptest! {
        #[test]
        fn find_special_matches_a_byte_loop(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), 0x20u8..0x7f, 0x80u8..=0xff],
                0..64,
            ),
            start in 0usize..70,
        ) {
            let expected = (start..bytes.len())
                .find(|&i| bytes[i] < 0x20 || bytes[i] == b'"' || bytes[i] == b'\\')
                .unwrap_or(bytes.len().max(start));
            prop_assert_eq!(find_special(&bytes, start), expected);
        }

        #[test]
        fn matches_reference(v in arb_json(true)) {
            prop_assert_eq!(to_canonical_vec(&v), reference(&v));
        }

        #[test]
        fn round_trips_and_is_idempotent(v in arb_json(false)) {
            let bytes = to_canonical_vec(&v);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_canonical_vec(&back), bytes);
        }

        #[test]
        fn strings_escape_like_serde_json(s in ".*") {
            prop_assert_eq!(to_canonical_vec(&Value::String(s.clone())), serde_json::to_vec(&s).unwrap());
        }
    }
}
