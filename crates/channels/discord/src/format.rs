//! Markdown (as agents write it) to Discord's markdown
//! (<https://support.discord.com/hc/en-us/articles/210298617>). Discord already renders
//! bold, italics, strikethrough, inline code, fenced code, quotes, lists, masked links and
//! headings `#`–`###`; what it does not is turned into something that reads well:
//! deeper headings become bold lines, tables go into a code block (monospace keeps the
//! columns), images become links and horizontal rules a line of box-drawing characters.
//! Nothing inside a fenced code block is touched.

pub fn to_discord(markdown: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_code = false;
    let mut in_table = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            out.push(line.to_string());
            continue;
        }
        if in_code {
            out.push(line.to_string());
            continue;
        }
        let is_table_row = trimmed.starts_with('|') && trimmed.trim_end().ends_with('|');
        if is_table_row != in_table {
            out.push("```".to_string());
            in_table = is_table_row;
        }
        if is_table_row {
            out.push(line.to_string());
            continue;
        }
        out.push(convert_line(line));
    }
    if in_table {
        out.push("```".to_string());
    }
    let mut text = out.join("\n");
    if markdown.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn convert_line(line: &str) -> String {
    let trimmed = line.trim();
    let hashes = trimmed.chars().take_while(|c| *c == '#').count();
    if hashes >= 4 && trimmed[hashes..].starts_with(' ') {
        return format!("**{}**", trimmed[hashes..].trim());
    }
    if trimmed.len() >= 3
        && (trimmed.chars().all(|c| c == '-') || trimmed.chars().all(|c| c == '*'))
    {
        return "──────────".to_string();
    }
    images_to_links(line)
}

/// `![alt](url)` → `[alt](url)`: Discord shows no inline images in text.
fn images_to_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find("![") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        if after.contains("](") {
            out.push('[');
        } else {
            out.push_str("![");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_discord_renders_passes_through() {
        let text = "# Title\n**bold** *it* ~~no~~ `code`\n> quote\n- item\n[link](https://x.y)";
        assert_eq!(to_discord(text), text);
    }

    #[test]
    fn deep_headings_rules_and_images_are_rewritten() {
        assert_eq!(to_discord("#### Notes"), "**Notes**");
        assert_eq!(to_discord("a\n---\nb"), "a\n──────────\nb");
        assert_eq!(
            to_discord("see ![chart](https://x/c.png)"),
            "see [chart](https://x/c.png)"
        );
    }

    #[test]
    fn tables_go_into_a_code_block_and_code_is_untouched() {
        let text =
            "Scores:\n| a | b |\n|---|---|\n| 1 | 2 |\nend\n```\n#### not a heading\n---\n```";
        assert_eq!(
            to_discord(text),
            "Scores:\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n```\nend\n```\n#### not a heading\n---\n```"
        );
    }
}
