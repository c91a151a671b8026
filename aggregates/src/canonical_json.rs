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

use std::io::{self, Write};

use serde_json::{Map, Number, Value};

/// Writes `value` in canonical form to `out`.
///
/// The only errors are those returned by `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Returns the canonical form of `value` as bytes (valid UTF-8).
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a `Vec` cannot fail, and serialising strings and numbers has no
    // other failure mode, so the result carries no information.
    let result = write_canonical(value, &mut out);
    debug_assert!(result.is_ok(), "canonical serialisation into a Vec failed");
    out
}

/// Writes a JSON string literal, escaped the way `serde_json` escapes it.
pub(crate) fn write_str<W: Write + ?Sized>(s: &str, out: &mut W) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::from)
}

/// Writes a JSON number the way `serde_json` prints it.
pub(crate) fn write_number<W: Write + ?Sized>(n: &Number, out: &mut W) -> io::Result<()> {
    serde_json::to_writer(out, n).map_err(io::Error::from)
}

fn write_object<W: Write>(map: &Map<String, Value>, out: &mut W) -> io::Result<()> {
    // With serde_json's default `BTreeMap` the keys already come out sorted by bytes
    // (`str` ordering is byte ordering), so checking is cheaper than sorting. With
    // `preserve_order` they come out in insertion order and must be sorted.
    if map.keys().is_sorted() {
        write_entries(map.iter(), out)
    } else {
        write_sorted(map.iter(), out)
    }
}

/// Sorts entries by key bytes, then writes them as an object. Keys are unique
/// (they come from a map), so an unstable sort is deterministic.
fn write_sorted<'a, W: Write>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut W,
) -> io::Result<()> {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_entries(entries.into_iter(), out)
}

/// Writes entries, which must already be in canonical key order, as an object.
fn write_entries<'a, W: Write>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut W,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_str(key, out)?;
        out.write_all(b":")?;
        write_canonical(value, out)?;
    }
    out.write_all(b"}")
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
        let mut out = Vec::new();
        write_sorted(map.iter().rev(), &mut out).unwrap();
        assert_eq!(out, br#"{"a":3,"b":1,"c":2}"#);
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

    proptest! {
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
