//! Text measures the synthesis constraints are stated in: language by script, length in
//! units, sentence splitting, and how different two texts are.
//!
//! A *unit* is one CJK character (Han, kana, Hangul) or one run of other letters/digits (a
//! word), so length and difference mean the same thing for Chinese and English text: "±15 %
//! length" is ±15 % of units, and the difference of two texts is the Levenshtein distance
//! between their unit sequences divided by the longer sequence's length (0 = same units, 1 =
//! nothing in common position by position). Punctuation and case are ignored.

/// The language family of a text, told by its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    /// Mostly Han characters (Chinese).
    Chinese,
    /// Mostly kana (Japanese).
    Japanese,
    /// Mostly Hangul (Korean).
    Korean,
    /// Mostly Latin letters.
    Latin,
    /// Mostly Cyrillic letters.
    Cyrillic,
    /// No letters, or no script holds a majority of them.
    Other,
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2FA1F}')
}

fn is_kana(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}')
}

fn is_hangul(c: char) -> bool {
    matches!(c, '\u{AC00}'..='\u{D7AF}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
}

/// A character that is a unit on its own.
fn is_cjk(c: char) -> bool {
    is_han(c) || is_kana(c) || is_hangul(c)
}

/// The script most of `text`'s letters are written in. Japanese counts once kana make up a
/// fifth of the CJK letters (Japanese mixes Han and kana); a script needs half of all letters.
pub fn script(text: &str) -> Script {
    let (mut han, mut kana, mut hangul, mut latin, mut cyrillic, mut letters) = (0, 0, 0, 0, 0, 0);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        if is_han(c) {
            han += 1;
        } else if is_kana(c) {
            kana += 1;
        } else if is_hangul(c) {
            hangul += 1;
        } else if c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c) {
            latin += 1;
        } else if ('\u{0400}'..='\u{04FF}').contains(&c) {
            cyrillic += 1;
        }
    }
    if letters == 0 {
        return Script::Other;
    }
    let cjk = han + kana;
    if cjk * 2 >= letters && kana * 5 >= cjk && kana > 0 {
        return Script::Japanese;
    }
    // Chinese text often carries Latin words (brands, units): Han needs a third of the letters,
    // and more Han characters than Latin words would be, counted in units.
    let latin_words = units(text)
        .iter()
        .filter(|u| u.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .count();
    for (count, s) in [(hangul, Script::Korean), (cyrillic, Script::Cyrillic)] {
        if count * 2 >= letters {
            return s;
        }
    }
    if han * 3 >= letters && han >= latin_words {
        return Script::Chinese;
    }
    if latin * 2 >= letters {
        return Script::Latin;
    }
    Script::Other
}

/// The units of `text`, lower-cased: each CJK character alone, each run of other letters and
/// digits as one word; everything else separates.
pub fn units(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Length of `text` in units.
pub fn length(text: &str) -> usize {
    units(text).len()
}

/// `candidate`'s length relative to `reference`'s, minus one: 0.1 = 10 % longer.
pub fn length_change(reference: &str, candidate: &str) -> f64 {
    let r = length(reference).max(1) as f64;
    length(candidate) as f64 / r - 1.0
}

/// Levenshtein distance between the unit sequences of `a` and `b` over the longer length:
/// 0 when they have the same units in the same order, 1 when no position can be kept.
pub fn difference(a: &str, b: &str) -> f64 {
    let (ua, ub) = (units(a), units(b));
    let longest = ua.len().max(ub.len());
    if longest == 0 {
        return 0.0;
    }
    strsim::generic_levenshtein(&ua, &ub) as f64 / longest as f64
}

/// The sentences of `text` (split after . ! ? 。 ！ ？ ; and line breaks), trimmed, non-empty.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c != '\n' {
            current.push(c);
        }
        if matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '；' | '\n') {
            let s = current.trim();
            if !s.is_empty() && !units(s).is_empty() {
                out.push(s.to_string());
            }
            current.clear();
        }
    }
    let s = current.trim();
    if !s.is_empty() && !units(s).is_empty() {
        out.push(s.to_string());
    }
    out
}

/// `text` reduced for duplicate detection: its units joined by single spaces.
pub fn normalized(text: &str) -> String {
    units(text).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_of_mixed_text() {
        assert_eq!(script("A man is playing a guitar."), Script::Latin);
        assert_eq!(script("一个男人在弹吉他。"), Script::Chinese);
        assert_eq!(script("苹果发布了新款iPhone 15手机"), Script::Chinese);
        assert_eq!(script("東京の天気はどうですか"), Script::Japanese);
        assert_eq!(script("서울의 날씨"), Script::Korean);
        assert_eq!(script("Привет, мир"), Script::Cyrillic);
        assert_eq!(script("12345 !!"), Script::Other);
    }

    #[test]
    fn units_lengths_and_differences() {
        assert_eq!(units("A man, a PLAN!"), ["a", "man", "a", "plan"]);
        assert_eq!(
            units("新款iPhone 15手机"),
            ["新", "款", "iphone", "15", "手", "机"]
        );
        assert_eq!(length("一个男人"), 4);
        assert!((length_change("a b c d", "a b c d e") - 0.25).abs() < 1e-12);
        // One word of four replaced: 1/4.
        assert!((difference("the cat sat down", "the dog sat down") - 0.25).abs() < 1e-12);
        assert_eq!(difference("Same text.", "same TEXT"), 0.0);
        assert_eq!(difference("abc", "xyz"), 1.0);
        // Two of five characters differ.
        assert!((difference("我喜欢苹果", "我讨厌苹果") - 0.4).abs() < 1e-12);
    }

    #[test]
    fn sentence_split() {
        assert_eq!(
            sentences("First one. Second? 第三句。Last"),
            ["First one.", "Second?", "第三句。", "Last"]
        );
        assert!(sentences("  ").is_empty());
    }
}
