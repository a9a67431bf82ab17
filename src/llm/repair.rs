//! Structured answers repaired before they are trusted. Small and local models wrap
//! their JSON in prose or a Markdown fence, give numbers as strings, run past a score's
//! range, leave out a list, or stop at `max_tokens` in the middle of the object. Each of
//! those is mended here, and noted, when the meaning is plain; what is still wrong is
//! reported so the model can be asked once more with the problem shown to it.

use serde_json::{Map, Value};

/// An answer made to fit its schema, with what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    pub value: Value,
    /// One line per mend (empty when the answer was right as it came).
    pub notes: Vec<String>,
}

/// Why an answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// No JSON object anywhere in the answer: the model ignored the request for one.
    #[error("the answer holds no JSON object")]
    NoJson,
    /// JSON that still does not match the schema once mended.
    #[error("the JSON answer does not match the schema: {0}")]
    Invalid(String),
}

/// Extracts, mends and validates a structured answer against `schema`. `cut_off` says
/// the answer stopped at `max_tokens` (an unclosed object is then closed, if it can be).
pub fn repair(text: &str, schema: &Value, cut_off: bool) -> Result<Repaired, Unusable> {
    let mut notes = Vec::new();
    // A newline or tab written raw inside a string (small models do, even under a
    // grammar) makes the JSON invalid; escaped, it reads as meant.
    let escaped = escape_raw_controls(text);
    let found = extract(text).or_else(|| {
        let v = extract(escaped.as_deref()?)?;
        notes.push("escaped control characters written raw inside a string".to_owned());
        Some(v)
    });
    let text = escaped.as_deref().unwrap_or(text);
    let mut value = match found {
        Some((v, wrapped)) => {
            if wrapped {
                notes.push("took the JSON object out of the text around it".to_owned());
            }
            v
        }
        None => match close_truncated(text) {
            Some(v) => {
                notes.push(if cut_off {
                    "closed a JSON object cut off at max_tokens".to_owned()
                } else {
                    "closed an unfinished JSON object".to_owned()
                });
                v
            }
            None if text.contains('{') => {
                return Err(Unusable::Invalid(if cut_off {
                    "the JSON object was cut off at max_tokens where it cannot be closed".into()
                } else {
                    "the JSON object is not valid JSON".into()
                }));
            }
            None => return Err(Unusable::NoJson),
        },
    };
    coerce(&mut value, schema, "", &mut notes);
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| Unusable::Invalid(format!("the schema itself is invalid: {e}")))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(Repaired { value, notes })
    } else {
        Err(Unusable::Invalid(problems.join("; ")))
    }
}

/// `text` with every control character inside a string literal of its JSON (from the
/// first `{` on: quotes in prose before it are not strings) escaped (`\n`, `\t`, `\r`,
/// else `\u00XX`); `None` when it has none.
fn escape_raw_controls(text: &str) -> Option<String> {
    let start = text.find('{')?;
    let (mut out, mut changed) = (text[..start].to_owned(), false);
    let (mut in_string, mut escaped) = (false, false);
    for c in text[start..].chars() {
        if in_string && !escaped && (c as u32) < 0x20 {
            changed = true;
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                _ => out.push_str(&format!("\\u{:04x}", c as u32)),
            }
            continue;
        }
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (false, _, '"') => in_string = true,
            _ => {}
        }
        out.push(c);
    }
    changed.then_some(out)
}

/// The first JSON object in `text` (a fenced block first, then the first balanced
/// `{…}`), and whether anything surrounded it.
fn extract(text: &str) -> Option<(Value, bool)> {
    let trimmed = text.trim();
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
        return Some((v, false));
    }
    // ```json … ``` (or a bare ``` fence)
    let mut rest = trimmed;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |i| i + 1);
        let Some(end) = after[body_start..].find("```") else {
            break;
        };
        let block = after[body_start..body_start + end].trim();
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(block) {
            return Some((v, true));
        }
        rest = &after[body_start + end + 3..];
    }
    // The first balanced object.
    let mut from = 0;
    while let Some(i) = trimmed[from..].find('{') {
        let start = from + i;
        if let Some(end) = balanced_end(&trimmed[start..])
            && let Ok(v @ Value::Object(_)) =
                serde_json::from_str::<Value>(&trimmed[start..start + end])
        {
            return Some((v, true));
        }
        from = start + 1;
    }
    None
}

/// The length of the balanced `{…}` at the start of `s`, if it closes.
fn balanced_end(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
    for (i, c) in s.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + c.len_utf8());
                }
            }
            _ => {}
        }
    }
    None
}

