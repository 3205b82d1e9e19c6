//! MarkdownV2 as the Bot API parses it (<https://core.telegram.org/bots/api#markdownv2-style>),
//! strict about what the docs require: every reserved character outside an entity escaped,
//! every entity closed, only `` ` `` and `\` escaped inside code, `)` and `\` inside a URL.

/// Characters that must be escaped outside entities.
const RESERVED: &str = "_*[]()~`>#+-=|{}.!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    TextUrl,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bold => "Bold",
            Kind::Italic => "Italic",
            Kind::Underline => "Underline",
            Kind::Strikethrough => "Strikethrough",
            Kind::Spoiler => "Spoiler",
            Kind::TextUrl => "TextUrl",
        }
    }
}

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

fn unclosed(kind: &str, offset: usize) -> String {
    format!("Can't find end of {kind} entity at byte offset {offset}")
}

/// Parses `text`; returns the text a user sees, or the description Telegram gives after
/// `Bad Request: can't parse entities: `.
pub fn parse_markdown_v2(text: &str) -> Result<String, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<(Kind, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (offset, c) = chars[i];
        let next = chars.get(i + 1).map(|&(_, n)| n);
        match c {
            '\\' => match next {
                Some(n) if (1..=126).contains(&(n as u32)) => {
                    out.push(n);
                    i += 2;
                }
                _ => return Err(reserved('\\')),
            },
            '*' => {
                toggle(&mut stack, Kind::Bold, offset)?;
                i += 1;
            }
            '_' if next == Some('_') => {
                toggle(&mut stack, Kind::Underline, offset)?;
                i += 2;
            }
            '_' => {
                toggle(&mut stack, Kind::Italic, offset)?;
                i += 1;
            }
            '~' => {
                toggle(&mut stack, Kind::Strikethrough, offset)?;
                i += 1;
            }
            '|' if next == Some('|') => {
                toggle(&mut stack, Kind::Spoiler, offset)?;
                i += 2;
            }
            '`' => i = code(&chars, i, &mut out)?,
            '[' => {
                stack.push((Kind::TextUrl, offset));
                i += 1;
            }
            ']' if stack.last().map(|&(k, _)| k) == Some(Kind::TextUrl) => {
                i = url_end(&chars, i)?;
                stack.pop();
            }
            '>' if i == 0 || chars[i - 1].1 == '\n' => i += 1,
            c if RESERVED.contains(c) => return Err(reserved(c)),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    match stack.first() {
        Some(&(kind, offset)) => Err(unclosed(kind.name(), offset)),
        None => Ok(out),
    }
}

fn toggle(stack: &mut Vec<(Kind, usize)>, kind: Kind, offset: usize) -> Result<(), String> {
    if stack.last().map(|&(k, _)| k) == Some(kind) {
        stack.pop();
        return Ok(());
    }
    if let Some(&(open, at)) = stack.iter().find(|&&(k, _)| k == kind) {
        // Entities must nest: closing one that is not the innermost is an error.
        return Err(unclosed(open.name(), at));
    }
    stack.push((kind, offset));
    Ok(())
}

/// `` `code` `` or ```` ```lang\npre``` ````: returns the index after it.
fn code(chars: &[(usize, char)], i: usize, out: &mut String) -> Result<usize, String> {
    let (offset, _) = chars[i];
    let is_pre =
        chars.get(i + 1).map(|c| c.1) == Some('`') && chars.get(i + 2).map(|c| c.1) == Some('`');
    let mut j = if is_pre { i + 3 } else { i + 1 };
    if is_pre {
        // The language: the rest of the opening line, if a newline follows.
        if let Some(nl) = chars[j..].iter().position(|&(_, c)| c == '\n') {
            let lang: String = chars[j..j + nl].iter().map(|&(_, c)| c).collect();
            if !lang.contains('`') && !lang.contains(char::is_whitespace) {
                j += nl + 1;
            }
        }
    }
    let mut body = String::new();
    while j < chars.len() {
        match chars[j].1 {
            '\\' => match chars.get(j + 1) {
                Some(&(_, n)) if (1..=126).contains(&(n as u32)) => {
                    body.push(n);
                    j += 2;
                }
                _ => return Err(reserved('\\')),
            },
            '`' if !is_pre => {
                out.push_str(&body);
                return Ok(j + 1);
            }
            '`' => {
                let closes = chars.get(j + 1).map(|c| c.1) == Some('`')
                    && chars.get(j + 2).map(|c| c.1) == Some('`');
                if !closes {
                    return Err(reserved('`'));
                }
                out.push_str(body.strip_suffix('\n').unwrap_or(&body));
                return Ok(j + 3);
            }
            c => {
                body.push(c);
                j += 1;
            }
        }
    }
    Err(unclosed(if is_pre { "Pre" } else { "Code" }, offset))
}

/// At the `]` of a link: `(url)` must follow; returns the index after it.
fn url_end(chars: &[(usize, char)], i: usize) -> Result<usize, String> {
    if chars.get(i + 1).map(|c| c.1) != Some('(') {
        return Err(reserved(']'));
    }
    let mut j = i + 2;
    let mut url = String::new();
    while j < chars.len() {
        match chars[j].1 {
            '\\' => {
                let Some(&(_, n)) = chars.get(j + 1) else {
                    return Err(reserved('\\'));
                };
                url.push(n);
                j += 2;
            }
            ')' => {
                if url.trim().is_empty() {
                    return Err("Wrong URL: empty".to_string());
                }
                return Ok(j + 1);
            }
            c => {
                url.push(c);
                j += 1;
            }
        }
    }
    Err(unclosed("TextUrl", chars[i].0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_escaped_text_and_entities() {
        assert_eq!(
            parse_markdown_v2("Done\\. *bold _it_* `a\\`b` ~s~ ||x||").unwrap(),
            "Done. bold it a`b s x"
        );
        assert_eq!(
            parse_markdown_v2("[the docs](https://e.x/a_(b\\))").unwrap(),
            "the docs"
        );
        assert_eq!(
            parse_markdown_v2("```rust\nlet x = 1;\n```").unwrap(),
            "let x = 1;"
        );
        assert_eq!(parse_markdown_v2(">quote\nnext").unwrap(), "quote\nnext");
    }

    #[test]
    fn refuses_what_telegram_refuses() {
        assert_eq!(
            parse_markdown_v2("Done.").unwrap_err(),
            "Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert!(
            parse_markdown_v2("*open")
                .unwrap_err()
                .starts_with("Can't find end of Bold")
        );
        assert!(parse_markdown_v2("*a _b* c_").is_err());
        assert!(parse_markdown_v2("a > b").is_err());
        assert!(parse_markdown_v2("[x]").is_err());
        assert!(parse_markdown_v2("`open").is_err());
    }
}
