//! Canonical JSON straight from any `Serialize` value, without building a
//! `serde_json::Value` tree first: members are written into the output as
//! they come and each object is put in jsonb's key order when it closes.
//! The result is byte for byte what [`super::to_canonical_string`] gives for
//! the same value (the tests hold the two together).

use super::{write_string, CanonicalError};
use serde::ser::{self, Serialize};
use std::borrow::Cow;

/// The canonical text of `value`.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    value
        .serialize(Writer { out: &mut out })
        .map_err(|error| error.0)?;
    Ok(out)
}

/// A serialization error: a value without a canonical form.
#[derive(Debug)]
pub struct Error(CanonicalError);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Self(CanonicalError::Unparsable(message.to_string()))
    }
}

impl From<CanonicalError> for Error {
    fn from(error: CanonicalError) -> Self {
        Self(error)
    }
}

/// The name serde_json gives the struct a `RawValue` serializes as.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

struct Writer<'a> {
    out: &'a mut String,
}

fn integer(out: &mut String, value: impl std::fmt::Display) -> Result<(), Error> {
    use std::fmt::Write;
    write!(out, "{value}").map_err(<Error as ser::Error>::custom)
}

/// `serialize_<int>` methods for the integer types: written in decimal.
macro_rules! integers_into_output {
    ($($method:ident: $int:ty),*) => {
        $(fn $method(self, value: $int) -> Result<(), Error> {
            integer(self.out, value)
        })*
    };
}