/// An object that starts but never ends (the answer was cut off), closed: an open
/// string is ended, and while that does not make JSON, the last member (a dangling key,
/// a half number) is dropped; open arrays and objects are closed.
fn close_truncated(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let mut s = text[start..].trim_end().to_owned();
    for _ in 0..16 {
        let scan = Scan::of(&s);
        if scan.stack.is_empty() {
            return None;
        }
        let mut candidate = s.clone();
        if scan.escaped {
            candidate.pop();
        }
        if scan.in_string {
            candidate.push('"');
        }
        let trimmed = candidate.trim_end().trim_end_matches(',').trim_end();
        // A key with no value yet is dropped with its member, below.
        if !trimmed.ends_with(':') {
            let mut closed = trimmed.to_owned();
            for closer in scan.stack.iter().rev() {
                closed.push(*closer);
            }
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&closed) {
                return Some(v);
            }
        }
        // Drop the last member and try again.
        let cut = scan.last_separator?;
        s.truncate(cut);
        let t = s.trim_end().len();
        s.truncate(t);
    }
    None
}

/// Where a text stands at its end: open brackets, inside a string or not, and the last
/// `,` or `{`/`[` outside a string (where a member can be cut off).
struct Scan {
    stack: Vec<char>,
    in_string: bool,
    escaped: bool,
    last_separator: Option<usize>,
}

