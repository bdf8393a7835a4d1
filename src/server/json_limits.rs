//! JSON bodies parsed within limits. A 16 MiB body of tiny keys would become millions of
//! map entries (gigabytes); a deep one, a deep recursion. The parser counts as it builds
//! and stops at the first limit crossed, before the memory is spent.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How much of a JSON body the server builds at most.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    /// Arrays and objects inside each other.
    pub depth: usize,
    /// Values in the whole document (object keys count as values).
    pub values: usize,
    /// Bytes in one string, key or value.
    pub string_bytes: usize,
}

/// The limits of every JSON body the API reads (documented in docs/security.md).
pub const LIMITS: JsonLimits = JsonLimits {
    depth: 64,
    values: 100_000,
    string_bytes: 8 * 1024 * 1024,
};

/// Why a body was not parsed.
#[derive(Debug)]
pub enum JsonRefusal {
    /// Not JSON at all.
    Malformed,
    /// Valid so far, but past a limit; the message says which.
    TooComplex(String),
}

/// Parses `bytes` into a value within `limits`.
pub fn parse(bytes: &[u8], limits: JsonLimits) -> Result<Value, JsonRefusal> {
    let budget = Budget {
        limits,
        values_left: Cell::new(limits.values),
        exceeded: Cell::new(None),
    };
    // The depth limit must stay below serde_json's own (128), whose error would only say
    // "malformed".
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        budget: &budget,
        depth: 0,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, budget.exceeded.take()) {
        (_, Some(limit)) => Err(JsonRefusal::TooComplex(limit)),
        (Ok(value), None) => Ok(value),
        (Err(_), None) => Err(JsonRefusal::Malformed),
    }
}

struct Budget {
    limits: JsonLimits,
    values_left: Cell<usize>,
    /// The first limit crossed (the parser's own error then only stops it).
    exceeded: Cell<Option<String>>,
}

impl Budget {
    fn refuse<E: de::Error>(&self, why: String) -> E {
        self.exceeded.set(Some(why));
        E::custom("limit exceeded")
    }

    fn take_value<E: de::Error>(&self) -> Result<(), E> {
        match self.values_left.get().checked_sub(1) {
            Some(left) => {
                self.values_left.set(left);
                Ok(())
            }
            None => Err(self.refuse(format!("more than {} values", self.limits.values))),
        }
    }

    fn check_string<E: de::Error>(&self, text: &str) -> Result<(), E> {
        if text.len() > self.limits.string_bytes {
            return Err(self.refuse(format!(
                "a string longer than {} bytes",
                self.limits.string_bytes
            )));
        }
        Ok(())
    }
}

/// One value of the document, at `depth`.
#[derive(Clone, Copy)]
struct Node<'a> {
    budget: &'a Budget,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Node<'_> {
    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= self.budget.limits.depth {
            return Err(self.budget.refuse(format!(
                "nesting deeper than {} levels",
                self.budget.limits.depth
            )));
        }
        Ok(Node {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        self.budget.take_value()?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        self.budget.take_value()?;
        Ok(Value::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        self.budget.take_value()?;
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        self.budget.take_value()?;
        Ok(Value::from(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.budget.take_value()?;
        self.budget.check_string(value)?;
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.budget.take_value()?;
        self.budget.check_string(&value)?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take_value()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        self.budget.take_value()?;
        let inner = self.nested()?;
        let mut array = Vec::new();
        while let Some(item) = items.next_element_seed(inner)? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.budget.take_value()?;
        let inner = self.nested()?;
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            self.budget.take_value()?;
            self.budget.check_string(&key)?;
            let value = entries.next_value_seed(inner)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: JsonLimits = JsonLimits {
        depth: 3,
        values: 10,
        string_bytes: 5,
    };

    fn refusal(text: &str) -> String {
        match parse(text.as_bytes(), SMALL) {
            Err(JsonRefusal::TooComplex(why)) => why,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn documents_within_the_limits_parse_as_serde_json_parses_them() {
        for text in [
            r#"{"a": [1, -2, 3.5, null, true], "b": {"c": "hello"}}"#,
            "[]",
            "7",
        ] {
            let ours = parse(text.as_bytes(), LIMITS).expect(text);
            assert_eq!(ours, serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn each_limit_stops_the_parse() {
        assert_eq!(refusal("[[[[1]]]]"), "nesting deeper than 3 levels");
        assert_eq!(refusal("[1,2,3,4,5,6,7,8,9,10]"), "more than 10 values");
        assert_eq!(
            refusal(r#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#),
            "more than 10 values"
        );
        assert_eq!(refusal(r#"["toolong"]"#), "a string longer than 5 bytes");
        assert_eq!(refusal(r#"{"toolong": 1}"#), "a string longer than 5 bytes");
    }

    #[test]
    fn malformed_documents_are_malformed() {
        for text in ["", "{", "[1,]", "{} {}", "nul"] {
            assert!(
                matches!(parse(text.as_bytes(), SMALL), Err(JsonRefusal::Malformed)),
                "{text:?}"
            );
        }
    }
}
