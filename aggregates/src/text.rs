//! Text that comes from clients, bounded to what every store of the ledger
//! can hold and every reader can show.
//!
//! PostgreSQL's `text` and `jsonb` refuse NUL, and control characters in a
//! reference or an account are never intended: they hide text in logs and
//! reports. So a client's text has no control character (Unicode category
//! Cc: NUL, the C0 controls, DEL and the C1 controls) and a length bound in
//! characters, checked at the edge (the request does not deserialize,
//! [`Text`]). The decision checks again what storage needs, whatever the
//! command came from: no NUL, and the length bound ([`check_storable`]); it
//! keeps to that, not to the edge's policy, so that history accepted under
//! an earlier edge (a reference with a tab) is still re-decided the same by
//! `verify` and `replay`.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Why a text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max_chars} characters")]
    TooLong { max_chars: usize },
    #[error("must not contain control characters (U+{code_point:04X} at character {index})")]
    ControlCharacter { code_point: u32, index: usize },
}

/// Checks `text`: 1 to `max_chars` characters, none of them a control
/// character.
pub fn check(text: &str, max_chars: usize) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    scan(text, max_chars, char::is_control)
}

/// Checks what every store needs of `text`: no NUL (which `jsonb` and
/// `text` cannot hold), at most `max_chars` characters.
pub fn check_storable(text: &str, max_chars: usize) -> Result<(), TextError> {
    scan(text, max_chars, |character| character == '\0')
}

/// At most `max_chars` characters, none of them `refused`.
fn scan(text: &str, max_chars: usize, refused: impl Fn(char) -> bool) -> Result<(), TextError> {
    for (index, character) in text.chars().enumerate() {
        if index >= max_chars {
            return Err(TextError::TooLong { max_chars });
        }
        if refused(character) {
            return Err(TextError::ControlCharacter {
                code_point: u32::from(character),
                index,
            });
        }
    }
    Ok(())
}

/// A client's text of 1 to `MAX` characters without control characters.
/// Deserializing anything else fails, saying why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    /// The longest text, in characters.
    pub const MAX_CHARS: usize = MAX;

    /// `text`, if it passes [`check`].
    pub fn parse(text: impl Into<String>) -> Result<Self, TextError> {
        let text = text.into();
        check(&text, MAX)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> AsRef<str> for Text<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(text).map_err(serde::de::Error::custom)
    }
}

/// A name another system gives (a processor, its reference for a charge,
/// a settlement batch, a bank account, a gift card's code): 1 to 64 of
/// `A-Za-z0-9_.-`, starting with a letter or digit, so that it can stand
/// inside an account code or an id (`receivable:<processor>`,
/// `<processor>:<batch_id>`) unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// The pattern of a [`Name`].
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

/// Why a text is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {0:?}: 1-64 of A-Za-z0-9_.- starting with a letter or digit")]
pub struct InvalidName(pub String);

impl Name {
    pub fn parse(text: impl Into<String>) -> Result<Self, InvalidName> {
        let text = text.into();
        let valid = (1..=64).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(Self(text))
        } else {
            Err(InvalidName(text))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_naming_the_first() {
        for (text, code_point, index) in [
            ("a\u{0}b", 0x00, 1),
            ("\u{1f}", 0x1f, 0),
            ("ab\u{7f}", 0x7f, 2),
            ("é\u{85}", 0x85, 1),
            ("line\nbreak", 0x0a, 4),
        ] {
            assert_eq!(
                check(text, 10),
                Err(TextError::ControlCharacter { code_point, index }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        for good in ["stripe", "ch_1", "GC-1", "b.2026-12-03", &"a".repeat(64)] {
            assert_eq!(
                Name::parse(good).map(Name::into_string),
                Ok(good.to_string())
            );
        }
        for bad in ["", "-x", "_x", "a b", "a:b", "a/b", "é", &"a".repeat(65)] {
            assert_eq!(
                Name::parse(bad),
                Err(InvalidName(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn storage_refuses_only_nul_and_length() {
        assert_eq!(check_storable("tab\there\u{1b}", 20), Ok(()));
        assert_eq!(
            check_storable("a\u{0}", 20),
            Err(TextError::ControlCharacter {
                code_point: 0,
                index: 1
            })
        );
        assert_eq!(
            check_storable("abcd", 3),
            Err(TextError::TooLong { max_chars: 3 })
        );
    }

    #[test]
    fn length_is_bounded_in_characters_and_empty_is_refused() {
        assert_eq!(check("ééé", 3), Ok(()));
        assert_eq!(check("éééé", 3), Err(TextError::TooLong { max_chars: 3 }));
        assert_eq!(check("", 3), Err(TextError::Empty));
        assert_eq!(check("run-123 ✓ 日本", 20), Ok(()));
    }

    #[test]
    fn text_deserializes_only_when_it_passes() {
        let ok: Text<5> = serde_json::from_str("\"run-1\"").unwrap();
        assert_eq!(ok.as_str(), "run-1");
        let error = serde_json::from_str::<Text<5>>("\"a\\u0000\"").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("must not contain control characters (U+0000 at character 1)"),
            "{error}"
        );
        let error = serde_json::from_str::<Text<5>>("\"run-12\"").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("must be at most 5 characters"),
            "{error}"
        );
    }
}
