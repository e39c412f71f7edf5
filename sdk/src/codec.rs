//! How task input and output travel over stdin and stdout.
//!
//! A task's wire format follows from its Rust types. The `#[task]` macro picks one
//! codec per side by looking at how the type is written:
//!
//! | type as written        | codec          | stdin / stdout                        |
//! |------------------------|----------------|---------------------------------------|
//! | `Vec<u8>`              | [`BytesCodec`] | the raw bytes, unchanged              |
//! | `String`               | [`TextCodec`]  | UTF-8 text (input must be valid)      |
//! | anything else          | [`JsonCodec`]  | one JSON document                     |
//!
//! The choice is made from the syntax, before types are resolved, so a type alias
//! such as `type Blob = Vec<u8>` counts as "anything else" and is JSON. Wrap a type
//! in [`Json`] to force JSON for `Vec<u8>` or `String`.
//!
//! The codecs are public so the wire format is documented in one place and can be
//! exercised from tests; tasks never need to call them directly.

use std::any::type_name;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Turns stdin bytes into a task's input value of type `T`.
#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be a task input with this codec",
    label = "task input type",
    note = "task input must be `Vec<u8>` (raw bytes), `String` (UTF-8 text), \
            or a type implementing `serde::de::DeserializeOwned` (JSON)"
)]
pub trait Decode<T> {
    /// Decodes the whole of stdin; the error names `T` so a caller can see what was expected.
    fn decode(input: Vec<u8>) -> Result<T, DecodeError>;
}

/// Turns a task's output value of type `T` into stdout bytes.
#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be a task output with this codec",
    label = "task output type",
    note = "task output must be `Vec<u8>` (raw bytes), `String` (UTF-8 text), \
            or a type implementing `serde::Serialize` (JSON)"
)]
pub trait Encode<T> {
    /// Encodes the value as the complete stdout of the task.
    fn encode(value: T) -> Result<Vec<u8>, EncodeError>;
}

/// Raw bytes in and out: stdin is handed over as it is, and output is written as it is.
#[derive(Debug, Clone, Copy)]
pub struct BytesCodec;

/// UTF-8 text in and out.
#[derive(Debug, Clone, Copy)]
pub struct TextCodec;

/// One JSON document in and out (via `serde_json`).
///
/// Output is compact JSON followed by a newline, so it reads well in a terminal and
/// in logs; JSON parsers ignore the trailing whitespace.
#[derive(Debug, Clone, Copy)]
pub struct JsonCodec;

impl Decode<Vec<u8>> for BytesCodec {
    fn decode(input: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
        Ok(input)
    }
}

impl Encode<Vec<u8>> for BytesCodec {
    fn encode(value: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
        Ok(value)
    }
}

impl Decode<String> for TextCodec {
    fn decode(input: Vec<u8>) -> Result<String, DecodeError> {
        String::from_utf8(input).map_err(|e| DecodeError::new::<String>(Format::Text, e.utf8_error().to_string()))
    }
}

impl Encode<String> for TextCodec {
    fn encode(value: String) -> Result<Vec<u8>, EncodeError> {
        Ok(value.into_bytes())
    }
}

impl<T: DeserializeOwned> Decode<T> for JsonCodec {
    fn decode(input: Vec<u8>) -> Result<T, DecodeError> {
        // serde_json reports empty input as "EOF while parsing a value", which hides the
        // far more likely cause: the task was started without any input at all.
        if input.iter().all(u8::is_ascii_whitespace) {
            return Err(DecodeError::new::<T>(Format::Json, "stdin is empty".to_owned()));
        }
        serde_json::from_slice(&input).map_err(|e| DecodeError::new::<T>(Format::Json, e.to_string()))
    }
}

impl<T: Serialize> Encode<T> for JsonCodec {
    fn encode(value: T) -> Result<Vec<u8>, EncodeError> {
        let mut out = serde_json::to_vec(&value).map_err(|e| EncodeError::new::<T>(Format::Json, e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }
}

/// Forces the JSON codec for a type the macro would otherwise treat as bytes or text.
///
/// `Json<String>` reads a JSON string such as `"hello"` rather than raw text, and
/// `Json<Vec<u8>>` writes a JSON array of numbers rather than raw bytes. On the wire
/// the wrapper is invisible: it (de)serializes exactly as the value inside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// Returns the wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The wire formats, named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 text.
    Text,
    /// A JSON document.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "UTF-8 text",
            Format::Json => "JSON",
        })
    }
}

/// Stdin could not be turned into the task's input type.
///
/// Displays as `invalid input: expected JSON for my_task::Input: missing field ...`,
/// naming the Rust type so a caller can find the schema it violated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The format stdin was expected to be in.
    pub format: Format,
    /// The full Rust path of the expected type, from [`std::any::type_name`].
    pub expected: &'static str,
    /// What was wrong, as reported by the parser.
    pub detail: String,
}

