//! Job files read as the reference reads them (PyYAML's `safe_load`, YAML 1.1: a plain
//! `yes`/`off` is a boolean, `0755` is octal), and `show --yaml` written as PyYAML's
//! `dump(sort_keys=True, indent=4)` writes it. serde_yaml speaks YAML 1.2 and cannot tell
//! a quoted `"yes"` from a plain one, so this reads the parser's events directly.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Parses one YAML (or JSON) document into JSON values with YAML 1.1 typing.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| e.to_string())?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Value::Null))
}

enum Open {
    Sequence(Vec<Value>, usize),
    Mapping(Map<String, Value>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Value>,
    anchors: Vec<(usize, Value)>,
    error: Option<String>,
    documents: usize,
    /// Nodes copied by aliases so far.
    expanded: usize,
}

const MAX_EXPANDED_NODES: usize = 100_000;

fn size_of_value(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(size_of_value).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(size_of_value).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn add(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, value.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Open::Sequence(items, _)) => items.push(value),
            Some(Open::Mapping(map, key, _)) => match key.take() {
                None => *key = Some(key_text(&value)),
                Some(key) => {
                    if key == "<<" {
                        // A merge key: the referenced mappings' entries (one, or a list of
                        // them, earlier ones winning), unless already set.
                        let sources = match value {
                            Value::Array(items) => items,
                            single => vec![single],
                        };
                        for source in sources {
                            if let Value::Object(merged) = source {
                                for (k, v) in merged {
                                    map.entry(k).or_insert(v);
                                }
                            }
                        }
                    } else {
                        map.insert(key, value);
                    }
                }
            },
        }
    }
}

/// A mapping key as Python's `json.dumps` would write it.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "true".into(),
        Value::Bool(false) => "false".into(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = match (style, tag) {
                    (TScalarStyle::Plain, None) => resolve_plain(&text),
                    (_, Some(tag)) if tag.suffix == "int" => resolve_plain(&text)
                        .as_i64()
                        .map_or(Value::String(text), Value::from),
                    _ => Value::String(text),
                };
                self.add(value, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Sequence(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Mapping(Map::new(), None, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Open::Sequence(items, anchor)) => (Value::Array(items), anchor),
                    Some(Open::Mapping(map, _, anchor)) => (Value::Object(map), anchor),
                    None => return,
                };
                self.add(value, anchor);
            }
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _)| *a == id) {
                Some((_, value)) => {
                    // Aliases copy; cap the copying so that a "billion laughs" file fails
                    // instead of filling memory.
                    self.expanded += size_of_value(value);
                    if self.expanded > MAX_EXPANDED_NODES {
                        self.error = Some("too many aliases expanded".into());
                        return;
                    }
                    let value = value.clone();
                    self.add(value, 0);
                }
                None => self.error = Some(format!("unknown alias {id}")),
            },
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some("a job file holds one YAML document, this has more".into());
                }
            }
            _ => {}
        }
    }
}

/// What a plain (unquoted) scalar means in YAML 1.1, as PyYAML resolves it. Dates and
/// times stay strings (PyYAML would make objects the reference then fails to send).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    if let Some(int) = resolve_int(text) {
        return Value::Number(int.into());
    }
    if let Some(float) = resolve_float(text) {
        return Number::from_f64(float).map_or(Value::String(text.into()), Value::Number);
    }
    Value::String(text.into())
}

fn resolve_int(text: &str) -> Option<i64> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
    };
    if digits.is_empty() || text.starts_with('_') {
        return None;
    }
    if digits.starts_with(['+', '-']) {
        return None;
    }
    // Digits only: Rust's parsers would also take a sign, YAML's do not.
    let number = |text: &str, radix: u32| {
        (!text.is_empty() && text.chars().all(|c| c.is_digit(radix)))
            .then(|| i64::from_str_radix(text, radix).ok())
            .flatten()
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        number(hex, 16)?
    } else if let Some(binary) = digits.strip_prefix("0b") {
        number(binary, 2)?
    } else if digits.len() > 1 && digits.starts_with('0') {
        number(&digits[1..], 8)?
    } else {
        number(digits, 10)?
    };
    Some(if negative { -value } else { value })
}

