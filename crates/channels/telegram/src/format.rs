//! The agent's Markdown to Telegram's MarkdownV2
//! (<https://core.telegram.org/bots/api#markdownv2-style>).
//!
//! MarkdownV2 has no headings or lists and treats every one of `` _*[]()~`>#+-=|{}.! `` as
//! markup, so plain prose ("Done.") must be escaped. The conversion keeps what Telegram can
//! show (bold, italics, strikethrough, inline code, code blocks, links, quotes), turns
//! headings into bold lines and list bullets into "•", and escapes everything else. Inside
//! code only `` ` `` and `\` are escaped; inside a link's URL only `)` and `\`. Markup that
//! does not close (a lone `*`) is escaped and shown as written. Should Telegram still refuse
//! a part, the caller resends it as plain text.

/// Characters MarkdownV2 reserves outside entities.
const RESERVED: &str = "_*[]()~`>#+-=|{}.!";

/// Escapes text shown as is (outside entities): the reserved characters and `\`.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Escapes the inside of `code` and ```pre``` entities: only `` ` `` and `\`.
pub fn escape_code(code: &str) -> String {
    let mut out = String::with_capacity(code.len() + 4);
    for c in code.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes a link's URL (inside `(...)`): only `)` and `\`.
pub fn escape_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len() + 2);
    for c in url.chars() {
        if c == ')' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if c == '\\' || RESERVED.contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// Converts the agent's Markdown to MarkdownV2.
pub fn to_markdown_v2(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 8);
    let mut lines = markdown.split('\n');
    let mut first = true;
    while let Some(line) = lines.next() {
        if !first {
            out.push('\n');
        }
        first = false;
        match line.trim_start().strip_prefix("```") {
            Some(info) => {
                // A fenced code block runs to the closing fence (or the end: an unclosed
                // fence still renders as code, as Markdown viewers do).
                let mut body: Vec<&str> = Vec::new();
                for inner in lines.by_ref() {
                    if is_closing_fence(inner) {
                        break;
                    }
                    body.push(inner);
                }
                out.push_str("```");
                out.push_str(&language(info));
                out.push('\n');
                if !body.is_empty() {
                    out.push_str(&escape_code(&body.join("\n")));
                    out.push('\n');
                }
                out.push_str("```");
            }
            None => out.push_str(&block_line(line)),
        }
    }
    out
}

fn is_closing_fence(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("```") && t.trim_start_matches('`').is_empty()
}

/// The code block's language, if it is a plain word (anything else would be shown as code).
fn language(info: &str) -> String {
    let word = info.split_whitespace().next().unwrap_or("");
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '+')
    {
        word.to_string()
    } else {
        String::new()
    }
}

/// One line outside code blocks: headings, quotes and bullets, then inline markup.
fn block_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let hashes = trimmed.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) {
        let rest = &trimmed[hashes..];
        if rest.is_empty() || rest.starts_with(' ') {
            let title = rest.trim();
            return if title.is_empty() {
                String::new()
            } else {
                format!("*{}*", inline(title))
            };
        }
    }
    if let Some(quoted) = trimmed.strip_prefix('>') {
        return format!(">{}", inline(quoted.strip_prefix(' ').unwrap_or(quoted)));
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(item) = trimmed.strip_prefix(bullet) {
            return format!("{indent}• {}", inline(item));
        }
    }
    inline(line)
}

/// Inline markup: `code`, **bold**, *italic*, _italic_, ~~strike~~, [links](url).
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let consumed = match c {
            '\\' if next.is_some_and(|n| n.is_ascii_punctuation()) => {
                // A Markdown escape: the character is shown as itself.
                push_escaped(&mut out, next.unwrap_or('\\'));
                2
            }
            '`' => code_span(&chars, i, &mut out),
            '*' | '_' | '~' => emphasis(&chars, i, &mut out),
            '[' => link(&chars, i, &mut out),
            // An image: Telegram cannot inline it, so it becomes a link to it.
            '!' if next == Some('[') => match link(&chars, i + 1, &mut out) {
                0 => 0,
                n => n + 1,
            },
            _ => 0,
        };
        if consumed == 0 {
            push_escaped(&mut out, c);
            i += 1;
        } else {
            i += consumed;
        }
    }
    out
}

/// Length of the run of `c` starting at `i`.
fn run_len(chars: &[char], i: usize, c: char) -> usize {
    chars[i..].iter().take_while(|&&x| x == c).count()
}

