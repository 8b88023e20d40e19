//! Typed backend options, filled from text.
//!
//! Each network backend declares its options as a struct (`S3Options`,
//! `SftpOptions`, …). Users write them as text: in cairn.toml, where
//! `connections = 8` and `connections = "8"` must mean the same, and in the
//! `BTreeMap<String, String>` that every `from_url` takes. [`from_map`]
//! fills such a struct from that text: numbers and flags are parsed here,
//! an empty value is the same as none, and a key the struct does not
//! declare is an error that names it and lists the known ones, so a typo
//! in cairn.toml is found at once rather than silently ignored.
//!
//! Messages name the backend and the option. They repeat a value only
//! where it failed to parse as a number or a flag: values of text options
//! can be secrets.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use crate::{BackendError, ErrorKind, Result};

/// Options as text: option name → value.
pub type OptionMap = BTreeMap<String, String>;

/// Fill `T` (a struct of options) from `map`; `backend` names the backend in
/// messages. Every key of `map` must be a field of `T`.
pub fn from_map<T: DeserializeOwned>(backend: &str, map: &OptionMap) -> Result<T> {
    let mut rest = OptionMap::new();
    deserialize(backend, map, true, &mut rest)
}

/// Like [`from_map`], but keys `T` does not declare are returned instead of
/// refused: for backends that pass further options on to a library with a
/// list of its own (S3 and Azure to `object_store`).
pub fn split<T: DeserializeOwned>(backend: &str, map: &OptionMap) -> Result<(T, OptionMap)> {
    let mut rest = OptionMap::new();
    let t = deserialize(backend, map, false, &mut rest)?;
    Ok((t, rest))
}

fn deserialize<T: DeserializeOwned>(
    backend: &str,
    map: &OptionMap,
    closed: bool,
    rest: &mut OptionMap,
) -> Result<T> {
    T::deserialize(Options {
        backend,
        map,
        closed,
        rest,
    })
    .map_err(|e| BackendError::new(ErrorKind::Other, e.0))
}

/// An option that parsed but is out of range: `{backend} option
/// {key}={value}: expected {expected}`. Only for values that are not
/// secrets (numbers, flags).
#[cfg(any(feature = "s3", feature = "azure", feature = "gcs"))]
pub(crate) fn out_of_range(
    backend: &str,
    key: &str,
    value: impl fmt::Display,
    expected: &str,
) -> BackendError {
    BackendError::new(
        ErrorKind::Other,
        format!("{backend} option {key}={value}: expected {expected}"),
    )
}

/// A message, already complete: serde's own messages ("invalid type …")
/// get the backend and option put in front where they arise.
#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The whole map, as a struct.
struct Options<'a> {
    backend: &'a str,
    map: &'a OptionMap,
    /// Unknown keys are errors (else they go to `rest`).
    closed: bool,
    rest: &'a mut OptionMap,
}

impl<'de> de::Deserializer<'de> for Options<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(Error(format!(
            "{} options: only a struct of options can be filled",
            self.backend
        )))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut known = Vec::new();
        for (key, value) in self.map {
            if fields.contains(&key.as_str()) {
                known.push((key.as_str(), value.as_str()));
            } else if self.closed && fields.is_empty() {
                return Err(Error(format!(
                    "unknown {} option {key:?} (it takes none)",
                    self.backend
                )));
            } else if self.closed {
                return Err(Error(format!(
                    "unknown {} option {key:?} (known: {})",
                    self.backend,
                    fields.join(", ")
                )));
            } else {
                self.rest.insert(key.clone(), value.clone());
            }
        }
        visitor.visit_map(Entries {
            backend: self.backend,
            entries: known.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct Entries<'a, I> {
    backend: &'a str,
    entries: I,
    value: Option<(&'a str, &'a str)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a str, &'a str)>> MapAccess<'de> for Entries<'a, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| Error("an option value without its key".into()))?;
        seed.deserialize(Text(value))
            .map_err(|e| Error(format!("{} option {key}: {e}", self.backend)))
    }
}

/// One value: text, parsed as the field's type asks.
struct Text<'a>(&'a str);

impl Text<'_> {
    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, Error> {
        self.0
            .trim()
            .parse()
            .map_err(|_| Error(format!("{:?} is not {what}", self.0)))
    }
}

impl<'de> de::Deserializer<'de> for Text<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => visitor.visit_bool(true),
            "0" | "false" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(Error(format!("{:?} is not true or false", self.0))),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(self.parse("a whole number")?)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(self.parse("a whole number")?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(self.parse("a number")?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.0.trim().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        connections: Option<usize>,
        timeout_secs: Option<f64>,
        fsync: Option<bool>,
        key_file: Option<PathBuf>,
        user: Option<String>,
    }

    fn map(pairs: &[(&str, &str)]) -> OptionMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn text_is_parsed_as_each_field_asks() {
        let d: Demo = from_map(
            "x",
            &map(&[
                ("connections", " 8"),
                ("timeout_secs", "12.5"),
                ("fsync", "Off"),
                ("key_file", "~/k"),
                ("user", "bob"),
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            Demo {
                connections: Some(8),
                timeout_secs: Some(12.5),
                fsync: Some(false),
                key_file: Some("~/k".into()),
                user: Some("bob".into()),
            }
        );
        // Empty is unset.
        let d: Demo = from_map("x", &map(&[("user", ""), ("connections", " ")])).unwrap();
        assert_eq!(d, Demo::default());
    }

    #[test]
    fn errors_name_the_backend_and_the_option() {
        let err = from_map::<Demo>("sftp", &map(&[("timeout", "5")])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Other);
        assert!(
            err.to_string().contains("unknown sftp option \"timeout\"")
                && err.to_string().contains("timeout_secs"),
            "{err}"
        );
        let err = from_map::<Demo>("sftp", &map(&[("connections", "many")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("sftp option connections: \"many\" is not a whole number"),
            "{err}"
        );
        let err = from_map::<Demo>("sftp", &map(&[("connections", "-1")])).unwrap_err();
        assert!(err.to_string().contains("connections"), "{err}");
        let err = from_map::<Demo>("sftp", &map(&[("fsync", "maybe")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("fsync: \"maybe\" is not true or false"),
            "{err}"
        );
    }

    #[test]
    fn split_returns_what_the_struct_does_not_declare() {
        let (d, rest) =
            split::<Demo>("s3", &map(&[("connections", "2"), ("region", "eu")])).unwrap();
        assert_eq!(d.connections, Some(2));
        assert_eq!(rest, map(&[("region", "eu")]));
    }
}
