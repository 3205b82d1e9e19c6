-- nanoclaw schema v11: chats whose replies go to another chat. A chat that cannot show
-- replies (a webhook without a reply URL) sends them to the owner's main chat instead.
CREATE TABLE reply_routes (
    chat_id         INTEGER PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    target_chat_id  INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    CHECK (chat_id <> target_chat_id)
);