/// `` `code` `` (any run of backticks, closed by a run of the same length). Returns the
/// characters consumed; an unclosed run is escaped here and consumed too.
fn code_span(chars: &[char], i: usize, out: &mut String) -> usize {
    let n = run_len(chars, i, '`');
    let mut j = i + n;
    while j < chars.len() {
        if chars[j] == '`' {
            let m = run_len(chars, j, '`');
            if m == n {
                let mut code: String = chars[i + n..j].iter().collect();
                // CommonMark drops one space on each side (so `` `x` `` can hold a backtick).
                if code.len() > 2 && code.starts_with(' ') && code.ends_with(' ') {
                    code = code[1..code.len() - 1].to_string();
                }
                if code.is_empty() {
                    break;
                }
                out.push('`');
                out.push_str(&escape_code(&code));
                out.push('`');
                return j + n - i;
            }
            j += m;
        } else {
            j += 1;
        }
    }
    for _ in 0..n {
        out.push_str("\\`");
    }
    n
}

/// `**bold**` / `__bold__` → `*bold*`; `*it*` / `_it_` → `_it_`; `~~strike~~` → `~strike~`.
/// Returns 0 when the delimiter opens nothing (the caller escapes it).
fn emphasis(chars: &[char], i: usize, out: &mut String) -> usize {
    let c = chars[i];
    let double = chars.get(i + 1) == Some(&c);
    let width = if double { 2 } else { 1 };
    if c == '~' && !double {
        return 0;
    }
    // `snake_case_names` and `2*3*4` are not emphasis: `_` inside a word never opens.
    let prev_alnum = i > 0 && chars[i - 1].is_alphanumeric();
    if c == '_' && prev_alnum {
        return 0;
    }
    let Some(close) = find_closing(chars, i + width, c, width) else {
        return 0;
    };
    let inner: String = chars[i + width..close].iter().collect();
    if inner.starts_with(char::is_whitespace) || inner.ends_with(char::is_whitespace) {
        return 0;
    }
    let after = chars.get(close + width);
    if c == '_' && after.is_some_and(|a| a.is_alphanumeric()) {
        return 0;
    }
    let mark = match (c, double) {
        ('~', _) => "~",
        (_, true) => "*",
        (_, false) => "_",
    };
    out.push_str(mark);
    out.push_str(&inline(&inner));
    out.push_str(mark);
    close + width - i
}

/// Where the closing delimiter (`width` × `c`) is, skipping runs of another width and
/// code spans (whose content is not markup).
fn find_closing(chars: &[char], from: usize, c: char, width: usize) -> Option<usize> {
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            '`' => {
                let n = run_len(chars, j, '`');
                let close = (j + n..chars.len())
                    .find(|&k| chars[k] == '`' && run_len(chars, k, '`') == n)
                    .map_or(j + n, |k| k + n);
                j = close;
            }
            x if x == c => {
                let n = run_len(chars, j, c);
                if n == width && j > from {
                    return Some(j);
                }
                j += n;
            }
            _ => j += 1,
        }
    }
    None
}