impl DecodeError {
    fn new<T>(format: Format, detail: String) -> Self {
        DecodeError { format, expected: type_name::<T>(), detail }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid input: expected {} for {}: {}", self.format, self.expected, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// The task's output value could not be encoded (for example a map with non-string keys
/// in JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    /// The format the output was to be written in.
    pub format: Format,
    /// The full Rust path of the output type.
    pub type_name: &'static str,
    /// What went wrong, as reported by the encoder.
    pub detail: String,
}

impl EncodeError {
    fn new<T>(format: Format, detail: String) -> Self {
        EncodeError { format, type_name: type_name::<T>(), detail }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode output {} as {}: {}", self.type_name, self.format, self.detail)
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn bytes_pass_through_unchanged() {
        let raw = vec![0, 159, 146, 150, 255, b'\n'];
        assert_eq!(BytesCodec::decode(raw.clone()).unwrap(), raw);
        assert_eq!(BytesCodec::encode(raw.clone()).unwrap(), raw);
    }

    #[test]
    fn text_round_trips_utf8() {
        let s: String = TextCodec::decode("héllo ✓\n".as_bytes().to_vec()).unwrap();
        assert_eq!(s, "héllo ✓\n");
        assert_eq!(TextCodec::encode(s).unwrap(), "héllo ✓\n".as_bytes());
    }

    #[test]
    fn invalid_utf8_names_string_type() {
        let err = <TextCodec as Decode<String>>::decode(vec![b'o', b'k', 0xff]).unwrap_err();
        assert_eq!(err.format, Format::Text);
        assert_eq!(err.expected, "alloc::string::String");
        assert_eq!(
            err.to_string(),
            "invalid input: expected UTF-8 text for alloc::string::String: \
             invalid utf-8 sequence of 1 bytes from index 2"
        );
    }

    #[test]
    fn json_decodes_struct() {
        let p: Point = JsonCodec::decode(br#" {"x": 1, "y": -2} "#.to_vec()).unwrap();
        assert_eq!(p, Point { x: 1, y: -2 });
    }

    #[test]
    fn json_error_names_type_and_position() {
        let err = <JsonCodec as Decode<Point>>::decode(br#"{"x": 1}"#.to_vec()).unwrap_err();
        assert_eq!(err.expected, type_name::<Point>());
        assert!(err.expected.ends_with("codec::tests::Point"), "{}", err.expected);
        let msg = err.to_string();
        assert!(msg.starts_with("invalid input: expected JSON for "), "{msg}");
        assert!(msg.contains("Point: missing field `y` at line 1 column 8"), "{msg}");
    }

    #[test]
    fn json_syntax_error_is_reported() {
        let err = <JsonCodec as Decode<Point>>::decode(b"{x: 1}".to_vec()).unwrap_err();
        assert!(err.detail.contains("key must be a string"), "{}", err.detail);
    }

    #[test]
    fn empty_json_input_says_so() {
        for input in [&b""[..], b"  \n"] {
            let err = <JsonCodec as Decode<Point>>::decode(input.to_vec()).unwrap_err();
            assert_eq!(err.detail, "stdin is empty");
        }
    }

    #[test]
    fn json_output_is_compact_with_newline() {
        let out = JsonCodec::encode(Point { x: 3, y: 4 }).unwrap();
        assert_eq!(out, b"{\"x\":3,\"y\":4}\n");
    }

    #[test]
    fn json_encode_error_names_type() {
        let mut bad = BTreeMap::new();
        bad.insert(vec![1u8], 1);
        let err = JsonCodec::encode(bad).unwrap_err();
        assert!(err.type_name.contains("BTreeMap"), "{}", err.type_name);
        assert!(err.to_string().starts_with("cannot encode output alloc::collections::btree::map::BTreeMap"));
        assert!(err.detail.contains("key must be a string"), "{}", err.detail);
    }

    #[test]
    fn json_wrapper_is_transparent() {
        let s: Json<String> = JsonCodec::decode(br#""quoted""#.to_vec()).unwrap();
        assert_eq!(s.as_str(), "quoted");
        assert_eq!(JsonCodec::encode(Json(vec![1u8, 2])).unwrap(), b"[1,2]\n");
        // Raw text is not a JSON string, and the error names the wrapper type.
        let err = <JsonCodec as Decode<Json<String>>>::decode(b"quoted".to_vec()).unwrap_err();
        assert!(err.expected.contains("Json<alloc::string::String>"), "{}", err.expected);
    }
}
