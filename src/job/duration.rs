//! The reference's duration grammar for `reserve_data.timeout`: integer seconds, or a
//! string such as `"1800"`, `"30m"`, `"1h 30m"`, `"2 Hours"`, `"2d5h30m"`.

/// Parses a JSON value into whole seconds, or the reason it is not a duration.
pub fn parse_duration(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(seconds) if seconds >= 0 => Ok(seconds as u64),
            Some(_) => Err("Duration must be non-negative".into()),
            None if n.is_u64() => Err("Duration is too large".into()),
            None => Err("Duration must be string or int, got <class 'float'>".into()),
        },
        serde_json::Value::String(s) => parse_duration_text(s),
        other => Err(format!(
            "Duration must be string or int, got <class '{}'>",
            python_type_name(other)
        )),
    }
}

fn parse_duration_text(text: &str) -> Result<u64, String> {
    let text = text.trim().to_lowercase();
    if text.is_empty() {
        return Err("Duration string is empty".into());
    }
    if text.starts_with('-') {
        return Err("Duration must be non-negative".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut total: u64 = 0;
    let mut rest = compact.as_str();
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_end = rest[digits_end..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |at| digits_end + at);
        let (digits, unit) = (&rest[..digits_end], &rest[digits_end..unit_end]);
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("Invalid duration '{text}'"))?;
        let scale = match unit {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            _ => return Err(format!("Invalid duration '{text}'")),
        };
        total = amount
            .checked_mul(scale)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| "Duration is too large".to_string())?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

fn python_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "NoneType",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "dict",
        serde_json::Value::Number(_) => "float",
        serde_json::Value::String(_) => "str",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_reference_forms() {
        for (input, seconds) in [
            (json!(1800), 1800),
            (json!("1800"), 1800),
            (json!("30m"), 1800),
            (json!("1800s"), 1800),
            (json!("1h30m"), 5400),
            (json!("1h 30m"), 5400),
            (json!("2 Hours"), 7200),
            (json!("2d5h30m"), 192_600),
            (json!(" 7 "), 7),
        ] {
            assert_eq!(parse_duration(&input), Ok(seconds), "{input}");
        }
    }

    #[test]
    fn rejects_what_the_reference_rejects() {
        for input in [
            json!("invalid"),
            json!("30x"),
            json!("-30m"),
            json!(""),
            json!(-5),
            json!(1.5),
            json!(true),
            json!("h"),
        ] {
            assert!(parse_duration(&input).is_err(), "{input}");
        }
        assert_eq!(
            parse_duration(&json!(1.5)).unwrap_err(),
            "Duration must be string or int, got <class 'float'>"
        );
    }
}
