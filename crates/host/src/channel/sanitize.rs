//! Agent text made safe to print on the owner's terminal.
//!
//! Whatever an agent writes is untrusted. Printed raw, escape sequences would act on the
//! owner's terminal: OSC 52 writes the clipboard, CSI clears the screen or moves the cursor
//! over earlier output, OSC 0 changes the title, C1 controls do the same in one character,
//! and bidi overrides make text read differently from what it is. [`TerminalText`] drops all
//! of them, keeping the visible text, newlines and tabs.

/// Where the stripper is inside a control sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// After ESC and intermediate bytes (e.g. `ESC ( B`).
    EscapeIntermediate,
    /// A CSI sequence (`ESC [` or U+009B): parameters until the final byte.
    Csi,
    /// OSC, DCS, SOS, PM or APC: a string until BEL or ST; `escape` after an ESC in it.
    String { escape: bool },
}

/// Strips terminal control sequences from text that may arrive in pieces (streamed deltas):
/// a sequence split across pieces is still removed whole.
#[derive(Debug, Clone, Default)]
pub struct TerminalText {
    state: State,
}

impl TerminalText {
    pub fn new() -> Self {
        Self::default()
    }

    /// The printable part of `piece`, given what came before it.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len());
        for c in piece.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// Forgets an unfinished sequence (a new message starts clean).
    pub fn reset(&mut self) {
        self.state = State::Text;
    }

    fn step(&mut self, c: char, out: &mut String) {
        self.state = match self.state {
            State::Text => match c {
                '\n' | '\t' => {
                    out.push(c);
                    State::Text
                }
                '\u{1b}' => State::Escape,
                '\u{9b}' => State::Csi,
                // C1 DCS, SOS, OSC, PM, APC: strings up to a terminator.
                '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => {
                    State::String { escape: false }
                }
                c if c.is_control() || is_bidi_control(c) => State::Text,
                c => {
                    out.push(c);
                    State::Text
                }
            },
            State::Escape => match c {
                '[' => State::Csi,
                ']' | 'P' | 'X' | '^' | '_' => State::String { escape: false },
                '\u{1b}' => State::Escape,
                '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
                '\u{30}'..='\u{7e}' => State::Text,
                // Not a sequence after all: the ESC is dropped, the character judged alone.
                c => return self.restart(c, out),
            },
            State::EscapeIntermediate => match c {
                '\u{20}'..='\u{2f}' => State::EscapeIntermediate,
                '\u{30}'..='\u{7e}' => State::Text,
                c => return self.restart(c, out),
            },
            State::Csi => match c {
                '\u{20}'..='\u{3f}' => State::Csi,
                '\u{40}'..='\u{7e}' => State::Text,
                '\u{1b}' => State::Escape,
                c if c.is_control() => State::Csi,
                c => return self.restart(c, out),
            },
            State::String { escape: false } => match c {
                '\u{7}' | '\u{9c}' => State::Text,
                '\u{1b}' => State::String { escape: true },
                _ => State::String { escape: false },
            },
            State::String { escape: true } => match c {
                '\\' => State::Text,
                // ESC ends the string and starts a new sequence.
                c => {
                    self.state = State::Escape;
                    return self.step(c, out);
                }
            },
        };
    }

    fn restart(&mut self, c: char, out: &mut String) {
        self.state = State::Text;
        self.step(c, out);
    }
}

/// `text` without terminal control sequences (a whole message).
pub fn for_terminal(text: &str) -> String {
    TerminalText::new().push(text)
}

/// Unicode bidi embeddings, overrides and isolates (LRE…RLO, LRI…PDI): they reorder what is
/// shown. The plain marks (LRM, RLM) only nudge neutral characters and stay.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_go_visible_text_stays() {
        let hostile = "a\u{1b}]52;c;SGFja2Vk\u{7}b\u{1b}[2J\u{1b}[H\u{1b}]0;title\u{1b}\\c\
                       \u{9b}31md\u{9d}8;;http://x\u{9c}e\u{1b}Pdcs\u{1b}\\f\u{1b}(Bg\u{1b}7h\
                       \r\u{8}\u{7}\u{7f}i\u{202e}j\u{2066}k\u{85}l";
        assert_eq!(for_terminal(hostile), "abcdefghijkl");
    }

    #[test]
    fn newlines_tabs_and_ordinary_unicode_are_kept() {
        let text = "line 1\n\tindented — ünïcödé 日本語 🙂\u{200f}";
        assert_eq!(for_terminal(text), text);
    }

    #[test]
    fn a_sequence_split_across_deltas_is_removed_whole() {
        let mut t = TerminalText::new();
        let mut out = String::new();
        for piece in [
            "one \u{1b}",
            "]52;c;",
            "SGVsbG8=",
            "\u{7} two \u{1b}[",
            "31",
            "m three",
        ] {
            out.push_str(&t.push(piece));
        }
        assert_eq!(out, "one  two  three");
    }

    #[test]
    fn an_unterminated_string_swallows_the_rest_like_a_terminal_and_reset_recovers() {
        let mut t = TerminalText::new();
        assert_eq!(t.push("ok\u{1b}]0;never ends"), "ok");
        t.reset();
        assert_eq!(t.push("next"), "next");
        // A stray ESC before a non-ASCII character drops only the ESC.
        assert_eq!(for_terminal("\u{1b}é"), "é");
    }
}
