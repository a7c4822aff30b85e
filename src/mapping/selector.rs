//! Selectors: RFC 9535 JSONPath expressions (via `serde_json_path`), compiled once at load.
//!
//! A selector starting with `$` reads the whole event; one starting with `@` reads the current
//! item of a `for_each` (the whole event when there is none). A list of selectors means "the
//! first one that finds something non-empty".

use serde_json::Value;
use serde_json_path::JsonPath;

/// Where selectors look: the whole event (`$`) and the current item (`@`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub root: &'a Value,
    pub item: &'a Value,
}

impl<'a> Scope<'a> {
    pub fn new(root: &'a Value) -> Self {
        Scope { root, item: root }
    }

    pub fn with_item(self, item: &'a Value) -> Self {
        Scope {
            root: self.root,
            item,
        }
    }
}

/// One compiled JSONPath.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    path: JsonPath,
    relative: bool,
}

impl Selector {
    /// Compiles `text`; the error quotes it and says where it went wrong.
    pub fn parse(text: &str) -> Result<Selector, String> {
        // `@.x` is written as the RFC's relative form; it is compiled as `$.x` and run against
        // the current item. Same length, so the parser's error position still fits the text.
        let (relative, compiled) = match text.strip_prefix('@') {
            Some(rest) => (true, format!("${rest}")),
            None => (false, text.to_string()),
        };
        if !compiled.starts_with('$') {
            return Err(format!(
                "{text:?} is not a JSONPath: start with $ (the whole event) or @ (the current item)"
            ));
        }
        let path = JsonPath::parse(&compiled)
            .map_err(|e| format!("{text:?} is not a valid JSONPath: {e}"))?;
        Ok(Selector { path, relative })
    }

    /// Every node the selector matches, in document order.
    pub fn query<'a>(&self, scope: Scope<'a>) -> Vec<&'a Value> {
        let target = if self.relative {
            scope.item
        } else {
            scope.root
        };
        self.path.query(target).all()
    }

    /// The first matched node that is not empty (see [`is_empty`]).
    pub fn first<'a>(&self, scope: Scope<'a>) -> Option<&'a Value> {
        self.query(scope).into_iter().find(|v| !is_empty(v))
    }
}

/// One selector or a list of them: the first that finds something non-empty wins.
#[derive(Debug, Clone)]
pub(crate) struct Selectors(Vec<Selector>);

impl Selectors {
    pub fn new(list: Vec<Selector>) -> Self {
        Selectors(list)
    }

    pub fn first<'a>(&self, scope: Scope<'a>) -> Option<&'a Value> {
        self.0.iter().find_map(|s| s.first(scope))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Empty means "nothing was answered": null, a blank string, an empty list or object. Providers
/// send unanswered optional questions in all of these shapes.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn absolute_selectors_read_the_event_and_relative_ones_the_item() {
        let root = json!({"a": 1, "items": [{"a": 2}, {"a": 3}]});
        let item = &root["items"][1];
        let scope = Scope::new(&root).with_item(item);
        assert_eq!(sel("$.a").first(scope), Some(&json!(1)));
        assert_eq!(sel("@.a").first(scope), Some(&json!(3)));
        // Without a for_each the item is the event itself.
        assert_eq!(sel("@.a").first(Scope::new(&root)), Some(&json!(1)));
    }

    #[test]
    fn filters_pick_answers_by_their_field_ref() {
        let root = json!({"answers": [
            {"type": "text", "text": "Ada", "field": {"ref": "first_name"}},
            {"type": "email", "email": "ada@example.com", "field": {"ref": "work_email"}}
        ]});
        let s = sel("$.answers[?@.field.ref == 'work_email'].email");
        assert_eq!(s.first(Scope::new(&root)), Some(&json!("ada@example.com")));
    }

    #[test]
    fn a_list_takes_the_first_non_empty_match() {
        let root = json!({"a": "  ", "b": null, "c": [], "d": "x", "e": "y"});
        let list = Selectors::new(vec![
            sel("$.a"),
            sel("$.b"),
            sel("$.c"),
            sel("$.zz"),
            sel("$.d"),
            sel("$.e"),
        ]);
        assert_eq!(list.first(Scope::new(&root)), Some(&json!("x")));
        let none = Selectors::new(vec![sel("$.a"), sel("$.zz")]);
        assert_eq!(none.first(Scope::new(&root)), None);
    }

    #[test]
    fn several_matches_give_the_first_non_empty_one() {
        let root = json!({"emails": ["", "first@example.com", "second@example.com"]});
        assert_eq!(
            sel("$.emails[*]").first(Scope::new(&root)),
            Some(&json!("first@example.com"))
        );
    }

    #[test]
    fn invalid_selectors_are_explained_with_their_text() {
        let e = Selector::parse("$.answers[?@.field.ref == ]").unwrap_err();
        assert!(
            e.starts_with("\"$.answers[?@.field.ref == ]\" is not a valid JSONPath: at position"),
            "{e}"
        );
        let e = Selector::parse("answers.email").unwrap_err();
        assert_eq!(
            e,
            "\"answers.email\" is not a JSONPath: start with $ (the whole event) or @ (the current item)"
        );
    }

    #[test]
    fn emptiness_covers_what_providers_send_for_unanswered_questions() {
        for v in [
            json!(null),
            json!(""),
            json!(" \t"),
            json!([]),
            json!([""]),
            json!({}),
        ] {
            assert!(is_empty(&v), "{v}");
        }
        for v in [
            json!(0),
            json!(false),
            json!("x"),
            json!(["", "x"]),
            json!({"a": null}),
        ] {
            assert!(!is_empty(&v), "{v}");
        }
    }
}
