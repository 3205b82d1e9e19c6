//! The model conversation and its file, so a restarted agent resumes where it stopped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provider::{ContentBlock, Message, Role};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// The prompt size the API reported for the last request, for compaction decisions.
    #[serde(default)]
    pub last_input_tokens: Option<u64>,
}

impl Conversation {
    /// Appends a user text, merging into a trailing user message so roles keep
    /// alternating.
    pub fn push_user_text(&mut self, text: String) {
        match self.messages.last_mut() {
            Some(last) if last.role == Role::User => {
                last.content.push(ContentBlock::Text { text });
            }
            _ => self.messages.push(Message::user_text(text)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    session_id: String,
    #[serde(flatten)]
    conversation: Conversation,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot save the conversation to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the conversation: {0}")]
    Encode(#[from] serde_json::Error),
}

/// `<workspace>/.nanoclaw/conversations/<session_id>.json`.
pub struct ConversationStore {
    path: PathBuf,
    session_id: String,
}

/// Keeps a host-chosen id from naming a path outside the conversations folder.
pub fn safe_file_stem(session_id: &str) -> String {
    let mut s: String = session_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s.chars().take(128).collect()
}

impl ConversationStore {
    pub fn new(workspace: &Path, session_id: &str) -> Self {
        let path = workspace
            .join(".nanoclaw")
            .join("conversations")
            .join(format!("{}.json", safe_file_stem(session_id)));
        Self {
            path,
            session_id: session_id.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved conversation, or an empty one. A corrupt file is moved aside to
    /// `<name>.corrupt-<timestamp>` (the returned note says so) and never stops the agent.
    pub fn load(&self) -> (Conversation, Option<String>) {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Conversation::default(), None);
            }
            Err(e) => {
                return (
                    Conversation::default(),
                    Some(format!(
                        "cannot read the saved conversation {}: {e}; starting a new one",
                        self.path.display()
                    )),
                );
            }
        };
        match serde_json::from_slice::<FileFormat>(&bytes) {
            Ok(f) if f.version == FORMAT_VERSION => (f.conversation, None),
            Ok(f) => (
                Conversation::default(),
                Some(self.move_aside(&format!("unknown format version {}", f.version))),
            ),
            Err(e) => (
                Conversation::default(),
                Some(self.move_aside(&e.to_string())),
            ),
        }
    }

    fn move_aside(&self, reason: &str) -> String {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(".corrupt-{stamp}"));
        let aside = PathBuf::from(aside);
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => format!(
                "the saved conversation {} is unreadable ({reason}); moved it to {} and started a new one",
                self.path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "the saved conversation {} is unreadable ({reason}) and could not be moved aside ({e}); starting a new one",
                self.path.display()
            ),
        }
    }

    /// Writes atomically (temp file + rename), so a crash never leaves half a file.
    pub fn save(&self, conversation: &Conversation) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let body = serde_json::to_vec(&FileFormat {
            version: FORMAT_VERSION,
            session_id: self.session_id.clone(),
            conversation: conversation.clone(),
        })?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_conversation_is_resumed() {
        let ws = tempfile::tempdir().unwrap();
        let store = ConversationStore::new(ws.path(), "sess-1");
        let mut c = Conversation::default();
        c.push_user_text("hello".into());
        c.messages.push(Message::assistant_text("hi there"));
        c.last_input_tokens = Some(42);
        store.save(&c).unwrap();
        let (loaded, note) = ConversationStore::new(ws.path(), "sess-1").load();
        assert_eq!(note, None);
        assert_eq!(loaded, c);
        assert!(
            ws.path()
                .join(".nanoclaw/conversations/sess-1.json")
                .is_file()
        );
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_a_new_conversation_starts() {
        let ws = tempfile::tempdir().unwrap();
        let store = ConversationStore::new(ws.path(), "s");
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), "{garbage").unwrap();
        let (c, note) = store.load();
        assert!(c.messages.is_empty());
        assert!(note.unwrap().contains("moved it to"));
        assert!(!store.path().exists());
        let aside: Vec<_> = std::fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            aside.iter().any(|n| n.starts_with("s.json.corrupt-")),
            "{aside:?}"
        );
    }

    #[test]
    fn session_ids_cannot_escape_the_folder() {
        assert_eq!(safe_file_stem("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(safe_file_stem(""), "_");
    }

    #[test]
    fn user_text_merges_into_a_trailing_user_message() {
        let mut c = Conversation::default();
        c.push_user_text("a".into());
        c.push_user_text("b".into());
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].content.len(), 2);
    }
}
