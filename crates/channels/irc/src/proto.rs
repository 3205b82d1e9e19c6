//! The IRC line format (RFC 1459/2812 with IRCv3 message tags): parsing what the server
//! sends, building what we send, and cutting replies into lines the server relays whole.
//!
//! A line is at most 512 bytes with its CR LF (tags aside, which IRCv3 allows 8,191 more
//! bytes for). Nothing we send may contain CR, LF or NUL inside a line: a reply that did
//! could smuggle a second command (`hi\r\nQUIT`), so [`encode`] refuses such a parameter and
//! [`text_lines`] turns a reply's line breaks into separate messages first.

use nanoclaw_channel::chunk::{self, Measure};

/// The longest line the server takes from us, CR LF included.
pub const MAX_LINE: usize = 512;
/// The longest line we read from the server: tags (8,191) plus the rest (512).
pub const MAX_READ: usize = 8191 + MAX_LINE;

/// One parsed line from the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// IRCv3 tags, values unescaped (`msgid`, `time`, `account`…).
    pub tags: Vec<(String, String)>,
    /// `nick!user@host` or a server name, without the leading `:`.
    pub source: Option<String>,
    /// Upper-cased command or three-digit numeric.
    pub command: String,
    pub params: Vec<String>,
}

impl Message {
    /// The value of tag `name`, if the line carried it.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The nick part of the source (`nick` of `nick!user@host`).
    pub fn nick(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        let nick = source.split(['!', '@']).next().unwrap_or(source);
        (!nick.is_empty()).then_some(nick)
    }

    /// Parameter `i`, or "" when absent.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }
}

/// Why a line cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// CR, LF or NUL inside a parameter would end the line early (command injection).
    #[error("a parameter contains CR, LF or NUL")]
    LineBreak,
    /// Only the last parameter may contain spaces, start with ':' or be empty.
    #[error("a middle parameter is empty, contains a space or starts with ':'")]
    BadMiddle,
    #[error("the line is {0} bytes; IRC takes at most 510 plus CR LF")]
    TooLong(usize),
}

/// Parses one line (CR LF already removed). `None` for a line with no command.
pub fn parse(line: &str) -> Option<Message> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    let mut message = Message::default();
    if let Some(tagged) = rest.strip_prefix('@') {
        let (tags, after) = tagged.split_once(' ')?;
        message.tags = tags
            .split(';')
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_owned(), unescape_tag(v)),
                None => (t.to_owned(), String::new()),
            })
            .collect();
        rest = after.trim_start_matches(' ');
    }
    if let Some(sourced) = rest.strip_prefix(':') {
        let (source, after) = sourced.split_once(' ')?;
        if source.is_empty() {
            return None;
        }
        message.source = Some(source.to_owned());
        rest = after.trim_start_matches(' ');
    }
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() || !command.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    message.command = command.to_ascii_uppercase();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            message.params.push(trailing.to_owned());
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                message.params.push(p.to_owned());
                rest = r;
            }
            None => {
                message.params.push(rest.to_owned());
                break;
            }
        }
    }
    Some(message)
}

fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Builds `COMMAND p1 p2 :last` (without CR LF), refusing what would break the line.
pub fn encode(command: &str, params: &[&str]) -> Result<String, EncodeError> {
    let mut line = command.to_owned();
    for (i, param) in params.iter().enumerate() {
        if param.contains(['\r', '\n', '\0']) {
            return Err(EncodeError::LineBreak);
        }
        let last = i + 1 == params.len();
        line.push(' ');
        if last && (param.is_empty() || param.contains(' ') || param.starts_with(':')) {
            line.push(':');
        } else if param.is_empty() || param.contains(' ') || param.starts_with(':') {
            return Err(EncodeError::BadMiddle);
        }
        line.push_str(param);
    }
    if line.len() > MAX_LINE - 2 {
        return Err(EncodeError::TooLong(line.len()));
    }
    Ok(line)
}

/// How many bytes of text fit in one `PRIVMSG target :text` to `target` as relayed to
/// others, which the server prefixes with `:nick!user@host `. Our host as the server shows
/// it is not known in advance: room is kept for the longest (63 bytes, a DNS name) and a
/// 10-byte user name with its `~`.
pub fn text_budget(nick: &str, target: &str) -> usize {
    let source = 1 + nick.len() + 1 + 11 + 1 + 63 + 1;
    let command = "PRIVMSG ".len() + target.len() + " :".len();
    MAX_LINE.saturating_sub(2 + source + command).max(32)
}

/// A reply as the texts of the PRIVMSGs that carry it, in order: one per line of the reply
/// (IRC has no multi-line messages; empty lines are dropped, as IRC cannot send an empty
/// message), each cut at `budget` bytes on a word or character boundary. Control characters
/// (NUL, CTCP's \x01, mIRC formatting codes) are removed: a reply must not end a line early,
/// become a CTCP request or colour the chat.
pub fn text_lines(text: &str, budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split(['\n', '\r']) {
        let clean: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        if clean.trim().is_empty() {
            continue;
        }
        for part in chunk::split(clean.trim_end(), budget, Measure::Bytes) {
            // `split` may break a part at a newline it added to close a code fence; IRC
            // takes no line breaks, so those become separate messages too.
            for piece in part.split('\n') {
                if !piece.trim().is_empty() {
                    out.push(piece.to_owned());
                }
            }
        }
    }
    out
}

