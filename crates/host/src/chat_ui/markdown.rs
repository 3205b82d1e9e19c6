//! Markdown drawn for a terminal, a line at a time so a streaming reply can be drawn as it
//! arrives: headings, emphasis, inline code, fenced code blocks, lists, quotes, rules and links.
//! Input must already be cleaned of control sequences (`channel::sanitize`): the renderer only
//! adds its own SGR styles. Unstyled (not a terminal, or `NO_COLOR`), text passes unchanged.

const BOLD: &str = "\x1b[1m";
const ITALIC: &str = "\x1b[3m";
const UNDERLINE: &str = "\x1b[4m";
const DIM: &str = "\x1b[2m";
const CODE: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// Renders markdown line by line; remembers whether a code block is open.
#[derive(Debug, Clone)]
pub struct Markdown {
    styled: bool,
    in_code: bool,
}

impl Markdown {
    /// A renderer; `styled: false` returns every line as it is.
    pub fn new(styled: bool) -> Markdown {
        Markdown {
            styled,
            in_code: false,
        }
    }

    /// A whole text, its lines rendered in order.
    pub fn render(&mut self, text: &str) -> String {
        text.split('\n')
            .map(|line| self.line(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One complete line (without its newline).
    pub fn line(&mut self, line: &str) -> String {
        if !self.styled {
            return line.to_owned();
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            self.in_code = !self.in_code;
            let lang = trimmed.trim_start_matches(['`', '~']).trim();
            return match (self.in_code, lang.is_empty()) {
                (true, false) => format!("{DIM}┌ {lang}{RESET}"),
                (true, true) => format!("{DIM}┌{RESET}"),
                (false, _) => format!("{DIM}└{RESET}"),
            };
        }
        if self.in_code {
            return format!("{DIM}│{RESET} {CODE}{line}{RESET}");
        }
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(level) = heading_level(trimmed) {
            let text = trimmed[level..].trim();
            let style = if level == 1 {
                format!("{BOLD}{UNDERLINE}")
            } else {
                BOLD.to_owned()
            };
            return format!("{style}{}{RESET}", inline(text, &style));
        }
        if is_rule(trimmed) {
            return format!("{DIM}{}{RESET}", "─".repeat(40));
        }
        if let Some(rest) = trimmed
            .strip_prefix("> ")
            .or(trimmed.strip_prefix('>').filter(|r| r.is_empty()))
        {
            return format!("{indent}{DIM}│{RESET} {}", inline(rest, ""));
        }
        for bullet in ["- ", "* ", "+ "] {
            if let Some(rest) = trimmed.strip_prefix(bullet) {
                let rest = match rest.strip_prefix("[ ] ") {
                    Some(r) => format!("☐ {}", inline(r, "")),
                    None => match rest.strip_prefix("[x] ").or(rest.strip_prefix("[X] ")) {
                        Some(r) => format!("☑ {}", inline(r, "")),
                        None => inline(rest, ""),
                    },
                };
                return format!("{indent}• {rest}");
            }
        }
        format!("{indent}{}", inline(trimmed, ""))
    }
}

/// `#`…`######` followed by a blank: the heading's level.
fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    ((1..=6).contains(&hashes) && line[hashes..].starts_with(' ')).then_some(hashes)
}

/// `---`, `***`, `___` (three or more, blanks allowed between).
fn is_rule(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && ["-", "*", "_"]
            .iter()
            .any(|m| compact.chars().all(|c| c.to_string() == *m))
}

/// Inline markup: `code`, **bold**, __bold__, *italic*, _italic_, [text](url). `outer` is the
/// style to return to after a span (a heading's). Markers without a partner stay as written.
fn inline(text: &str, outer: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    // Back to the surrounding style after a span.
    let after = format!("{RESET}{outer}");
    while i < chars.len() {
        let c = chars[i];
        if c == '`'
            && let Some(end) = find(&chars, i + 1, "`")
        {
            let code: String = chars[i + 1..end].iter().collect();
            out.push_str(&format!("{CODE}{code}{}", after));
            i = end + 1;
            continue;
        }
        if (c == '*' || c == '_') && chars.get(i + 1) == Some(&c) {
            let marker: String = [c, c].iter().collect();
            if chars.get(i + 2).is_some_and(|n| !n.is_whitespace())
                && let Some(end) = find(&chars, i + 2, &marker)
            {
                let inner: String = chars[i + 2..end].iter().collect();
                out.push_str(&format!(
                    "{BOLD}{}{}",
                    inline(&inner, &format!("{outer}{BOLD}")),
                    after
                ));
                i = end + 2;
                continue;
            }
        }
        if (c == '*' || c == '_')
            && chars.get(i + 1).is_some_and(|n| !n.is_whitespace() && *n != c)
            // `_` inside a word (snake_case) is not emphasis.
            && (c == '*' || i == 0 || !chars[i - 1].is_alphanumeric())
            && let Some(end) = find(&chars, i + 1, &c.to_string())
            && !chars[end - 1].is_whitespace()
            && (c == '*' || chars.get(end + 1).is_none_or(|n| !n.is_alphanumeric()))
        {
            let inner: String = chars[i + 1..end].iter().collect();
            out.push_str(&format!(
                "{ITALIC}{}{}",
                inline(&inner, &format!("{outer}{ITALIC}")),
                after
            ));
            i = end + 1;
            continue;
        }
        if c == '['
            && let Some(close) = find(&chars, i + 1, "](")
            && let Some(end) = find(&chars, close + 2, ")")
        {
            let label: String = chars[i + 1..close].iter().collect();
            let url: String = chars[close + 2..end].iter().collect();
            out.push_str(&format!(
                "{UNDERLINE}{label}{RESET}{outer}{DIM} ({url}){RESET}{outer}"
            ));
            i = end + 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The index in `chars` at or after `from` where `pat` starts.
fn find(chars: &[char], from: usize, pat: &str) -> Option<usize> {
    let pat: Vec<char> = pat.chars().collect();
    (from..chars.len()).find(|&i| chars[i..].starts_with(&pat))
}

/// Reply text arriving in pieces: complete lines are rendered as soon as their newline
/// arrives; the rest waits. Feeding a text whole or in any pieces draws the same lines.
#[derive(Debug, Clone)]
pub struct Stream {
    markdown: Markdown,
    partial: String,
}

impl Stream {
    pub fn new(styled: bool) -> Stream {
        Stream {
            markdown: Markdown::new(styled),
            partial: String::new(),
        }
    }

    /// Adds a piece; returns the rendered complete lines (each ending in `\n`).
    pub fn push(&mut self, piece: &str) -> String {
        self.partial.push_str(piece);
        let mut out = String::new();
        while let Some(at) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=at).collect();
            out.push_str(&self.markdown.line(line.trim_end_matches('\n')));
            out.push('\n');
        }
        out
    }

    /// The text of the line not yet complete.
    pub fn partial(&self) -> &str {
        &self.partial
    }

    /// Ends the text: the last line rendered (no newline added), and the renderer reset.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.partial);
        let out = if rest.is_empty() {
            String::new()
        } else {
            self.markdown.line(&rest)
        };
        self.markdown.in_code = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn styled(text: &str) -> String {
        Markdown::new(true).render(text)
    }

    #[test]
    fn headings_emphasis_code_and_links_are_styled() {
        assert_eq!(styled("# Title"), format!("{BOLD}{UNDERLINE}Title{RESET}"));
        assert_eq!(styled("## Part"), format!("{BOLD}Part{RESET}"));
        assert_eq!(styled("a **b** c"), format!("a {BOLD}b{RESET} c"));
        assert_eq!(styled("an *it* here"), format!("an {ITALIC}it{RESET} here"));
        assert_eq!(
            styled("run `ls -l` now"),
            format!("run {CODE}ls -l{RESET} now")
        );
        assert_eq!(
            styled("see [docs](https://x.y/z)"),
            format!("see {UNDERLINE}docs{RESET}{DIM} (https://x.y/z){RESET}")
        );
    }

    #[test]
    fn lists_quotes_and_rules_are_drawn() {
        assert_eq!(styled("- one\n  * two"), "• one\n  • two");
        assert_eq!(styled("- [ ] todo\n- [x] done"), "• ☐ todo\n• ☑ done");
        assert_eq!(styled("> quoted"), format!("{DIM}│{RESET} quoted"));
        assert_eq!(styled("---"), format!("{DIM}{}{RESET}", "─".repeat(40)));
        assert_eq!(styled("1. first"), "1. first");
    }

    #[test]
    fn code_blocks_are_shown_verbatim() {
        let out = styled("```rust\nlet x = **not bold**;\n```\nafter **bold**");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("{DIM}┌ rust{RESET}"));
        assert_eq!(
            lines[1],
            format!("{DIM}│{RESET} {CODE}let x = **not bold**;{RESET}")
        );
        assert_eq!(lines[2], format!("{DIM}└{RESET}"));
        assert_eq!(lines[3], format!("after {BOLD}bold{RESET}"));
    }

    #[test]
    fn stray_markers_stay_as_written() {
        for text in [
            "2 * 3 * 4",
            "a snake_case_name",
            "**unclosed",
            "price: 5*",
            "[not a link]",
            "`open",
        ] {
            assert_eq!(styled(text), text, "{text}");
        }
    }

    #[test]
    fn unstyled_text_passes_unchanged() {
        let text = "# Title\n- **bold** `code`\n```\nx\n```";
        assert_eq!(Markdown::new(false).render(text), text);
        let mut stream = Stream::new(false);
        let mut out = stream.push(text);
        out.push_str(&stream.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn a_stream_in_any_pieces_draws_the_same_as_the_whole() {
        let text = "# Plan\nStep **one**:\n```sh\nls *.rs\n```\n- done `x`";
        let whole = Markdown::new(true).render(text);
        for size in [1, 2, 3, 7, 100] {
            let mut stream = Stream::new(true);
            let mut out = String::new();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(size) {
                out.push_str(&stream.push(&piece.iter().collect::<String>()));
            }
            out.push_str(&stream.finish());
            assert_eq!(out, whole, "pieces of {size}");
        }
    }

    #[test]
    fn nested_emphasis_returns_to_the_outer_style() {
        assert_eq!(
            styled("# A `b` c"),
            format!("{BOLD}{UNDERLINE}A {CODE}b{RESET}{BOLD}{UNDERLINE} c{RESET}")
        );
    }
}
