//! Comparing street and place names the way people write them.
//!
//! Both functions return a *key*, not a display form: lowercase, `ß`→`ss`, `ä`/`ö`/`ü`→
//! `ae`/`oe`/`ue` (also when written with a combining diaeresis), every run of spaces, dots,
//! hyphens and other punctuation dropped. For streets a word ending in `str` (with or without
//! the dot) becomes `…strasse`, so "Hohe Str." == "Hohe Straße" == "hohe  strasse" ==
//! "Hohe-Straße" == "Hohestraße", and "Hauptstr." == "Hauptstraße".

/// The comparison key of a place name (Ort): "Köln" → "koeln", "Frankfurt am Main" →
/// "frankfurtammain".
pub fn normalize_place(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    fold_into(s, &mut out, false);
    out
}

/// The comparison key of a street name: "Hohe Straße", "Hohe Str.", "hohe strasse" →
/// "hohestrasse". A house number is *not* removed here (Berlin has streets called
/// "Straße 10"); see [`split_house_number`].
pub fn normalize_street(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    fold_into(s, &mut out, true);
    out
}

/// Splits a trailing house number off a street line: "Hohe Straße 12a" → ("Hohe Straße",
/// Some("12a")), "Hauptstr. 3 - 5" → ("Hauptstr.", Some("3 - 5")). The first word is never
/// taken as a number. Lookups try the whole text first and this split second.
pub fn split_house_number(s: &str) -> (&str, Option<&str>) {
    let s = s.trim();
    // Word boundaries (start offsets) of whitespace-separated words.
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            prev_space = true;
        } else {
            if prev_space {
                starts.push(i);
            }
            prev_space = false;
        }
    }
    let mut cut = None;
    for (k, &start) in starts.iter().enumerate().skip(1).rev() {
        let end = starts.get(k + 1).copied().unwrap_or(s.len());
        let word = s[start..end].trim_end();
        if word.starts_with(|c: char| c.is_ascii_digit()) {
            cut = Some(start);
        } else if word.chars().count() <= 2 {
            // "a", "-", "b" after a number
        } else {
            break;
        }
    }
    match cut {
        Some(at) => (s[..at].trim_end(), Some(s[at..].trim())),
        None => (s, None),
    }
}

fn fold_into(s: &str, out: &mut String, street: bool) {
    let mut in_word = false;
    let mut word_start = 0;
    let end_word = |out: &mut String, start: usize| {
        if street && out[start..].ends_with("str") {
            out.push_str("asse");
        }
    };
    for c in s.chars() {
        if c.is_ascii() {
            // fast path: no case mapping tables
            if c.is_ascii_alphanumeric() {
                if !in_word {
                    word_start = out.len();
                    in_word = true;
                }
                out.push(c.to_ascii_lowercase());
            } else if in_word {
                end_word(out, word_start);
                in_word = false;
            }
            continue;
        }
        for lc in c.to_lowercase() {
            let piece: &str = match lc {
                'ß' => "ss",
                'ä' => "ae",
                'ö' => "oe",
                'ü' => "ue",
                '\u{308}' => {
                    // combining diaeresis (decomposed umlaut): "u\u{308}" → "ue"
                    if in_word && matches!(out.as_bytes().last(), Some(b'a' | b'o' | b'u')) {
                        out.push('e');
                    }
                    continue;
                }
                c if c.is_alphanumeric() => {
                    if !in_word {
                        word_start = out.len();
                        in_word = true;
                    }
                    out.push(c);
                    continue;
                }
                _ => {
                    if in_word {
                        end_word(out, word_start);
                        in_word = false;
                    }
                    continue;
                }
            };
            if !in_word {
                word_start = out.len();
                in_word = true;
            }
            out.push_str(piece);
        }
    }
    if in_word {
        end_word(out, word_start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn street_suffix_forms_are_one() {
        let k = normalize_street("Hohe Straße");
        assert_eq!(k, "hohestrasse");
        for s in
            ["Hohe Str.", "hohe strasse", "HOHE  STRASSE", " Hohe Str ", "Hohe-Straße", "Hohestraße", "Hohe Strasse"]
        {
            assert_eq!(normalize_street(s), k, "{s}");
        }
        assert_eq!(normalize_street("Hauptstr."), normalize_street("Hauptstraße"));
        assert_eq!(normalize_street("Konrad-Adenauer-Str."), normalize_street("Konrad Adenauer Straße"));
        assert_eq!(normalize_street("Str. des 17. Juni"), normalize_street("Straße des 17. Juni"));
    }

    #[test]
    fn umlauts_and_sharp_s() {
        assert_eq!(normalize_place("Köln"), "koeln");
        assert_eq!(normalize_place("KÖLN"), "koeln");
        assert_eq!(normalize_place("Koeln"), "koeln");
        assert_eq!(normalize_place("Ko\u{308}ln"), "koeln");
        assert_eq!(normalize_place("Düsseldorf"), normalize_place("duesseldorf"));
        assert_eq!(normalize_street("Große Bleiche"), normalize_street("grosse bleiche"));
        assert_eq!(normalize_street("GROẞE BLEICHE"), normalize_street("grosse bleiche"));
        assert_eq!(normalize_place("Frankfurt  am   Main"), "frankfurtammain");
    }

    #[test]
    fn place_names_keep_str_words() {
        // only streets get the suffix rule
        assert_eq!(normalize_place("Ostr"), "ostr");
    }

    #[test]
    fn house_numbers_split_off() {
        assert_eq!(split_house_number("Hohe Straße 12a"), ("Hohe Straße", Some("12a")));
        assert_eq!(split_house_number("Hohe Straße 12 a"), ("Hohe Straße", Some("12 a")));
        assert_eq!(split_house_number("Hauptstr. 3 - 5"), ("Hauptstr.", Some("3 - 5")));
        assert_eq!(split_house_number("Hauptstr."), ("Hauptstr.", None));
        assert_eq!(split_house_number("Str. des 17. Juni 5"), ("Str. des 17. Juni", Some("5")));
        assert_eq!(split_house_number("  12 "), ("12", None));
    }
}
