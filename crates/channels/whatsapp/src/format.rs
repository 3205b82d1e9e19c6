//! Markdown (what the agent writes) to WhatsApp's own formatting
//! (<https://faq.whatsapp.com/539178204879377>): `*bold*`, `_italic_`, `~strike~`,
//! `` `code` ``, ```` ``` ```` blocks, `- ` lists. WhatsApp has no headings and no links
//! with text: a heading becomes a bold line, `[t](u)` becomes `t (u)`. Code is left as
//! written. Anything that does not parse as Markdown markup is left as it is, since
//! WhatsApp shows unmatched markers literally.

/// Converts Markdown to WhatsApp formatting.
pub fn to_whatsapp(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in markdown.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            out.push(line.to_string());
            continue;
        }
        if in_fence {
            out.push(line.to_string());
            continue;
        }
        out.push(convert_line(line));
    }
    out.join("\n")
}

fn convert_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let hashes = trimmed.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
        let title = trimmed[hashes..].trim();
        let title = title.replace("**", "");
        return format!("{indent}*{}*", inline(&title));
    }
    // `* item` is a list in Markdown; WhatsApp's `* ` list would clash with bold.
    if let Some(rest) = trimmed.strip_prefix("* ") {
        return format!("{indent}- {}", inline(rest));
    }
    format!("{indent}{}", inline(trimmed))
}

/// Position of `pattern` in `chars` at or after `from`.
fn find(chars: &[char], from: usize, pattern: &[char]) -> Option<usize> {
    (from..chars.len().saturating_sub(pattern.len() - 1)).find(|&i| chars[i..].starts_with(pattern))
}

fn is_word(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric())
}

/// Converts inline markup in one line.
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1);
        // Inline code: verbatim.
        if c == '`'
            && let Some(end) = find(&chars, i + 1, &['`'])
        {
            out.extend(&chars[i..=end]);
            i = end + 1;
            continue;
        }
        // **bold** / __bold__ → *bold*
        if (c == '*' || c == '_')
            && next == Some(&c)
            && chars.get(i + 2).is_some_and(|n| !n.is_whitespace())
            && let Some(end) = find(&chars, i + 2, &[c, c])
            && end > i + 2
        {
            let inner: String = chars[i + 2..end].iter().collect();
            out.push('*');
            out.push_str(&inline(&inner));
            out.push('*');
            i = end + 2;
            continue;
        }
        // ~~strike~~ → ~strike~
        if c == '~'
            && next == Some(&'~')
            && let Some(end) = find(&chars, i + 2, &['~', '~'])
            && end > i + 2
        {
            let inner: String = chars[i + 2..end].iter().collect();
            out.push('~');
            out.push_str(&inline(&inner));
            out.push('~');
            i = end + 2;
            continue;
        }
        // *italic* / _italic_ → _italic_ (not inside words: snake_case stays).
        if (c == '*' || c == '_')
            && next.is_some_and(|n| !n.is_whitespace() && *n != c)
            && !is_word(i.checked_sub(1).and_then(|p| chars.get(p)))
            && let Some(end) = find(&chars, i + 1, &[c])
            && !chars[end - 1].is_whitespace()
            && !is_word(chars.get(end + 1))
        {
            let inner: String = chars[i + 1..end].iter().collect();
            out.push('_');
            out.push_str(&inline(&inner));
            out.push('_');
            i = end + 1;
            continue;
        }
        // [text](url) → text (url)
        if c == '['
            && let Some(close) = find(&chars, i + 1, &[']', '('])
            && let Some(end) = find(&chars, close + 2, &[')'])
        {
            let label: String = chars[i + 1..close].iter().collect();
            let url: String = chars[close + 2..end].iter().collect();
            if label.trim() == url.trim() || label.trim().is_empty() {
                out.push_str(&url);
            } else {
                out.push_str(&format!("{} ({url})", inline(&label)));
            }
            i = end + 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_whatsapp;

    #[test]
    fn emphasis_strike_and_links_become_whatsapp_markup() {
        assert_eq!(to_whatsapp("**bold** and __also__"), "*bold* and *also*");
        assert_eq!(to_whatsapp("*it* and _it_"), "_it_ and _it_");
        assert_eq!(to_whatsapp("~~gone~~"), "~gone~");
        assert_eq!(
            to_whatsapp("see [the docs](https://e.x/a) or <https://e.x>"),
            "see the docs (https://e.x/a) or <https://e.x>"
        );
        assert_eq!(to_whatsapp("[https://e.x](https://e.x)"), "https://e.x");
        assert_eq!(to_whatsapp("**bold _inner_**"), "*bold _inner_*");
    }

    #[test]
    fn headings_become_bold_lines_and_star_lists_dashes() {
        assert_eq!(
            to_whatsapp("# Title\n## **Sub**\n* one\n- two"),
            "*Title*\n*Sub*\n- one\n- two"
        );
        assert_eq!(to_whatsapp("#hashtag"), "#hashtag");
    }

    #[test]
    fn code_and_plain_symbols_are_left_alone() {
        let text = "```rust\nlet a = **b** * c;\n```\nuse `a_b_c` and snake_case_name, 2 * 3 * 4";
        assert_eq!(
            to_whatsapp(text),
            "```rust\nlet a = **b** * c;\n```\nuse `a_b_c` and snake_case_name, 2 * 3 * 4"
        );
        assert_eq!(
            to_whatsapp("an unmatched ** marker"),
            "an unmatched ** marker"
        );
    }
}
