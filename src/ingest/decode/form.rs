//! `application/x-www-form-urlencoded` bodies, and the bracket-key tree that form and multipart
//! fields are both inserted into.
//!
//! Pairs are split on `&` (empty pieces are skipped; a piece without `=` has the value `""`),
//! `+` becomes a space, `%XX` escapes become BYTES, and only then is the text decoded in the
//! request's charset, so `%E9` in `iso-8859-1` is `é`. Values always stay strings: no number or
//! boolean guessing.
//!
//! Field names follow PHP's bracket syntax, with these choices:
//! - `data[merges][EMAIL]=x` builds `{"data":{"merges":{"EMAIL":"x"}}}`.
//! - `a[]=1&a[]=2` appends: `{"a":["1","2"]}`; `a[][x]=1&a[][x]=2` appends two objects.
//! - A plain name repeated (`tag=a&tag=b`) collects an array `["a","b"]` (PHP would keep only the
//!   last value; a lead tool repeating a field means a multi-select, so nothing is dropped).
//! - Numeric-looking segments stay object keys: `data[0][x]` is `{"data":{"0":{"x":..}}}`. An
//!   index chosen by the sender would otherwise let `a[1000000]` build a huge sparse array, and
//!   keys keep the sender's numbering as sent.
//! - A name that is not exactly `base` followed by well-formed `[...]` segments (`a[b`, `a[b]c`,
//!   `[a]`) is used literally, as one plain name.
//! - Conflicting shapes never panic. A value arriving where a value (or an array of them) is
//!   already collects, as above; an append (`a[]`) onto a plain value keeps that value as the
//!   first element (`a=1&a[]=2` is `["1","2"]`). Any other conflict — an object needed where a
//!   value or array is, or a value or array where an object is — is won by the later field, as
//!   in PHP's `parse_str`: `a=1&a[b]=2` is `{"a":{"b":"2"}}` and `a[b]=2&a=1` is `{"a":"1"}`.
//! - Each `[...]` segment is one level; more than [`Limits::max_depth`] is `Malformed`, as is
//!   more than [`Limits::max_fields`] fields.
//! - A field named in [`Limits::json_fields`] (matched against the name as sent) whose text
//!   parses as a JSON object or array within the depth limit is stored parsed; otherwise its
//!   text is kept.

use std::borrow::Cow;
use std::mem;

use encoding_rs::{Encoding, UTF_8};
use percent_encoding::percent_decode;
use serde_json::{Map, Value};

use super::{nested_deeper_than, DecodeError, Limits};

/// Decodes a urlencoded body in `charset` (which must be ASCII-compatible).
pub(super) fn decode(
    body: &[u8],
    charset: &'static Encoding,
    limits: &Limits,
) -> Result<Value, DecodeError> {
    let mut tree = Tree::new(limits);
    for (i, (name, value)) in raw_pairs(body).enumerate() {
        tree.count_field()?;
        let name = field_text(name, charset, i, "name")?;
        let value = field_text(value, charset, i, "value")?;
        tree.insert(&name, Value::String(value))?;
    }
    Ok(tree.finish())
}

/// The `(name, value)` pairs of a urlencoded body, unescaped to bytes, in order.
pub(super) fn raw_pairs(body: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    body.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, &b""[..]),
            };
            (unescape(name), unescape(value))
        })
}

/// `+` is a space, `%XX` is a byte; a `%` not followed by two hex digits stays as it is.
fn unescape(input: &[u8]) -> Cow<'_, [u8]> {
    if input.contains(&b'+') {
        let spaced: Vec<u8> = input
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        match percent_decode(&spaced).into() {
            Cow::Owned(decoded) => Cow::Owned(decoded),
            Cow::Borrowed(_) => Cow::Owned(spaced),
        }
    } else {
        percent_decode(input).into()
    }
}

/// Strictly decodes one name or value; `index` is the 0-based field position, used only to
/// point at the culprit in the error (which never quotes it).
pub(super) fn field_text(
    bytes: Cow<'_, [u8]>,
    charset: &'static Encoding,
    index: usize,
    part: &str,
) -> Result<String, DecodeError> {
    text(bytes, charset).ok_or_else(|| {
        DecodeError::Malformed(format!(
            "field {} {part} is not valid {}",
            index + 1,
            charset.name()
        ))
    })
}

