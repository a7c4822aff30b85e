//! Splitting a full name into first and last name.

/// Titles dropped before splitting.
const TITLES: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam",
];
/// Degrees dropped after the name.
const DEGREES: &[&str] = &["phd", "md", "mba", "esq", "dds", "cpa"];

/// Splits a full name into first and last: titles and degrees are dropped, "Last, First" is
/// understood, the first word is the first name and the rest (particles such as "van der",
/// generational suffixes such as "Jr.") is the last name. A single word is a first name only.
pub(crate) fn split_name(full: &str) -> (Option<String>, Option<String>) {
    let norm = |w: &str| w.trim_end_matches('.').to_lowercase();
    let mut text = full.split_whitespace().collect::<Vec<_>>().join(" ");
    // "Lovelace, Ada" (but "Ada Lovelace, PhD" is a degree, not a reversed name).
    if let Some((before, after)) = text.split_once(',') {
        let after_words: Vec<&str> = after.split_whitespace().collect();
        let is_suffix = after_words
            .iter()
            .all(|w| DEGREES.contains(&norm(w).as_str()) || is_generational(w));
        text = if is_suffix {
            format!("{before} {after}")
        } else {
            format!("{after} {before}")
        };
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    while words.len() > 1 && TITLES.contains(&norm(words[0]).as_str()) {
        words.remove(0);
    }
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| DEGREES.contains(&norm(w).as_str()))
    {
        words.pop();
    }
    let mut it = words.into_iter();
    let first = it.next().map(str::to_string);
    let rest: Vec<&str> = it.collect();
    let last = (!rest.is_empty()).then(|| rest.join(" "));
    (first, last)
}

fn is_generational(w: &str) -> bool {
    matches!(
        w.trim_end_matches('.').to_lowercase().as_str(),
        "jr" | "sr" | "ii" | "iii" | "iv"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_sensibly() {
        let cases = [
            ("Ada Lovelace", Some("Ada"), Some("Lovelace")),
            (
                "  Ada   King  Lovelace ",
                Some("Ada"),
                Some("King Lovelace"),
            ),
            ("Lovelace, Ada", Some("Ada"), Some("Lovelace")),
            ("Dr. Grace Hopper", Some("Grace"), Some("Hopper")),
            (
                "Ludwig van Beethoven",
                Some("Ludwig"),
                Some("van Beethoven"),
            ),
            (
                "Martin Luther King Jr.",
                Some("Martin"),
                Some("Luther King Jr."),
            ),
            ("Kin Lee, PhD", Some("Kin"), Some("Lee")),
            ("Cher", Some("Cher"), None),
            ("Dr", Some("Dr"), None),
        ];
        for (full, first, last) in cases {
            assert_eq!(
                split_name(full),
                (first.map(String::from), last.map(String::from)),
                "{full}"
            );
        }
    }
}
