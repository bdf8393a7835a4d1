//! JSON and `repr` rendered byte for byte as the reference CLI's Python prints them, since
//! scripts parse that output: `json.dumps` escapes non-ASCII as `\uXXXX`, puts a space
//! after `,` and `:` when compact, and indents by 4 (or 2) when asked.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use serde_json::Value;

/// `json.dumps(value)`: one line, `", "` and `": "` separators. Objects come out in the
/// order they serialize in: sorted for `Value`, declaration order for structs (for the
/// reference's dicts, which keep insertion order).
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> String {
    render(value, PythonCompact)
}

/// `json.dumps(value, indent=N)`.
pub fn dumps_indented<T: Serialize + ?Sized>(value: &T, indent: usize) -> String {
    let spaces = " ".repeat(indent);
    render(
        value,
        Ascii(PrettyFormatter::with_indent(spaces.as_bytes())),
    )
}

/// `json.dumps(value, sort_keys=True, indent=4)`.
pub fn dumps_sorted(value: &Value) -> String {
    dumps_indented(&sorted(value), 4)
}

/// `json.dumps(value, sort_keys=True)`: one line, keys sorted.
pub fn dumps_sorted_compact(value: &Value) -> String {
    dumps(&sorted(value))
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn render<T: Serialize + ?Sized, F: Formatter>(value: &T, formatter: F) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("a JSON value serializes");
    String::from_utf8(out).expect("the formatters write ASCII")
}

/// Writes `\uXXXX` (surrogate pairs above the BMP) for every non-ASCII character.
fn write_ascii<W: ?Sized + io::Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    for c in fragment.chars() {
        if c.is_ascii() {
            writer.write_all(&[c as u8])?;
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
        }
    }
    Ok(())
}

/// Python's default separators, ASCII only.
struct PythonCompact;

impl Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        f: &str,
    ) -> io::Result<()> {
        write_ascii(w, f)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        CompactFormatter.write_f64(w, value)
    }
}

/// A formatter with ASCII-only strings.
struct Ascii<F>(F);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name<W: ?Sized + io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            self.0.$name(w $(, $arg)*)
        })*
    };
}

impl<F: Formatter> Formatter for Ascii<F> {
    delegate! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        end_object_key();
        begin_object_value();
        end_object_value();
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        f: &str,
    ) -> io::Result<()> {
        write_ascii(w, f)
    }
}

/// Python's `repr()` of a JSON value, as the reference prints validation errors
/// (`['Missing data for required field.']`).
pub fn repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => repr_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's string repr: single quotes unless the text has a `'` and no `"`.
fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_matches_python() {
        let value = json!({"b": "é", "a": [1, "x"]});
        // serde_json maps are sorted (as the reference server sends them).
        assert_eq!(dumps(&value), r#"{"a": [1, "x"], "b": "\u00e9"}"#);
        assert_eq!(
            dumps_sorted(&value),
            "{\n    \"a\": [\n        1,\n        \"x\"\n    ],\n    \"b\": \"\\u00e9\"\n}"
        );
        assert_eq!(dumps(&json!("😀")), r#""\ud83d\ude00""#);
        assert_eq!(dumps(&json!({})), "{}");
        assert_eq!(
            repr(&json!(["Missing data.", "it's"])),
            r#"['Missing data.', "it's"]"#
        );
        assert_eq!(repr(&json!({"0": ["x"]})), "{'0': ['x']}");
    }
}