/// Bytes as text in `charset`, or `None` when they are not valid in it (never lossy).
pub(super) fn text(bytes: Cow<'_, [u8]>, charset: &'static Encoding) -> Option<String> {
    if charset == UTF_8 {
        match bytes {
            Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            Cow::Owned(v) => String::from_utf8(v).ok(),
        }
    } else {
        charset
            .decode_without_bom_handling_and_without_replacement(&bytes)
            .map(Cow::into_owned)
    }
}

/// One step below a field's base name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'k> {
    /// `[]`
    Append,
    /// `[name]`
    Key(&'k str),
}

/// Splits `base[a][b][]` into `base` and the validated `[a][b][]`; a name that does not have
/// exactly that shape is all base (a literal name).
fn split_name(name: &str) -> (&str, &str) {
    let Some(open) = name.find('[') else {
        return (name, "");
    };
    if open == 0 {
        return (name, "");
    }
    let (base, mut rest) = name.split_at(open);
    let brackets = rest;
    while !rest.is_empty() {
        let close = match rest.strip_prefix('[').and_then(|r| r.find(']')) {
            Some(close) => close,
            None => return (name, ""),
        };
        // `close` is relative to after the `[`; skip `[`, the segment and `]`.
        rest = &rest[close + 2..];
    }
    (base, brackets)
}

/// The segments of a validated bracket string such as `[a][b][]`.
fn segments(brackets: &str) -> impl Iterator<Item = Segment<'_>> {
    let inner = brackets.strip_prefix('[').and_then(|b| b.strip_suffix(']'));
    // A segment holds no `]`, and every `]` but the last is followed by `[`, so splitting on
    // `][` is exact.
    inner
        .into_iter()
        .flat_map(|inner| inner.split("]["))
        .map(|s| {
            if s.is_empty() {
                Segment::Append
            } else {
                Segment::Key(s)
            }
        })
}

/// The object that form and multipart fields are inserted into, one `(name, value)` at a time.
pub(super) struct Tree<'l> {
    root: Map<String, Value>,
    fields: usize,
    limits: &'l Limits,
}

impl<'l> Tree<'l> {
    pub(super) fn new(limits: &'l Limits) -> Self {
        Tree {
            root: Map::new(),
            fields: 0,
            limits,
        }
    }

    /// Counts one more field against [`Limits::max_fields`]; call it before the field's work.
    pub(super) fn count_field(&mut self) -> Result<(), DecodeError> {
        self.fields += 1;
        if self.fields > self.limits.max_fields {
            return Err(DecodeError::malformed("too many fields"));
        }
        Ok(())
    }

    /// Places `value` under the bracket name `name`, following the rules in the module docs.
    pub(super) fn insert(&mut self, name: &str, value: Value) -> Result<(), DecodeError> {
        let (base, brackets) = split_name(name);
        let depth = segments(brackets).count();
        if depth > self.limits.max_depth {
            return Err(DecodeError::Malformed(format!(
                "field name nested deeper than {} levels",
                self.limits.max_depth
            )));
        }
        let value = match value {
            Value::String(s) if self.limits.json_fields.iter().any(|f| f == name) => {
                embedded_json(s, self.limits.max_depth - depth)
            }
            other => other,
        };

        // `Null` marks a slot created on the way down; the leaf always replaces it, and no
        // field value is ever `Null` (they are strings, file objects or parsed objects/arrays).
        let mut slot = self.root.entry(base.to_owned()).or_insert(Value::Null);
        for segment in segments(brackets) {
            slot = descend(slot, segment);
        }
        place(slot, value);
        Ok(())
    }

    pub(super) fn finish(self) -> Value {
        Value::Object(self.root)
    }
}