/// `serialize_<int>` methods for the integer types, as a map key: the
/// decimal text.
macro_rules! integers_as_keys {
    ($($method:ident: $int:ty),*) => {
        $(fn $method(self, value: $int) -> Result<String, Error> {
            Ok(value.to_string())
        })*
    };
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Sequence<'a>;
    type SerializeTuple = Sequence<'a>;
    type SerializeTupleStruct = Sequence<'a>;
    type SerializeTupleVariant = Sequence<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, value: bool) -> Result<(), Error> {
        self.out.push_str(if value { "true" } else { "false" });
        Ok(())
    }
    integers_into_output!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        Err(CanonicalError::Float(value.to_string()).into())
    }
    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        Err(CanonicalError::Float(value.to_string()).into())
    }
    fn serialize_char(self, value: char) -> Result<(), Error> {
        let mut buffer = [0u8; 4];
        write_string(value.encode_utf8(&mut buffer), self.out)?;
        Ok(())
    }
    fn serialize_str(self, value: &str) -> Result<(), Error> {
        write_string(value, self.out)?;
        Ok(())
    }
    fn serialize_bytes(self, value: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq;
        let mut sequence = self.serialize_seq(Some(value.len()))?;
        for byte in value {
            sequence.serialize_element(byte)?;
        }
        sequence.end()
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // {"variant": value}: a one-member object, already in order.
        self.out.push('{');
        write_string(variant, self.out)?;
        self.out.push_str(": ");
        value.serialize(Writer {
            out: &mut *self.out,
        })?;
        self.out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Sequence<'a>, Error> {
        self.out.push('[');
        Ok(Sequence {
            out: self.out,
            first: true,
            variant: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Sequence<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Sequence<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Sequence<'a>, Error> {
        // {"variant": [...]}: a one-member object, already in order.
        self.out.push('{');
        write_string(variant, self.out)?;
        self.out.push_str(": [");
        Ok(Sequence {
            out: self.out,
            first: true,
            variant: true,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object::open(self.out, false))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Object<'a>, Error> {
        if name == RAW_VALUE_TOKEN {
            return Ok(Object::raw(self.out));
        }
        Ok(Object::open(self.out, false))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Object<'a>, Error> {
        // {"variant": {...}}: the outer object has one member.
        self.out.push('{');
        write_string(variant, self.out)?;
        self.out.push_str(": ");
        Ok(Object::open(self.out, true))
    }
}

struct Sequence<'a> {
    out: &'a mut String,
    first: bool,
    /// Inside `{"variant": [...]}`: one more brace to close.
    variant: bool,
}

impl Sequence<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
        value.serialize(Writer {
            out: &mut *self.out,
        })
    }

    fn close(self) -> Result<(), Error> {
        self.out.push(']');
        if self.variant {
            self.out.push('}');
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Sequence<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTuple for Sequence<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Sequence<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Sequence<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// One member written into the output: where it starts and ends, and its
/// key (unescaped), which decides its place.
struct Member {
    key: Cow<'static, str>,
    start: usize,
    end: usize,
}

/// An object being written: members go into the output in the order they
/// come and are put in jsonb's order (shorter keys first, then bytewise;
/// the last of equal keys wins, as in jsonb) when the object closes.
struct Object<'a> {
    out: &'a mut String,
    /// Where the first member starts (just past `{`).
    start: usize,
    members: Vec<Member>,
    /// The key of the entry whose value comes next (`serialize_key`).
    pending_key: Option<Cow<'static, str>>,
    /// Inside `{"variant": {...}}`: one more brace to close.
    variant: bool,
    /// A `RawValue`: its one field is JSON text, written canonically.
    raw: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String, variant: bool) -> Self {
        out.push('{');
        let start = out.len();
        Self {
            out,
            start,
            members: Vec::new(),
            pending_key: None,
            variant,
            raw: false,
        }
    }

    fn raw(out: &'a mut String) -> Self {
        let start = out.len();
        Self {
            out,
            start,
            members: Vec::new(),
            pending_key: None,
            variant: false,
            raw: true,
        }
    }

    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        // Written with its separator, so that an object whose members come
        // in jsonb's order is already in place when it closes.
        if !self.members.is_empty() {
            self.out.push_str(", ");
        }
        let start = self.out.len();
        write_string(&key, self.out)?;
        self.out.push_str(": ");
        value.serialize(Writer {
            out: &mut *self.out,
        })?;
        self.members.push(Member {
            key,
            start,
            end: self.out.len(),
        });
        Ok(())
    }

    fn close(mut self) -> Result<(), Error> {
        if self.raw {
            return Ok(());
        }
        let in_order = self
            .members
            .windows(2)
            .all(|pair| jsonb_key_order(&pair[0].key, &pair[1].key) == std::cmp::Ordering::Less);
        if !in_order {
            self.reorder();
        }
        self.out.push('}');
        if self.variant {
            self.out.push('}');
        }
        Ok(())
    }

    /// Rewrites the members in jsonb's order, the last of equal keys only.
    fn reorder(&mut self) {
        // Stable: among equal keys the last written stays last.
        self.members.sort_by(|a, b| jsonb_key_order(&a.key, &b.key));
        let written = self.out.split_off(self.start);
        let mut first = true;
        for (index, member) in self.members.iter().enumerate() {
            let superseded = self
                .members
                .get(index + 1)
                .is_some_and(|next| next.key == member.key);
            if superseded {
                continue;
            }
            if !first {
                self.out.push_str(", ");
            }
            first = false;
            self.out
                .push_str(&written[member.start - self.start..member.end - self.start]);
        }
    }
}

/// jsonb's key order: shorter first, then bytewise.
fn jsonb_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending_key = Some(Cow::Owned(key.serialize(KeyWriter)?));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("a map value without its key"))?;
        self.member(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if self.raw {
            // The raw JSON text: parsed, then written canonically.
            let text = value.serialize(KeyWriter)?;
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|error| CanonicalError::Unparsable(error.to_string()))?;
            super::write_canonical(&parsed, self.out)?;
            return Ok(());
        }
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// Serializes a map key to its text, as serde_json does: strings, chars and
/// integers; anything else is refused.
struct KeyWriter;

fn key_refused() -> Error {
    Error(CanonicalError::Unparsable(
        "a map key must be a string or an integer".to_string(),
    ))
}

impl ser::Serializer for KeyWriter {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    fn serialize_bool(self, _: bool) -> Result<String, Error> {
        Err(key_refused())
    }
    integers_as_keys!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    fn serialize_f32(self, _: f32) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_f64(self, _: f64) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_char(self, value: char) -> Result<String, Error> {
        Ok(value.to_string())
    }
    fn serialize_str(self, value: &str) -> Result<String, Error> {
        Ok(value.to_string())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Error> {
        Err(key_refused())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_refused())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_refused())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_refused())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_refused())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_refused())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_refused())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_refused())
    }
}

