//! Reading size ranges ("51-200", "10000+", "<10") as numbers.

/// Parses a size range: "51-200", "1,001-5,000", "10000+", "10k+", "<10", "up to 50",
/// "more than 1000", "1-10 employees", "42". Returns (min, max); an open end is `None`.
pub(crate) fn parse_range(s: &str) -> Option<(Option<u64>, Option<u64>)> {
    let lower = s.trim().to_lowercase().replace(['–', '—', '−'], "-");
    let mut numbers: Vec<u64> = Vec::new();
    let chars: Vec<char> = lower.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut digits = String::new();
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == ',' || chars[i] == '.') {
            // "1,001" and "1.5k": commas group thousands, a dot is a decimal point.
            if chars[i] != ',' {
                digits.push(chars[i]);
            }
            i += 1;
        }
        let digits = digits.trim_end_matches('.');
        let base: f64 = digits.parse().ok()?;
        let next_is_letter = |j: usize| chars.get(j).is_some_and(|c| c.is_alphabetic());
        let mult = match chars.get(i) {
            Some('k') if !next_is_letter(i + 1) => 1_000.0,
            Some('m') if !next_is_letter(i + 1) => 1_000_000.0,
            _ => 1.0,
        };
        if mult > 1.0 {
            i += 1;
        }
        numbers.push((base * mult).round() as u64);
    }
    let has = |w: &str| lower.contains(w);
    let at_least =
        has("+") || has(">=") || has("≥") || has("or more") || has("and up") || has("plus");
    let more_than = !at_least && (has(">") || has("more than") || has("over") || has("above"));
    let at_most = has("<=") || has("≤") || has("up to") || has("or less") || has("or fewer");
    let less_than = !at_most
        && (has("<") || has("less than") || has("fewer than") || has("under") || has("below"));
    match numbers.as_slice() {
        [a, b] if !at_least && !more_than && !at_most && !less_than => {
            Some((Some(*a.min(b)), Some(*a.max(b))))
        }
        [a] if at_least => Some((Some(*a), None)),
        [a] if more_than => Some((Some(a + 1), None)),
        [a] if at_most => Some((None, Some(*a))),
        [a] if less_than => Some((None, Some(a.saturating_sub(1)))),
        [a] => Some((Some(*a), Some(*a))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_the_usual_company_size_spellings() {
        let cases = [
            ("51-200", Some((Some(51), Some(200)))),
            ("1,001-5,000", Some((Some(1001), Some(5000)))),
            ("1,001 – 5,000 employees", Some((Some(1001), Some(5000)))),
            ("10000+", Some((Some(10000), None))),
            ("10k+", Some((Some(10000), None))),
            ("<10", Some((None, Some(9)))),
            ("up to 50", Some((None, Some(50)))),
            ("more than 1000", Some((Some(1001), None))),
            ("1-10 employees", Some((Some(1), Some(10)))),
            ("$25,000 - $50,000", Some((Some(25000), Some(50000)))),
            ("42", Some((Some(42), Some(42)))),
            ("just me", None),
            ("1-2-3", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_range(s), want, "{s}");
        }
    }
}