/// The slot one segment below `slot`, reshaping `slot` when it has the wrong shape.
fn descend<'v>(slot: &'v mut Value, segment: Segment<'_>) -> &'v mut Value {
    match segment {
        Segment::Append => {
            let mut items = match mem::take(slot) {
                Value::Array(items) => items,
                Value::Null | Value::Object(_) => Vec::new(),
                value => vec![value],
            };
            items.push(Value::Null);
            *slot = Value::Array(items);
        }
        Segment::Key(_) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
        }
    }
    match (slot, segment) {
        (Value::Array(items), Segment::Append) => last(items),
        (Value::Object(map), Segment::Key(key)) => map.entry(key.to_owned()).or_insert(Value::Null),
        // Unreachable: the slot was just given the matching shape. Stay panic-free anyway.
        (other, _) => other,
    }
}

fn last(items: &mut Vec<Value>) -> &mut Value {
    if items.is_empty() {
        items.push(Value::Null);
    }
    let i = items.len() - 1;
    &mut items[i]
}

/// Puts a field's value into its slot: a fresh slot takes it, a value or array collects it, an
/// object is replaced (later wins).
fn place(slot: &mut Value, value: Value) {
    match slot {
        Value::Null | Value::Object(_) => *slot = value,
        Value::Array(items) => items.push(value),
        _ => {
            let first = mem::take(slot);
            *slot = Value::Array(vec![first, value]);
        }
    }
}