fn resolve_float(text: &str) -> Option<f64> {
    let lowered = text.to_ascii_lowercase();
    match lowered.as_str() {
        ".inf" | "+.inf" | "-.inf" | ".nan" => return None, // not representable in JSON
        _ => {}
    }
    // YAML 1.1 floats need a dot: `1e3` is a string to PyYAML.
    let looks_like_float = text.contains('.')
        && text
            .trim_start_matches(['-', '+'])
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+' | '_'));
    if !looks_like_float {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// PyYAML's `dump(value, sort_keys=True, indent=4, default_flow_style=False)`, with the
/// reference's literal-block style for strings that span lines.
pub fn dump(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => dump_mapping(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => dump_sequence(items, 0, &mut out),
        scalar => {
            // PyYAML indents a document's own block scalar as it would a mapping's value.
            out.push_str(&scalar_text(scalar, 4));
            out.push('\n');
        }
    }
    if out.ends_with("\n\n") {
        // Only a `|+` block ends in a blank line; PyYAML then marks the document's end.
        out.push_str("...\n");
    }
    out
}

fn dump_mapping(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let pad = " ".repeat(indent);
    for key in keys {
        let value = &map[key];
        if is_explicit_key(key) {
            // Not a simple key: PyYAML writes it after `? `, the `:` on a new line.
            let text = scalar_text(&Value::String(key.clone()), indent + 4);
            out.push_str(&format!("{pad}? {text}\n{pad}:"));
        } else {
            let text = scalar_text(&Value::String(key.clone()), indent);
            out.push_str(&format!("{pad}{text}:"));
        }
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                dump_mapping(inner, indent + 4, out);
            }
            // PyYAML writes a mapping's sequence at the mapping's own indentation.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                dump_sequence(items, indent, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar, indent + 4));
                out.push('\n');
            }
        }
    }
}

/// Whether PyYAML writes the key after `? `: empty, spanning lines, or too long for a
/// simple key (under 128 characters, of which PyYAML counts 5 for the `!!str` tag; a
/// reader takes at most 1024).
fn is_explicit_key(key: &str) -> bool {
    key.is_empty()
        || key.contains(['\n', '\u{85}', '\u{2028}', '\u{2029}'])
        || key.chars().count() > 122
}

fn dump_sequence(items: &[Value], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                // `-   key: value`, the other keys aligned under the first.
                let mut nested = String::new();
                dump_mapping(inner, indent + 4, &mut nested);
                let body = nested.trim_start_matches(' ');
                out.push_str(&format!("{pad}-   {body}"));
            }
            Value::Array(inner) if !inner.is_empty() => {
                let mut nested = String::new();
                dump_sequence(inner, indent + 4, &mut nested);
                out.push_str(&format!("{pad}-   {}", nested.trim_start_matches(' ')));
            }
            scalar => out.push_str(&format!("{pad}- {}\n", scalar_text(scalar, indent + 4))),
        }
    }
}

fn scalar_text(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        // As PyYAML: `5e+30` would read back as a string in YAML 1.1, `5.0e+30` is a float.
        Value::Number(n) if n.is_f64() && !n.to_string().contains('.') => {
            n.to_string().replacen('e', ".0e", 1)
        }
        Value::Number(n) => n.to_string(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
        Value::String(s) if s.contains('\n') => literal_block(s, indent),
        Value::String(s) if needs_quotes(s) => quoted(s),
        Value::String(s) => s.clone(),
    }
}

/// A multi-line string as the reference writes it: a `|` block of its lines (split as
/// Python's `splitlines` does), each with its trailing whitespace stripped. As in PyYAML,
/// the header states the indentation (`4`) when the first line starts with a space or is
/// blank, and keeps the blank lines at the end (`+`); without them the text would read
/// back otherwise, or not at all.
fn literal_block(s: &str, indent: usize) -> String {
    let unified = s.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unified.lines().map(str::trim_end).collect();
    // A block holds printable ASCII only (allow_unicode is off): PyYAML quotes the rest.
    if lines
        .iter()
        .any(|line| line.chars().any(|c| !(' '..='~').contains(&c)))
    {
        return quoted(
            &lines
                .iter()
                .map(|line| format!("{line}\n"))
                .collect::<String>(),
        );
    }
    let mut header = String::from("|");
    if lines
        .first()
        .is_none_or(|first| first.is_empty() || first.starts_with(' '))
    {
        header.push('4');
    }
    if lines.last().is_none_or(|last| last.is_empty()) {
        header.push('+');
    }
    let pad = " ".repeat(indent);
    // Blank lines stay bare, as PyYAML writes them.
    let body: Vec<String> = lines
        .iter()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect();
    format!("{header}\n{}", body.join("\n"))
}