#[cfg(test)]
mod tests {
    use super::super::to_canonical_string;
    use super::*;
    use serde::Serialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The serializer agrees with the `Value` route on `value`.
    fn agrees<T: Serialize>(value: &T) {
        let through_value = to_canonical_string(&serde_json::to_value(value).unwrap()).unwrap();
        assert_eq!(to_canonical_json(value).unwrap(), through_value);
    }

    #[derive(Serialize)]
    struct Flat {
        zebra: i64,
        a: Option<String>,
        bb: bool,
        long_name: Vec<u32>,
        nothing: (),
    }

    #[derive(Serialize)]
    #[serde(tag = "type")]
    enum Tagged {
        Opened { amount: i64, note: String },
        Closed,
    }

    #[derive(Serialize)]
    enum External {
        Unit,
        Newtype(i64),
        Tuple(i64, String),
        Struct { z: u8, a: u8 },
    }

    #[derive(Serialize)]
    struct Nested {
        inner: Flat,
        tagged: Vec<Tagged>,
        external: Vec<External>,
        map: BTreeMap<String, i64>,
        by_number: BTreeMap<u32, &'static str>,
        value: serde_json::Value,
        text: &'static str,
        #[serde(flatten)]
        extra: BTreeMap<String, i64>,
    }

    fn flat() -> Flat {
        Flat {
            zebra: -5,
            a: Some("quote \" and \\ and \n and é".into()),
            bb: true,
            long_name: vec![1, 2, 3],
            nothing: (),
        }
    }

    #[test]
    fn structs_enums_maps_and_values_agree_with_the_value_route() {
        agrees(&flat());
        agrees(&Tagged::Opened {
            amount: i64::MIN,
            note: "x".into(),
        });
        agrees(&Tagged::Closed);
        agrees(&Nested {
            inner: flat(),
            tagged: vec![Tagged::Closed],
            external: vec![
                External::Unit,
                External::Newtype(7),
                External::Tuple(1, "t".into()),
                External::Struct { z: 1, a: 2 },
            ],
            map: BTreeMap::from([("ccc".into(), 1), ("b".into(), 2), ("aa".into(), 3)]),
            by_number: BTreeMap::from([(10, "ten"), (9, "nine")]),
            value: json!({"y": [true, null, {"bb": 1, "a": -1}], "x": u64::MAX}),
            text: "\u{1}\t",
            extra: BTreeMap::from([("text".into(), 5), ("q".into(), 6)]),
        });
        agrees(&json!([]));
        agrees(&json!({}));
        agrees(&Vec::<Flat>::new());
        agrees(&BTreeMap::<String, i64>::new());
    }

    #[test]
    fn the_last_of_equal_keys_wins_as_in_jsonb() {
        #[derive(Serialize)]
        struct Twice {
            text: i64,
            #[serde(flatten)]
            extra: BTreeMap<String, i64>,
        }
        let twice = Twice {
            text: 1,
            extra: BTreeMap::from([("text".into(), 2)]),
        };
        assert_eq!(to_canonical_json(&twice).unwrap(), r#"{"text": 2}"#);
    }

    #[test]
    fn floats_and_nul_characters_are_refused() {
        assert_eq!(
            to_canonical_json(&json!({"amount": 1.5})),
            Err(CanonicalError::Float("1.5".to_string()))
        );
        assert_eq!(
            to_canonical_json(&2.5f64),
            Err(CanonicalError::Float("2.5".to_string()))
        );
        assert_eq!(to_canonical_json("a\0b"), Err(CanonicalError::Nul));
    }

    #[test]
    fn raw_json_is_written_canonically() {
        let raw =
            serde_json::value::RawValue::from_string(r#"{"bb":1,"a":[1, 2]}"#.into()).unwrap();
        assert_eq!(
            to_canonical_json(&raw).unwrap(),
            r#"{"a": [1, 2], "bb": 1}"#
        );
    }
}