/// The parsed object or array in `text`, or the text itself when it is not one (or too deep).
fn embedded_json(text: String, max_depth: usize) -> Value {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Value::String(text);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() || v.is_array() => {
            if nested_deeper_than(&v, max_depth) {
                Value::String(text)
            } else {
                v
            }
        }
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn form(body: &str) -> Value {
        decode(body.as_bytes(), UTF_8, &Limits::default()).expect("decodes")
    }

    fn form_with(body: &str, limits: &Limits) -> Result<Value, DecodeError> {
        decode(body.as_bytes(), UTF_8, limits)
    }

    #[test]
    fn a_plain_name_repeated_collects_an_array() {
        assert_eq!(
            form("tag=a&tag=b&tag=c&x=1"),
            json!({"tag": ["a", "b", "c"], "x": "1"})
        );
    }

    #[test]
    fn empty_brackets_append() {
        assert_eq!(
            form("a%5B%5D=1&a[]=2&b[c][]=x&b[c][]=y"),
            json!({"a": ["1", "2"], "b": {"c": ["x", "y"]}})
        );
        assert_eq!(
            form("p[][x]=1&p[][x]=2"),
            json!({"p": [{"x": "1"}, {"x": "2"}]})
        );
    }

    #[test]
    fn nested_brackets_build_objects_and_numeric_segments_stay_keys() {
        assert_eq!(
            form("data[0][x]=a&data[1][x]=b&data[0][y]=c&l1[l2][l3][l4]=deep"),
            json!({
                "data": {"0": {"x": "a", "y": "c"}, "1": {"x": "b"}},
                "l1": {"l2": {"l3": {"l4": "deep"}}}
            })
        );
    }

    #[test]
    fn malformed_brackets_keep_the_raw_name() {
        assert_eq!(
            form("a[b=1&c]d=2&[e]=3&f[g]h=4&i[j[k]=5&m[=6"),
            json!({"a[b": "1", "c]d": "2", "[e]": "3", "f[g]h": "4", "i": {"j[k": "5"}, "m[": "6"})
        );
    }

    #[test]
    fn conflicting_shapes_follow_the_documented_rule() {
        assert_eq!(form("a=1&a[b]=2"), json!({"a": {"b": "2"}}));
        assert_eq!(form("a[b]=2&a=1"), json!({"a": "1"}));
        assert_eq!(form("a=1&a[]=2"), json!({"a": ["1", "2"]}));
        assert_eq!(form("a[]=1&a=2"), json!({"a": ["1", "2"]}));
        assert_eq!(form("a[]=1&a[b]=2"), json!({"a": {"b": "2"}}));
        assert_eq!(form("a[b]=1&a[]=2"), json!({"a": ["2"]}));
        assert_eq!(form("a[b]=1&a[b][c]=2"), json!({"a": {"b": {"c": "2"}}}));
    }

    #[test]
    fn odd_names_never_panic() {
        let names = [
            "", "[", "]", "[]", "[][]", "a[", "a]", "a[]]", "a[[]]", "a[]x", "a][", "a[][", "ü[ö]",
            "a[%5D", "=", "==", "a[b][c", "a[b]]", "a[]=[]",
        ];
        let mut body = String::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names {
                body.push_str(&format!("{a}={i}&{b}=x&{a}[{b}]=y&{b}[]={a}&"));
            }
        }
        let v = form(&body);
        assert!(v.is_object());
    }

    #[test]
    fn pieces_without_equals_and_empty_pieces() {
        assert_eq!(
            form("flag&&a=1&=anon&b="),
            json!({"flag": "", "a": "1", "": "anon", "b": ""})
        );
    }

    #[test]
    fn plus_is_space_but_encoded_plus_is_plus() {
        assert_eq!(
            form("q=a+b%2Bc&bad=100%&half=%4"),
            json!({"q": "a b+c", "bad": "100%", "half": "%4"})
        );
    }

    #[test]
    fn mailgun_inbound_urlencoded_keeps_multiline_text() {
        let v = form("recipient=leads%40example.com&sender=kin%40example.com&subject=Pricing+question&body-plain=Hi%2C%0D%0AWe+are+50+people.%0D%0A&timestamp=1700000000&token=abc&signature=def");
        assert_eq!(
            v,
            json!({
                "recipient": "leads@example.com",
                "sender": "kin@example.com",
                "subject": "Pricing question",
                "body-plain": "Hi,\r\nWe are 50 people.\r\n",
                "timestamp": "1700000000",
                "token": "abc",
                "signature": "def"
            })
        );
    }

    #[test]
    fn too_many_fields_is_malformed() {
        let limits = Limits {
            max_fields: 3,
            ..Limits::default()
        };
        assert!(form_with("a=1&b=2&c=3", &limits).is_ok());
        assert_eq!(
            form_with("a=1&b=2&c=3&d=4", &limits),
            Err(DecodeError::malformed("too many fields"))
        );
        // Empty pieces are not fields.
        assert!(form_with("a=1&&&&b=2&&c=3&", &limits).is_ok());
    }

    #[test]
    fn bracket_depth_over_the_limit_is_malformed() {
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(form_with("a[b][c]=1", &limits).is_ok());
        assert_eq!(
            form_with("a[b][c][]=1", &limits),
            Err(DecodeError::malformed(
                "field name nested deeper than 2 levels"
            ))
        );
        let deep = format!("a{}=1", "[x]".repeat(65));
        assert_eq!(
            form_with(&deep, &Limits::default()),
            Err(DecodeError::malformed(
                "field name nested deeper than 64 levels"
            ))
        );
    }

    #[test]
    fn json_fields_that_do_not_parse_stay_strings() {
        assert_eq!(
            form("rawRequest=%7Bnot+json&mandrill_events=42&data.json=%5B1%2C2%5D&other=%7B%7D"),
            json!({
                "rawRequest": "{not json",
                "mandrill_events": "42",
                "data.json": [1, 2],
                "other": "{}"
            })
        );
    }

    #[test]
    fn embedded_json_deeper_than_the_limit_stays_a_string() {
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        let v = form_with("rawRequest=%5B%5B%5B%5D%5D%5D", &limits).unwrap();
        assert_eq!(v, json!({"rawRequest": "[[[]]]"}));
    }

    #[test]
    fn configured_json_fields_replace_the_defaults() {
        let limits = Limits {
            json_fields: vec!["payload".into()],
            ..Limits::default()
        };
        let v = form_with("payload=%7B%22a%22%3A1%7D&rawRequest=%7B%7D", &limits).unwrap();
        assert_eq!(v, json!({"payload": {"a": 1}, "rawRequest": "{}"}));
    }

    #[test]
    fn split_name_accepts_only_well_formed_brackets() {
        assert_eq!(split_name("a[b][]"), ("a", "[b][]"));
        assert_eq!(split_name("a"), ("a", ""));
        assert_eq!(split_name("a[b"), ("a[b", ""));
        assert_eq!(split_name("a[b]c"), ("a[b]c", ""));
        assert_eq!(split_name("[a]"), ("[a]", ""));
        assert_eq!(
            segments("[x[][y][]").collect::<Vec<_>>(),
            vec![Segment::Key("x["), Segment::Key("y"), Segment::Append]
        );
    }
}