/// IRC's case folding for nicks and channels (`rfc1459`: `[]\~` are the upper case of
/// `{}|^`), so `Andy[m]` and `andy{m}` are the same nick, as the server sees it.
pub fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether `nick` can be a nick: not empty, no spaces, controls or the characters that
/// separate a source (`!`, `@`), targets (`,`) or start a channel or a trailing parameter.
pub fn is_valid_nick(nick: &str) -> bool {
    !nick.is_empty()
        && nick.len() <= 64
        && !nick.starts_with([
            '#', '&', '+', '!', ':', '$', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '-',
        ])
        && !nick
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "!@,*?".contains(c))
}

/// Whether `target` names a channel rather than a nick.
pub fn is_channel(target: &str) -> bool {
    target.starts_with(['#', '&', '+', '!'])
}

/// Removes mIRC formatting (bold, colours with their numbers, italics, underline,
/// strike-through, monospace, reverse, reset) so the agent sees plain text.
pub fn strip_formatting(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x02' | '\x0f' | '\x11' | '\x16' | '\x1d' | '\x1e' | '\x1f' => {}
            '\x03' => {
                // \x03FF[,BB]: up to two digits, optionally a comma and two more.
                for _ in 0..2 {
                    if chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                }
                let mut ahead = chars.clone();
                if ahead.next() == Some(',') && ahead.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                    for _ in 0..2 {
                        if chars.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_tags_source_and_trailing() {
        let m = parse(
            "@msgid=abc;time=2024-01-01T00:00:00.000Z;x=a\\sb\\:c :bob!~b@host PRIVMSG #ops :hi there",
        )
        .unwrap();
        assert_eq!(m.tag("msgid"), Some("abc"));
        assert_eq!(m.tag("x"), Some("a b;c"));
        assert_eq!(m.nick(), Some("bob"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#ops", "hi there"]);
        let ping = parse("PING :irc.test").unwrap();
        assert_eq!((ping.command.as_str(), ping.param(0)), ("PING", "irc.test"));
        let numeric = parse(":irc.test 001 andy :Welcome").unwrap();
        assert_eq!(numeric.params, vec!["andy", "Welcome"]);
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for line in [
            "",
            ":",
            "@",
            "@tags",
            ":src",
            "  ",
            "\u{0}\u{1}",
            ": PRIVMSG x",
            "PRI$MSG x",
        ] {
            assert_eq!(parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn encode_refuses_line_breaks_and_bad_middles() {
        assert_eq!(
            encode("PRIVMSG", &["#ops", "hi\r\nQUIT :bye"]),
            Err(EncodeError::LineBreak)
        );
        assert_eq!(
            encode("PRIVMSG", &["#o ps", "x"]),
            Err(EncodeError::BadMiddle)
        );
        assert_eq!(
            encode("PRIVMSG", &["#ops", "hello world"]).unwrap(),
            "PRIVMSG #ops :hello world"
        );
        assert_eq!(encode("NICK", &["andy"]).unwrap(), "NICK andy");
        assert!(matches!(
            encode("PRIVMSG", &["#ops", &"x".repeat(600)]),
            Err(EncodeError::TooLong(_))
        ));
    }

    #[test]
    fn a_reply_becomes_lines_that_fit_with_the_relay_prefix() {
        let budget = text_budget("andy", "#ops");
        let long: String = (0..400).map(|i| format!("wörd{i} ")).collect();
        let text = format!("first line\r\nQUIT :bye\n\n{long}");
        let lines = text_lines(&text, budget);
        assert_eq!(lines[0], "first line");
        assert_eq!(lines[1], "QUIT :bye");
        for l in &lines {
            let relayed = format!(":andy!~andyandy@{} PRIVMSG #ops :{l}\r\n", "h".repeat(63));
            assert!(relayed.len() <= MAX_LINE, "{}", relayed.len());
            assert!(!l.contains(['\r', '\n', '\0']));
        }
        let words: Vec<&str> = lines[2..].iter().flat_map(|l| l.split(' ')).collect();
        assert_eq!(words.len(), 400);
        assert_eq!(words[399], "wörd399");
    }

    #[test]
    fn nul_and_ctcp_markers_are_removed_from_replies() {
        assert_eq!(text_lines("a\0b\x01VERSION\x01", 400), vec!["abVERSION"]);
        assert_eq!(text_lines("\n\n", 400), Vec::<String>::new());
    }

    #[test]
    fn folding_and_formatting() {
        assert_eq!(fold("Andy[m]"), fold("andy{m}"));
        assert_eq!(
            strip_formatting("\x02bold\x02 \x0304,12red\x03 x"),
            "bold red x"
        );
    }
}