/// Whether PyYAML would quote the string: empty, special words, numbers, leading
/// indicators, `: ` or ` #` inside, surrounding spaces, or non-printable/non-ASCII text.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || resolve_plain(s) != Value::String(s.to_string())
        || s.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`', ' ',
        ])
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(|c| !c.is_ascii() || c.is_control())
}

fn quoted(s: &str) -> String {
    if s.chars().any(|c| !c.is_ascii() || c.is_control()) {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                // PyYAML's short escapes.
                '\0' => out.push_str("\\0"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                '\x1b' => out.push_str("\\e"),
                '\u{85}' => out.push_str("\\N"),
                '\u{a0}' => out.push_str("\\_"),
                '\u{2028}' => out.push_str("\\L"),
                '\u{2029}' => out.push_str("\\P"),
                c if (c as u32) < 0x100 && (c.is_control() || !c.is_ascii()) => {
                    out.push_str(&format!("\\x{:02X}", c as u32))
                }
                c if (c as u32) < 0x10000 && !c.is_ascii() => {
                    out.push_str(&format!("\\u{:04X}", c as u32))
                }
                c if !c.is_ascii() => out.push_str(&format!("\\U{:08X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_files_read_as_yaml_1_1() {
        let job = parse(
            "job_queue: q\nflag: yes\nquoted: 'yes'\nmode: 0755\nn: 12\nf: 1.5\nnothing:\nlist: [a, 'b']\n",
        )
        .unwrap();
        assert_eq!(
            job,
            json!({"job_queue": "q", "flag": true, "quoted": "yes", "mode": 493, "n": 12,
                   "f": 1.5, "nothing": null, "list": ["a", "b"]})
        );
        assert_eq!(
            parse("{\"a\": [1, {\"b\": null}]}").unwrap(),
            json!({"a": [1, {"b": null}]})
        );
        assert!(parse("a: [unclosed").is_err());
        assert_eq!(
            parse("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n").unwrap()["derived"],
            json!({"x": 1, "y": 2})
        );
        let merged = parse("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n").unwrap();
        assert_eq!(merged["c"], json!({"x": 1, "y": 2}));
        assert_eq!(
            parse("a: 0x+5\nb: 0-5\n").unwrap(),
            json!({"a": "0x+5", "b": "0-5"})
        );
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        let level = |name: &str, of: &str| format!("{name}: &{name} [{}]\n", [of; 10].join(", "));
        let bomb = [
            level("a", "x"),
            level("b", "*a"),
            level("c", "*b"),
            level("d", "*c"),
            level("e", "*d"),
        ]
        .concat();
        assert!(parse(&bomb).is_err(), "alias expansion is capped");
    }

    #[test]
    fn literal_blocks_read_back_as_the_reference_wrote_them() {
        // The fuzz target `yaml` found blank lines at the end dropped; probing the same
        // code then showed a first line starting with a space made the output unreadable
        // and a lone carriage return broke a line without indentation.
        let value = json!({"kept": "echo b\n    \n", "spaced": "  a\nb\n", "cr": "a\rb\n",
                           "blank": "\n", "list": ["  a\nb\n\n", {"m": " x\n"}]});
        let dumped = dump(&value);
        assert_eq!(
            parse(&dumped).unwrap(),
            json!({"kept": "echo b\n\n", "spaced": "  a\nb\n", "cr": "a\nb\n",
                   "blank": "\n", "list": ["  a\nb\n\n", {"m": " x\n"}]}),
            "{dumped}"
        );
        assert!(dumped.contains("kept: |+\n    echo b\n\n"), "{dumped}");
        assert!(dumped.contains("spaced: |4\n      a\n    b\n"), "{dumped}");
    }

    #[test]
    fn blank_lines_are_bare_and_a_final_keep_block_ends_the_document() {
        // What PyYAML 6 writes for the same values.
        assert_eq!(dump(&json!({"k": "a\n\nb\n"})), "k: |\n    a\n\n    b\n");
        assert_eq!(
            dump(&json!({"k": "  a\nb\n\n"})),
            "k: |4+\n      a\n    b\n\n...\n"
        );
    }

    #[test]
    fn multi_line_keys_are_explicit() {
        // Found by the fuzz target `yaml`: such a key was written as a block where a
        // simple key goes, and the whole output read back as one string.
        let value = json!({"\u{8}\"a\"\n\n!\n:": "003e1", "n": {"x\ny": [1]}, "l": [{"k\n": 2}]});
        let dumped = dump(&value);
        assert_eq!(
            parse(&dumped).unwrap(),
            json!({"\u{8}\"a\"\n\n!\n:\n": "003e1", "n": {"x\ny\n": [1]}, "l": [{"k\n": 2}]}),
            "{dumped}"
        );
        assert!(
            dumped.contains("n:\n    ? |\n        x\n        y\n    :\n    - 1\n"),
            "{dumped}"
        );
    }

    #[test]
    fn a_multi_line_document_reads_back() {
        // Found by the fuzz target `yaml`: the block's lines were not indented as its
        // header said, and the output did not parse.
        let value = parse(">\n\n!").unwrap();
        assert_eq!(value, json!("\n!\n"));
        assert_eq!(dump(&value), "|4\n\n    !\n");
        assert_eq!(parse(&dump(&value)), Ok(value));
    }

    #[test]
    fn floats_in_exponent_form_read_back_as_floats() {
        // Found by the fuzz target `yaml`: 5e+30 was written without a dot, which makes
        // it a string to a YAML 1.1 reader.
        let value = parse(": 0xf: 0.5e+31\nnothing: ").unwrap();
        assert_eq!(value, json!({"null": {"15": 5e30}, "nothing": null}));
        assert_eq!(dump(&value), "nothing: null\n'null':\n    '15': 5.0e+30\n");
        assert_eq!(parse(&dump(&value)), Ok(value));
    }

    #[test]
    fn multi_line_strings_that_a_block_cannot_hold_are_quoted() {
        // Found by the fuzz target `yaml`: a NUL written raw into a block ended the
        // document there. PyYAML quotes such text, and text with tabs or non-ASCII too.
        let value = json!({"c ": "c:af''\\\u{0}0l \u{e}\\\n\n:", "tab": "a\tb\n", "accent": "caf\u{e9}\nb"});
        let dumped = dump(&value);
        assert!(dumped.lines().all(|line| line.contains(": \"")), "{dumped}");
        assert_eq!(
            parse(&dumped).unwrap(),
            json!({"c ": "c:af''\\\u{0}0l \u{e}\\\n\n:\n", "tab": "a\tb\n", "accent": "caf\u{e9}\nb\n"})
        );
    }

    #[test]
    fn quoted_strings_use_pyyamls_short_escapes() {
        let value =
            json!("\u{0}\u{7}\u{8}\t\u{b}\u{c}\r\u{1b}\u{85}\u{a0}\u{2028}\u{2029}\u{1}\u{e9}");
        let dumped = dump(&value);
        assert_eq!(
            dumped,
            "\"\\0\\a\\b\\t\\v\\f\\r\\e\\N\\_\\L\\P\\x01\\xE9\"\n"
        );
        assert_eq!(parse(&dumped), Ok(value));
        assert_eq!(dump(&json!({"t": "a\tb\n"})), "t: \"a\\tb\\n\"\n");
    }

    #[test]
    fn long_and_empty_keys_are_explicit() {
        // Found by the fuzz target `yaml`: a key of over 1024 characters was written as a
        // simple key, which no reader takes. What PyYAML 6 writes:
        let long = "y".repeat(123);
        assert_eq!(dump(&json!({&long: 1})), format!("? {long}\n: 1\n"));
        let short = "y".repeat(122);
        assert_eq!(dump(&json!({&short: 1})), format!("{short}: 1\n"));
        assert_eq!(dump(&json!({"": 1})), "? ''\n: 1\n");
        assert_eq!(dump(&json!({"a\u{2028}b": 1})), "? \"a\\Lb\"\n: 1\n");
        let huge = json!({"d".repeat(1100): "0b"});
        assert_eq!(parse(&dump(&huge)), Ok(huge));
    }

    #[test]
    fn dumps_like_pyyaml() {
        let value = json!({"job_queue": "q", "test_data": {"test_cmds": "echo a\necho b\n"}, "tags": ["x", "yes"]});
        assert_eq!(
            dump(&value),
            "job_queue: q\ntags:\n- x\n- 'yes'\ntest_data:\n    test_cmds: |\n        echo a\n        echo b\n"
        );
    }
}
