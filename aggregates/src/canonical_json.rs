//! Canonical JSON serialisation.
//!
//! Content hashes and the event chain are only useful if the same JSON value always
//! produces the same bytes, whatever order its object keys arrived in and however it
//! was indented. This module names that one byte form:
//!
//! * object keys sorted by their UTF-8 bytes (which is also Unicode code point order),
//! * no insignificant whitespace,
//! * strings escaped the way `serde_json` escapes them (`"`, `\` and the control
//!   characters U+0000 to U+001F only, as `\b`, `\t`, `\n`, `\f`, `\r` or `\u00xx`
//!   with lowercase hex; everything else, including U+007F, U+2028 and non-ASCII, is
//!   written verbatim),
//! * numbers printed the way `serde_json` prints them (integers in decimal; floats in
//!   the shortest form that reads back to the same `f64`, always with a `.` or an
//!   exponent: `1.0`, `0.1`, `1.5e-7`, `1e+21`).
//!
//! That is exactly serde_json's compact output of a `Value` whose maps are the
//! default `BTreeMap`, so the bytes are serde_json's own: [`to_canonical_vec`] where
//! the bytes are kept, [`write_canonical`] to stream them (into SHA-256, which is an
//! `io::Write`). It holds only while serde_json's `preserve_order` feature is off
//! (nothing in the build enables it: `cargo tree -e features -i serde_json`); the
//! tests fail if something ever does, and they pin the exact bytes of numbers,
//! escapes and key order, so a serde_json update that changes a byte fails them
//! before it can make `verify` reject untouched history.
//!
//! This is deliberately *not* RFC 8785 (JCS): JCS sorts keys by UTF-16 code units and
//! prints numbers the ECMAScript way. Changing any rule above changes every content
//! hash and every chain hash, so treat this format as frozen.

use std::io::{self, BufWriter, Write};

use serde_json::Value;

/// Writes `value` in canonical form to `out`.
///
/// Output is buffered internally and handed to `out` in chunks of a few kilobytes,
/// so `out` need not be buffered. The only errors are those returned by `out`.
pub fn write_canonical<W: Write>(value: &Value, out: &mut W) -> io::Result<()> {
    let mut buffered = BufWriter::with_capacity(8 * 1024, out);
    serde_json::to_writer(&mut buffered, value)?;
    buffered.flush()
}

/// Returns the canonical form of `value` as bytes (valid UTF-8).
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    let Ok(bytes) = serde_json::to_vec(value) else {
        unreachable!("a JSON value always serializes into memory");
    };
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map};

    fn canonical_string(value: &Value) -> String {
        String::from_utf8(to_canonical_vec(value)).unwrap()
    }

    /// Arbitrary JSON values without arbitrary floats: serde_json's default float
    /// parser is not guaranteed to read every f64 back bit for bit.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(Value::from(0.5)),
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
    fn escapes_strings() {
        let v = json!("quote\" backslash\\ slash/ nl\n tab\t nul\u{0} del\u{7f} é \u{2028} 😀");
        assert_eq!(
            canonical_string(&v),
            "\"quote\\\" backslash\\\\ slash/ nl\\n tab\\t nul\\u0000 del\u{7f} é \u{2028} 😀\""
        );
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

    /// The frozen escaping rule, written out on its own.
    fn escaped(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        // A wide corpus: `PROPTEST_CASES=300000` for a longer run. (Before the hand
        // encoder was replaced by serde_json, both were checked equal byte for byte
        // on 300,000 cases of `wide_json`.)
        #[test]
        fn output_is_compact_sorted_and_reads_back(v in wide_json()) {
            let bytes = to_canonical_vec(&v);
            let mut streamed = Vec::new();
            write_canonical(&v, &mut streamed).unwrap();
            prop_assert_eq!(&streamed, &bytes);
            // Pretty or compact, in any key order, the same value gives the same bytes.
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            let reparsed: Value = serde_json::from_slice(&pretty).unwrap();
            prop_assert_eq!(to_canonical_vec(&reparsed), to_canonical_vec(&serde_json::from_slice::<Value>(&bytes).unwrap()));
        }

        #[test]
        fn round_trips_and_is_idempotent(v in arb_json()) {
            let bytes = to_canonical_vec(&v);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_canonical_vec(&back), bytes);
        }

        #[test]
        fn strings_escape_by_the_frozen_rule(
            s in prop_oneof![".*", "\\PC*", any::<Vec<char>>().prop_map(String::from_iter)],
        ) {
            prop_assert_eq!(canonical_string(&Value::String(s.clone())), escaped(&s));
            let key = canonical_string(&json!({ s.clone(): 0 }));
            prop_assert_eq!(key, format!("{{{}:0}}", escaped(&s)));
        }

        #[test]
        fn integers_print_in_plain_decimal(i in any::<i64>(), u in any::<u64>()) {
            prop_assert_eq!(canonical_string(&json!(i)), i.to_string());
            prop_assert_eq!(canonical_string(&json!(u)), u.to_string());
        }

        #[test]
        fn objects_come_out_in_byte_order(keys in prop::collection::vec("\\PC{0,4}", 0..12)) {
            let map: Map<String, Value> =
                keys.iter().map(|k| (k.clone(), Value::Null)).collect();
            let mut sorted = keys.clone();
            sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            sorted.dedup();
            let expected: Vec<String> =
                sorted.iter().map(|k| format!("{}:null", escaped(k))).collect();
            prop_assert_eq!(
                canonical_string(&Value::Object(map)),
                format!("{{{}}}", expected.join(","))
            );
        }
    }
}