/// `[text](url)`. Returns the characters consumed, or 0 when it is not a link.
fn link(chars: &[char], i: usize, out: &mut String) -> usize {
    let mut depth = 0usize;
    let mut close_text = None;
    for (j, &ch) in chars.iter().enumerate().skip(i) {
        match ch {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    close_text = Some(j);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close_text) = close_text else {
        return 0;
    };
    if chars.get(close_text + 1) != Some(&'(') {
        return 0;
    }
    let mut parens = 0usize;
    let mut close_url = None;
    for (k, &ch) in chars.iter().enumerate().skip(close_text + 1) {
        match ch {
            '(' => parens += 1,
            ')' => {
                parens -= 1;
                if parens == 0 {
                    close_url = Some(k);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close_url) = close_url else {
        return 0;
    };
    let target: String = chars[close_text + 2..close_url].iter().collect();
    // `[text](url "title")`: Telegram has no titles.
    let url = target.split_whitespace().next().unwrap_or("");
    if url.is_empty() {
        return 0;
    }
    let text: String = chars[i + 1..close_text].iter().collect();
    let shown = if text.trim().is_empty() {
        escape_text(url)
    } else {
        inline(&text)
    };
    out.push('[');
    out.push_str(&shown);
    out.push_str("](");
    out.push_str(&escape_url(url));
    out.push(')');
    close_url + 1 - i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_character_is_escaped_in_plain_text() {
        assert_eq!(
            escape_text("_*[]()~`>#+-=|{}.!"),
            "\\_\\*\\[\\]\\(\\)\\~\\`\\>\\#\\+\\-\\=\\|\\{\\}\\.\\!"
        );
        assert_eq!(escape_text("a\\b"), "a\\\\b");
        assert_eq!(escape_text("héllo wörld 😀 ok"), "héllo wörld 😀 ok");
    }

    #[test]
    fn code_escapes_only_backtick_and_backslash() {
        assert_eq!(escape_code("a_b*c.d!`e\\f"), "a_b*c.d!\\`e\\\\f");
        assert_eq!(escape_url("https://x.y/a_(b)\\"), "https://x.y/a_(b\\)\\\\");
    }

    #[test]
    fn prose_is_escaped() {
        assert_eq!(
            to_markdown_v2("Done. 2+2=4 (really)! #1 - ok {x} |y|"),
            "Done\\. 2\\+2\\=4 \\(really\\)\\! \\#1 \\- ok \\{x\\} \\|y\\|"
        );
    }

    #[test]
    fn bold_italic_strike_and_code() {
        assert_eq!(to_markdown_v2("**bold** text"), "*bold* text");
        assert_eq!(to_markdown_v2("__bold__ text"), "*bold* text");
        assert_eq!(to_markdown_v2("*it* and _it_"), "_it_ and _it_");
        assert_eq!(to_markdown_v2("~~gone~~"), "~gone~");
        assert_eq!(to_markdown_v2("**a _b_ c.**"), "*a _b_ c\\.*");
        assert_eq!(to_markdown_v2("`a_b.c`"), "`a_b.c`");
        assert_eq!(to_markdown_v2("`` a`b ``"), "`a\\`b`");
        assert_eq!(to_markdown_v2("`C:\\dir`"), "`C:\\\\dir`");
    }

    #[test]
    fn markup_that_does_not_close_is_shown_as_written() {
        assert_eq!(to_markdown_v2("2 * 3 * 4"), "2 \\* 3 \\* 4");
        assert_eq!(to_markdown_v2("snake_case_name"), "snake\\_case\\_name");
        assert_eq!(to_markdown_v2("**open"), "\\*\\*open");
        assert_eq!(to_markdown_v2("a `b"), "a \\`b");
        assert_eq!(to_markdown_v2("~single~"), "\\~single\\~");
        assert_eq!(to_markdown_v2("[not a link]"), "\\[not a link\\]");
        assert_eq!(to_markdown_v2("** spaced **"), "\\*\\* spaced \\*\\*");
    }

    #[test]
    fn markdown_escapes_stay_literal() {
        assert_eq!(to_markdown_v2("\\*not bold\\*"), "\\*not bold\\*");
        assert_eq!(to_markdown_v2("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn links_keep_their_url_with_its_own_escaping() {
        assert_eq!(
            to_markdown_v2("see [the docs](https://e.x/a_(b)) now."),
            "see [the docs](https://e.x/a_(b\\)) now\\."
        );
        assert_eq!(
            to_markdown_v2("[**x**](https://e.x \"title\")"),
            "[*x*](https://e.x)"
        );
        assert_eq!(
            to_markdown_v2("![cat](https://e.x/c.png)"),
            "[cat](https://e.x/c.png)"
        );
        assert_eq!(to_markdown_v2("hi! [x]"), "hi\\! \\[x\\]");
    }

    #[test]
    fn headings_become_bold_and_bullets_dots() {
        assert_eq!(
            to_markdown_v2("# Title.\n## Sub\n- one\n  * two\n1. three"),
            "*Title\\.*\n*Sub*\n• one\n  • two\n1\\. three"
        );
        assert_eq!(to_markdown_v2("#hashtag"), "\\#hashtag");
        assert_eq!(to_markdown_v2("> quoted."), ">quoted\\.");
    }

    #[test]
    fn fenced_code_is_escaped_as_code() {
        let md = "Run:\n```rust\nlet s = \"a`b\\n\";\n```\nDone.";
        assert_eq!(
            to_markdown_v2(md),
            "Run:\n```rust\nlet s = \"a\\`b\\\\n\";\n```\nDone\\."
        );
        // An odd language word is dropped rather than shown.
        assert_eq!(to_markdown_v2("```a.b\nx\n```"), "```\nx\n```");
        // Unclosed fence: still code to the end.
        assert_eq!(to_markdown_v2("```\n*x*"), "```\n*x*\n```");
    }

    #[test]
    fn emphasis_does_not_look_inside_code() {
        assert_eq!(to_markdown_v2("*a `*` b*"), "_a `*` b_");
    }

    #[test]
    fn text_is_kept_in_order_with_blank_lines() {
        assert_eq!(to_markdown_v2("a\n\nb\n"), "a\n\nb\n");
    }
}
