//! Splitting long messages into parts a platform accepts, in order.
//!
//! Split at a paragraph break if one falls in the second half of the allowed length, else
//! at a line break, else at a space, else hard (never inside a character). A fenced code block cut in
//! two is closed at the end of one part and reopened at the start of the next, so each part
//! renders on its own. Platforms count length differently (Telegram counts UTF-16 code
//! units, Discord characters), so the caller passes the measure.

/// How a platform measures text length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Unicode scalar values (`char`s).
    Chars,
    /// UTF-16 code units (Telegram).
    Utf16,
    /// UTF-8 bytes.
    Bytes,
}

impl Measure {
    pub fn len(self, text: &str) -> usize {
        match self {
            Measure::Chars => text.chars().count(),
            Measure::Utf16 => text.encode_utf16().count(),
            Measure::Bytes => text.len(),
        }
    }

    fn char_len(self, c: char) -> usize {
        match self {
            Measure::Chars => 1,
            Measure::Utf16 => c.len_utf16(),
            Measure::Bytes => c.len_utf8(),
        }
    }
}

const FENCE: &str = "```";

/// Splits `text` into parts of at most `max` (as `measure` counts), in order. Empty text
/// gives one empty part, so a message is never silently dropped.
pub fn split(text: &str, max: usize, measure: Measure) -> Vec<String> {
    let max = max.max(16);
    if measure.len(text) <= max {
        return vec![text.to_string()];
    }
    let mut parts = Vec::new();
    let mut rest = text;
    // The fence opening a code block that the previous part cut (reopened here).
    let mut carry: Option<String> = None;
    while !rest.is_empty() {
        let prefix = carry.take().map(|f| format!("{f}\n")).unwrap_or_default();
        // Room for a closing fence if this part ends inside a code block.
        let budget = max
            .saturating_sub(measure.len(&prefix) + measure.len(FENCE) + 1)
            .max(8);
        if measure.len(&prefix) + measure.len(rest) <= max {
            parts.push(format!("{prefix}{rest}"));
            break;
        }
        let cut = cut_point(rest, budget, measure);
        let (head, tail) = rest.split_at(cut);
        let mut part = format!("{prefix}{}", head.trim_end_matches([' ', '\n']));
        if let Some(open) = open_fence(&part) {
            part.push('\n');
            part.push_str(FENCE);
            carry = Some(open);
        }
        parts.push(part);
        rest = tail.trim_start_matches([' ', '\n']);
    }
    parts
}

/// The byte index to cut `text` at so the head fits in `budget`.
fn cut_point(text: &str, budget: usize, measure: Measure) -> usize {
    // The longest prefix that fits, as a byte index on a char boundary.
    let mut fit = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let w = measure.char_len(c);
        if used + w > budget {
            break;
        }
        used += w;
        fit = i + c.len_utf8();
    }
    let head = &text[..fit];
    let half = fit / 2;
    for sep in ["\n\n", "\n", " "] {
        if let Some(pos) = head.rfind(sep)
            && pos >= half.min(fit.saturating_sub(1))
            && pos > 0
        {
            return pos + sep.len();
        }
    }
    if fit == 0 {
        // Budget smaller than one character: take one anyway so the loop advances.
        text.chars().next().map_or(text.len(), char::len_utf8)
    } else {
        fit
    }
}

/// The opening fence line (e.g. "```rust") when `text` ends inside a fenced code block.
fn open_fence(text: &str) -> Option<String> {
    let mut open: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(FENCE) {
            open = match open {
                Some(_) => None,
                None => Some(trimmed.to_string()),
            };
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 100, Measure::Chars), vec!["hello"]);
        assert_eq!(split("", 100, Measure::Chars), vec![""]);
    }

    #[test]
    fn parts_fit_and_keep_every_word_in_order() {
        let text: String = (0..2000).map(|i| format!("word{i} ")).collect();
        let parts = split(&text, 4096, Measure::Utf16);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(Measure::Utf16.len(p) <= 4096, "part of {}", p.len());
        }
        let joined = parts.join(" ");
        let words: Vec<&str> = joined.split_whitespace().collect();
        assert_eq!(words.len(), 2000);
        assert_eq!(words[1999], "word1999");
    }

    #[test]
    fn prefers_paragraph_breaks() {
        let para = "a".repeat(60);
        let text = format!("{para}\n\n{para}\n\n{para}");
        let parts = split(&text, 130, Measure::Chars);
        assert_eq!(parts, vec![format!("{para}\n\n{para}"), para.clone()]);
    }

    #[test]
    fn counts_utf16_for_telegram() {
        // Each emoji is two UTF-16 units: 3000 of them need two 4096-unit parts.
        let text = "😀".repeat(3000);
        let parts = split(&text, 4096, Measure::Utf16);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| Measure::Utf16.len(p) <= 4096));
    }

    #[test]
    fn a_cut_code_block_is_closed_and_reopened() {
        let code: String = (0..100).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Here:\n```rust\n{code}```\nDone.");
        let parts = split(&text, 500, Measure::Chars);
        assert!(parts.len() > 2);
        for p in &parts {
            assert!(p.chars().count() <= 500);
            assert_eq!(p.matches("```").count() % 2, 0, "unbalanced fence in {p:?}");
        }
        assert!(parts[1].starts_with("```rust\n"));
        assert!(parts.last().is_some_and(|p| p.ends_with("Done.")));
    }
}
