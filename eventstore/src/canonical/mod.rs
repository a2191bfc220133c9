//! Canonical JSON: the one byte encoding of a JSON value that the hash chain
//! hashes.
//!
//! The store keeps payloads as `jsonb`, which does not keep the bytes it was
//! given: it reorders keys and normalises whitespace. The canonical form is
//! therefore defined to be exactly PostgreSQL's own `jsonb` text output:
//! object keys ordered by byte length and then bytewise, `", "` between
//! members, `": "` after keys, strings escaped as PostgreSQL escapes them.
//! Two consequences:
//! - the writer computes the canonical bytes before the row exists, and
//! - a verifier can hash `payload::text` straight from the database without
//!   parsing it, or re-derive the same bytes from any JSON copy (an export
//!   file) by parsing and re-encoding.
//!
//! Floating-point numbers are refused: amounts are integers in minor units,
//! and a float has no single text form both sides agree on.

use serde_json::Value;

mod serializer;

pub use serializer::to_canonical_json;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A floating-point number; events carry integers only.
    #[error("floating-point number {0} in event data; amounts must be integers")]
    Float(String),
    /// A NUL character, which `jsonb` cannot store.
    #[error("NUL character in a JSON string")]
    Nul,
    /// Text that is not JSON.
    #[error("not JSON: {0}")]
    Unparsable(String),
}

/// The canonical text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(128);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical text of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if number.is_f64() {
                return Err(CanonicalError::Float(number.to_string()));
            }
            out.push_str(&number.to_string());
        }
        Value::String(text) => write_string(text, out)?,
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // jsonb's order: shorter keys first, then bytewise.
            members.sort_unstable_by(|a, b| {
                a.0.len()
                    .cmp(&b.0.len())
                    .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
            });
            out.push('{');
            for (index, (key, item)) in members.into_iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_string(key, out)?;
                out.push_str(": ");
                write_canonical(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Whether `byte` is escaped inside a JSON string (or refused: NUL).
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

pub(crate) fn write_string(text: &str, out: &mut String) -> Result<(), CanonicalError> {
    out.reserve(text.len() + 2);
    out.push('"');
    // Most strings (keys, codes, ids) need no escape: their bytes are
    // checked in one pass and copied whole. Only a string with an escape
    // is walked again.
    if text
        .bytes()
        .fold(false, |found, byte| found | needs_escape(byte))
    {
        write_escaped(text, out)?;
    } else {
        out.push_str(text);
    }
    out.push('"');
    Ok(())
}

/// The inside of a JSON string that needs escapes.
fn write_escaped(text: &str, out: &mut String) -> Result<(), CanonicalError> {
    // Runs of characters that need no escape are copied whole; every byte
    // that needs one is ASCII, so the cuts fall on character boundaries.
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0 => return Err(CanonicalError::Nul),
            // Any other control character: `\u00XX`, below.
            _ => "",
        };
        out.push_str(&text[start..index]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        start = index + 1;
    }
    out.push_str(&text[start..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_ordered_by_length_then_bytes_like_jsonb() {
        let value = json!({"bb": 1, "a": [1, {"zz": null, "y": true}], "ab": "x"});
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            r#"{"a": [1, {"y": true, "zz": null}], "ab": "x", "bb": 1}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_jsonb() {
        let value = json!("q\"b\\n\nt\té/\u{1}");
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            "\"q\\\"b\\\\n\\nt\\té/\\u0001\""
        );
        // Escapes between multibyte characters, at both ends and in a row.
        let value = json!("\"é\u{1f}ü\\\n");
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            "\"\\\"é\\u001fü\\\\\\n\""
        );
    }

    #[test]
    fn plain_strings_are_copied_whole_and_an_escape_anywhere_is_found() {
        // DEL and multibyte characters need no escape in jsonb either.
        assert_eq!(
            to_canonical_string(&json!("acct-7 é\u{7f}€")).unwrap(),
            "\"acct-7 é\u{7f}€\""
        );
        // One escape past the first 32 bytes; then one as the last byte.
        let long = format!("{}\"{}", "k".repeat(40), "v".repeat(3));
        assert_eq!(
            to_canonical_string(&json!(long)).unwrap(),
            format!("\"{}\\\"{}\"", "k".repeat(40), "v".repeat(3))
        );
        assert_eq!(to_canonical_string(&json!("end\n")).unwrap(), "\"end\\n\"");
        assert_eq!(
            to_canonical_string(&json!("nul\u{0}")),
            Err(CanonicalError::Nul)
        );
    }

    #[test]
    fn floats_are_refused() {
        assert_eq!(
            to_canonical_string(&json!({"amount": 1.5})),
            Err(CanonicalError::Float("1.5".to_string()))
        );
    }

    #[test]
    fn empty_containers_and_negative_integers() {
        let value = json!({"a": {}, "b": [], "c": -9223372036854775808i64, "d": u64::MAX});
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            r#"{"a": {}, "b": [], "c": -9223372036854775808, "d": 18446744073709551615}"#
        );
    }
}
