//! Markdown (as models write it) to Slack mrkdwn
//! (<https://api.slack.com/reference/surfaces/formatting>).
//!
//! `**b**`/`__b__` → `*b*`, `*i*`/`_i_` → `_i_`, `~~s~~` → `~s~`, `[t](u)` → `<u|t>`,
//! headings → bold lines, `- item` → `• item`; `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;`
//! everywhere (Slack reads them as control characters, in code too). Code spans and fenced
//! blocks keep their content otherwise untouched.

/// Converts Markdown text to mrkdwn.
pub fn to_mrkdwn(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            out.push(escape(line));
            continue;
        }
        if in_fence {
            out.push(escape(line));
            continue;
        }
        out.push(convert_line(line));
    }
    let mut text = out.join("\n");
    if markdown.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn convert_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let hashes = trimmed.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
        let title = trimmed[hashes..].trim().trim_matches('*');
        return format!("{indent}*{}*", inline(title));
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = trimmed.strip_prefix(bullet) {
            return format!("{indent}• {}", inline(rest));
        }
    }
    format!("{indent}{}", inline(trimmed))
}

/// Escapes Slack's three control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Converts inline markup in one line.
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            if let Some(end) = find(&chars, i + 1, "`") {
                let code: String = chars[i..=end].iter().collect();
                out.push_str(&escape(&code));
                i = end + 1;
                continue;
            }
        } else if c == '[' {
            if let Some((label, url, next)) = link(&chars, i) {
                out.push_str(&format!("<{}|{}>", escape(&url), inline(&label)));
                i = next;
                continue;
            }
        } else if let Some((marker, slack)) = emphasis_at(&chars, i)
            && let Some(end) = find(&chars, i + marker.len(), marker)
            && end > i + marker.len()
        {
            let inner: String = chars[i + marker.len()..end].iter().collect();
            out.push_str(&format!("{slack}{}{slack}", inline(&inner)));
            i = end + marker.len();
            continue;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// The Markdown emphasis marker starting at `i` and its mrkdwn replacement.
fn emphasis_at(chars: &[char], i: usize) -> Option<(&'static str, &'static str)> {
    let starts = |m: &str| {
        m.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    // An opening marker must be followed by text, not a space ("2 * 3 * 4" is arithmetic).
    let opens = |m: &str| chars.get(i + m.len()).is_some_and(|c| !c.is_whitespace());
    // Underscores inside words (snake_case) are not emphasis.
    let word_before = i > 0 && chars[i - 1].is_alphanumeric();
    [
        ("**", "*"),
        ("__", "*"),
        ("~~", "~"),
        ("*", "_"),
        ("_", "_"),
    ]
    .into_iter()
    .find(|(m, _)| starts(m) && opens(m) && !(m.starts_with('_') && word_before))
}

/// The index where `marker` next starts at or after `from`.
fn find(chars: &[char], from: usize, marker: &str) -> Option<usize> {
    let m: Vec<char> = marker.chars().collect();
    (from..chars.len()).find(|&j| chars[j..].starts_with(&m))
}

/// `[label](url)` at `i`: the label, the url and the index after it.
fn link(chars: &[char], i: usize) -> Option<(String, String, usize)> {
    let close = find(chars, i + 1, "](")?;
    let end = find(chars, close + 2, ")")?;
    let label: String = chars[i + 1..close].iter().collect();
    let url: String = chars[close + 2..end].iter().collect();
    if url.is_empty() || url.contains(char::is_whitespace) {
        return None;
    }
    Some((label, url, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_mrkdwn() {
        assert_eq!(
            to_mrkdwn("**bold** and *it* and _it_"),
            "*bold* and _it_ and _it_"
        );
        assert_eq!(
            to_mrkdwn("see [the docs](https://x.io/a?b=1&c=2)"),
            "see <https://x.io/a?b=1&amp;c=2|the docs>"
        );
        assert_eq!(to_mrkdwn("## Plan\n- one\n- two"), "*Plan*\n• one\n• two");
        assert_eq!(to_mrkdwn("~~old~~ new"), "~old~ new");
    }

    #[test]
    fn control_characters_are_escaped_even_in_code() {
        assert_eq!(to_mrkdwn("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
        assert_eq!(to_mrkdwn("`x<y`"), "`x&lt;y`");
        assert_eq!(
            to_mrkdwn("```\nif a < b { **x** }\n```"),
            "```\nif a &lt; b { **x** }\n```"
        );
        // Not emphasis: arithmetic and snake_case stay as written.
        assert_eq!(
            to_mrkdwn("2 * 3 * 4 and snake_case_name"),
            "2 * 3 * 4 and snake_case_name"
        );
    }
}
