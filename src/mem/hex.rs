//! Addresses in JSON as the kernel prints them in /proc: hex strings (`"0x7f0000000000"`).
//! A JSON number would lose precision above 2^53 in many readers and would not match what a
//! person sees in `/proc/<pid>/maps`.
//!
//! Use with `#[serde(with = "crate::mem::hex")] #[schemars(with = "String")]`; [`option`] is
//! the same for `Option<u64>`.

use serde::{Deserialize, Deserializer, Serializer};

/// `0x` followed by lower-case hex digits.
pub fn format(v: u64) -> String {
    format!("{v:#x}")
}

/// Parse `0x...` (or bare hex digits).
pub fn parse(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(digits, 16).ok()
}

/// Serialize a `u64` as a hex string.
///
/// # Errors
/// Only the serializer's own.
pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*v))
}

/// Deserialize a hex string (a plain JSON number is accepted too).
///
/// # Errors
/// When the value is neither a hex string nor a number.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Number(u64),
    }
    match Repr::deserialize(d)? {
        Repr::Number(n) => Ok(n),
        Repr::Text(t) => {
            parse(&t).ok_or_else(|| serde::de::Error::custom(format!("'{t}' is not a hex address")))
        }
    }
}

/// The same for `Option<u64>` (`null` when absent).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize `Some(v)` as a hex string, `None` as null.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&super::format(*v)),
            None => s.serialize_none(),
        }
    }

    /// Deserialize a hex string, a number or null.
    ///
    /// # Errors
    /// When the value is none of those.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] u64);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct A {
        #[serde(with = "super")]
        at: u64,
        #[serde(with = "super::option")]
        maybe: Option<u64>,
    }

    #[test]
    fn addresses_round_trip_as_hex_strings() {
        let a = A {
            at: 0x7f12_3456_7000,
            maybe: None,
        };
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, r#"{"at":"0x7f1234567000","maybe":null}"#);
        assert_eq!(serde_json::from_str::<A>(&j).unwrap(), a);
        let old: A = serde_json::from_str(r#"{"at":4096,"maybe":"0x10"}"#).unwrap();
        assert_eq!((old.at, old.maybe), (4096, Some(16)));
        assert!(serde_json::from_str::<A>(r#"{"at":"zz","maybe":null}"#).is_err());
    }
}
