//! Canonical JSON straight from any `Serialize` value, without building a
//! `serde_json::Value` tree first: members are written into the output as
//! they come and each object is put in jsonb's key order when it closes.
//! The result is byte for byte what [`super::to_canonical_string`] gives for
//! the same value (the tests hold the two together).
//!
//! One serialization allocates its output and one stack of members that
//! every open object shares (each object's members on top of its parent's),
//! so that a struct, however nested, allocates nothing of its own. (A map
//! key is still written into a `String` of its own, and a `RawValue` is
//! parsed into a tree.)

use super::{write_string, CanonicalError};
use serde::ser::{self, Serialize};
use std::borrow::Cow;

/// The canonical text of `value`.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CanonicalError> {
    let mut output = Output {
        text: String::with_capacity(512),
        members: Vec::with_capacity(16),
        scratch: String::new(),
    };
    value
        .serialize(Writer {
            output: &mut output,
        })
        .map_err(|error| error.0)?;
    Ok(output.text)
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

/// What one serialization writes into.
struct Output {
    text: String,
    /// The members of every object still open, each object's on top of
    /// those of the object it is inside.
    members: Vec<Member>,
    /// A copy of an object's members while they are put in order.
    scratch: String,
}

struct Writer<'a> {
    output: &'a mut Output,
}

/// `serialize_<int>` methods for the integer types: written in decimal.
macro_rules! integers_into_output {
    ($($method:ident: $int:ty),*) => {
        $(fn $method(self, value: $int) -> Result<(), Error> {
            self.output.text.push_str(itoa::Buffer::new().format(value));
            Ok(())
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
        self.output
            .text
            .push_str(if value { "true" } else { "false" });
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
        write_string(value.encode_utf8(&mut buffer), &mut self.output.text)?;
        Ok(())
    }
    fn serialize_str(self, value: &str) -> Result<(), Error> {
        write_string(value, &mut self.output.text)?;
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
        self.output.text.push_str("null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.output.text.push_str("null");
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
        self.output.text.push('{');
        write_string(variant, &mut self.output.text)?;
        self.output.text.push_str(": ");
        value.serialize(Writer {
            output: &mut *self.output,
        })?;
        self.output.text.push('}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Sequence<'a>, Error> {
        self.output.text.push('[');
        Ok(Sequence {
            output: self.output,
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
        self.output.text.push('{');
        write_string(variant, &mut self.output.text)?;
        self.output.text.push_str(": [");
        Ok(Sequence {
            output: self.output,
            first: true,
            variant: true,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object::open(self.output, false))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Object<'a>, Error> {
        if name == RAW_VALUE_TOKEN {
            return Ok(Object::raw(self.output));
        }
        Ok(Object::open(self.output, false))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Object<'a>, Error> {
        // {"variant": {...}}: the outer object has one member.
        self.output.text.push('{');
        write_string(variant, &mut self.output.text)?;
        self.output.text.push_str(": ");
        Ok(Object::open(self.output, true))
    }
}

struct Sequence<'a> {
    output: &'a mut Output,
    first: bool,
    /// Inside `{"variant": [...]}`: one more brace to close.
    variant: bool,
}

impl Sequence<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.output.text.push_str(", ");
        }
        self.first = false;
        value.serialize(Writer {
            output: &mut *self.output,
        })
    }

    fn close(self) -> Result<(), Error> {
        self.output.text.push(']');
        if self.variant {
            self.output.text.push('}');
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
    output: &'a mut Output,
    /// Where the first member starts (just past `{`).
    start: usize,
    /// Where this object's members start on the output's stack of members.
    base: usize,
    /// The key of the entry whose value comes next (`serialize_key`).
    pending_key: Option<Cow<'static, str>>,
    /// Inside `{"variant": {...}}`: one more brace to close.
    variant: bool,
    /// A `RawValue`: its one field is JSON text, written canonically.
    raw: bool,
}

impl<'a> Object<'a> {
    fn open(output: &'a mut Output, variant: bool) -> Self {
        output.text.push('{');
        Self::at_end_of(output, variant, false)
    }

    fn raw(output: &'a mut Output) -> Self {
        Self::at_end_of(output, false, true)
    }

    fn at_end_of(output: &'a mut Output, variant: bool, raw: bool) -> Self {
        let start = output.text.len();
        let base = output.members.len();
        Self {
            output,
            start,
            base,
            pending_key: None,
            variant,
            raw,
        }
    }

    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        // Written with its separator, so that an object whose members come
        // in jsonb's order is already in place when it closes.
        if self.output.members.len() > self.base {
            self.output.text.push_str(", ");
        }
        let start = self.output.text.len();
        write_string(&key, &mut self.output.text)?;
        self.output.text.push_str(": ");
        // An object inside the value takes its members off the stack again
        // when it closes.
        value.serialize(Writer {
            output: &mut *self.output,
        })?;
        let end = self.output.text.len();
        self.output.members.push(Member { key, start, end });
        Ok(())
    }

    fn close(self) -> Result<(), Error> {
        if self.raw {
            return Ok(());
        }
        let output = self.output;
        let in_order = output.members[self.base..]
            .windows(2)
            .all(|pair| jsonb_key_order(&pair[0].key, &pair[1].key) == std::cmp::Ordering::Less);
        if !in_order {
            reorder(output, self.start, self.base);
        }
        output.members.truncate(self.base);
        output.text.push('}');
        if self.variant {
            output.text.push('}');
        }
        Ok(())
    }
}

/// Rewrites the members of the object whose text starts at `start` and
/// whose members start at `base` in jsonb's order, the last of equal keys
/// only.
fn reorder(output: &mut Output, start: usize, base: usize) {
    let Output {
        text,
        members,
        scratch,
    } = output;
    let members = &mut members[base..];
    // Stable: among equal keys the last written stays last.
    members.sort_by(|a, b| jsonb_key_order(&a.key, &b.key));
    scratch.clear();
    scratch.push_str(&text[start..]);
    text.truncate(start);
    let mut first = true;
    for (index, member) in members.iter().enumerate() {
        let superseded = members
            .get(index + 1)
            .is_some_and(|next| next.key == member.key);
        if superseded {
            continue;
        }
        if !first {
            text.push_str(", ");
        }
        first = false;
        text.push_str(&scratch[member.start - start..member.end - start]);
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
            super::write_canonical(&parsed, &mut self.output.text)?;
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
    fn objects_inside_objects_are_each_put_in_order() {
        #[derive(Serialize)]
        struct Inner {
            zz: i64,
            b: Vec<Inner>,
        }
        #[derive(Serialize)]
        struct Outer {
            later: Inner,
            a: i64,
            mid: Inner,
        }
        let leaf = |zz| Inner { zz, b: Vec::new() };
        let outer = Outer {
            later: Inner {
                zz: 1,
                b: vec![leaf(2), leaf(3)],
            },
            a: -4,
            mid: leaf(i64::MAX),
        };
        assert_eq!(
            to_canonical_json(&outer).unwrap(),
            r#"{"a": -4, "mid": {"b": [], "zz": 9223372036854775807}, "later": {"b": [{"b": [], "zz": 2}, {"b": [], "zz": 3}], "zz": 1}}"#
        );
        agrees(&outer);
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