impl Scan {
    fn of(s: &str) -> Self {
        let mut scan = Scan {
            stack: Vec::new(),
            in_string: false,
            escaped: false,
            last_separator: None,
        };
        for (i, c) in s.char_indices() {
            if scan.in_string {
                match (scan.escaped, c) {
                    (true, _) => scan.escaped = false,
                    (false, '\\') => scan.escaped = true,
                    (false, '"') => scan.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => scan.in_string = true,
                '{' => {
                    scan.stack.push('}');
                    scan.last_separator = Some(i + 1);
                }
                '[' => {
                    scan.stack.push(']');
                    scan.last_separator = Some(i + 1);
                }
                '}' | ']' => {
                    scan.stack.pop();
                }
                ',' => scan.last_separator = Some(i),
                _ => {}
            }
        }
        scan
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Mends `value` toward `schema` where the meaning is plain, noting each mend.
fn coerce(value: &mut Value, schema: &Value, at: &str, notes: &mut Vec<String>) {
    let types = types(schema);
    let wants = |t: &str| types.contains(&t);
    let here = if at.is_empty() { "the answer" } else { at };
    // Numbers given as strings ("85", "85/100", "85%").
    if (wants("integer") || wants("number"))
        && let Value::String(s) = value
    {
        let digits: String = s
            .trim()
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches('%')
            .trim()
            .to_owned();
        if let Ok(n) = digits.parse::<f64>() {
            notes.push(format!("{here}: read the string {s:?} as the number {n}"));
            *value = serde_json::json!(n);
        }
    }
    if wants("integer")
        && let Some(f) = value.as_f64()
        && !value.is_i64()
        && !value.is_u64()
    {
        let r = f.round();
        if r != f {
            notes.push(format!("{here}: rounded {f} to {r}"));
        }
        *value = serde_json::json!(r as i64);
    }
    if let Some(n) = value.as_f64() {
        let (min, max) = (schema["minimum"].as_f64(), schema["maximum"].as_f64());
        let clamped = n.max(min.unwrap_or(f64::MIN)).min(max.unwrap_or(f64::MAX));
        if clamped != n {
            notes.push(format!("{here}: {n} is out of range, clamped to {clamped}"));
            *value = if value.is_i64() || value.is_u64() {
                serde_json::json!(clamped as i64)
            } else {
                serde_json::json!(clamped)
            };
        }
    }
    // A single item where a list is wanted.
    if wants("array") && value.is_string() {
        notes.push(format!("{here}: made the single item a list"));
        *value = Value::Array(vec![value.take()]);
    }
    if let Value::Array(items) = value
        && schema.get("items").is_some()
    {
        for (i, item) in items.iter_mut().enumerate() {
            coerce(item, &schema["items"], &format!("{at}/{i}"), notes);
        }
    }
    if let Value::Object(map) = value {
        coerce_object(map, schema, at, notes);
    }
}

fn coerce_object(map: &mut Map<String, Value>, schema: &Value, at: &str, notes: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    if schema["additionalProperties"] == Value::Bool(false) {
        let extra: Vec<String> = map
            .keys()
            .filter(|k| !props.contains_key(*k))
            .cloned()
            .collect();
        for k in extra {
            map.remove(&k);
            notes.push(format!(
                "{at}/{k}: dropped a field the schema does not have"
            ));
        }
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (k, prop) in props {
        let path = format!("{at}/{k}");
        match map.get_mut(k) {
            Some(v) => coerce(v, prop, &path, notes),
            None => {
                // A missing list or text defaults to empty; a missing number does not
                // (nobody can guess a score).
                let default = match (prop.get("default"), types(prop).first().copied()) {
                    (Some(d), _) => Some(d.clone()),
                    (None, Some("array")) => Some(Value::Array(Vec::new())),
                    (None, Some("string")) if required.contains(&k.as_str()) => {
                        Some(Value::String(String::new()))
                    }
                    _ => None,
                };
                if let Some(d) = default {
                    notes.push(format!("{path}: missing, defaulted to {d}"));
                    map.insert(k.clone(), d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scores() -> Value {
        let score = json!({"type": "integer", "minimum": 0, "maximum": 100});
        json!({"type": "object", "required": ["overall", "feedback", "tags"],
               "properties": {"overall": score, "feedback": {"type": "string"},
                              "tags": {"type": "array", "items": {"type": "string"}}},
               "additionalProperties": false})
    }

    #[test]
    fn control_characters_written_raw_inside_a_string_are_escaped_and_noted() {
        // SmolLM2-135M under llama-cpp-python's grammar, as it answered.
        let answer = "{ \"clarity\": 1, \"engagement\" : 4, \"feedback\" : \");\nThis sentence is not grammatically correct.\t\" ,\"overall\" : 20 }";
        let schema = json!({"type": "object", "required": ["clarity", "engagement", "overall", "feedback"],
            "properties": {"clarity": {"type": "integer"}, "engagement": {"type": "integer"},
                           "overall": {"type": "integer"}, "feedback": {"type": "string"}}});
        let r = repair(answer, &schema, false).unwrap();
        assert_eq!(
            r.value["feedback"],
            ");\nThis sentence is not grammatically correct.\t"
        );
        assert_eq!(
            r.notes,
            vec!["escaped control characters written raw inside a string"]
        );
        // Newlines between members are not inside a string: left as they are.
        let spaced = "Sure, \"here\":\n{\n  \"clarity\": 1,\n  \"engagement\": 2,\n  \"overall\": 3,\n  \"feedback\": \"a\nb\"\n}";
        let r = repair(spaced, &schema, false).unwrap();
        assert_eq!(r.value["feedback"], "a\nb");
    }

    #[test]
    fn json_is_found_in_fences_and_prose() {
        let fenced = "Here you go:\n```json\n{\"overall\": 80, \"feedback\": \"ok\", \"tags\": []}\n```\nThanks!";
        let r = repair(fenced, &scores(), false).unwrap();
        assert_eq!(r.value["overall"], 80);
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        let prose = "Sure! {\"overall\": 70, \"feedback\": \"a {brace} inside\", \"tags\": [\"x\"]} Hope that helps.";
        let r = repair(prose, &scores(), false).unwrap();
        assert_eq!(r.value["feedback"], "a {brace} inside");
        assert_eq!(
            repair("I cannot rate this.", &scores(), false),
            Err(Unusable::NoJson)
        );
    }

    #[test]
    fn strings_ranges_extras_and_missing_lists_are_mended_and_noted() {
        let r = repair(
            r#"{"overall": "120", "feedback": "fine", "mood": "happy"}"#,
            &scores(),
            false,
        )
        .unwrap();
        assert_eq!(
            r.value,
            json!({"overall": 100, "feedback": "fine", "tags": []})
        );
        let notes = r.notes.join("\n");
        assert!(notes.contains("read the string \"120\""), "{notes}");
        assert!(notes.contains("clamped to 100"), "{notes}");
        assert!(notes.contains("/mood: dropped"), "{notes}");
        assert!(notes.contains("/tags: missing"), "{notes}");
        let r = repair(
            r#"{"overall": "85/100", "feedback": "", "tags": "one"}"#,
            &scores(),
            false,
        )
        .unwrap();
        assert_eq!(r.value["overall"], 85);
        assert_eq!(r.value["tags"], json!(["one"]));
        // A missing score cannot be guessed.
        let err = repair(r#"{"feedback": "no score"}"#, &scores(), false).unwrap_err();
        assert!(
            matches!(&err, Unusable::Invalid(m) if m.contains("overall")),
            "{err}"
        );
    }

    #[test]
    fn an_answer_cut_off_at_max_tokens_is_closed_when_it_can_be() {
        let r = repair(
            r#"{"overall": 75, "feedback": "Clear and war"#,
            &scores(),
            true,
        )
        .unwrap();
        assert_eq!(r.value["feedback"], "Clear and war");
        assert!(
            r.notes.iter().any(|n| n.contains("cut off")),
            "{:?}",
            r.notes
        );
        let r = repair(
            r#"{"overall": 75, "tags": ["a", "b"], "feedback":"#,
            &scores(),
            true,
        )
        .unwrap();
        assert_eq!(r.value["tags"], json!(["a", "b"]));
        assert_eq!(
            r.value["feedback"], "",
            "the dangling key was dropped, then defaulted"
        );
        // Cut off in a key: the dangling key is dropped.
        let r = repair(
            r#"{"overall": 75, "feedback": "Good", "tags": [], "mo"#,
            &scores(),
            true,
        )
        .unwrap();
        assert_eq!(
            r.value,
            json!({"overall": 75, "feedback": "Good", "tags": []})
        );
        // Cut off before the score: nothing to close it into.
        let err = repair(r#"{"feedback": "Good", "overa"#, &scores(), true).unwrap_err();
        assert!(matches!(err, Unusable::Invalid(_)), "{err}");
    }
}
