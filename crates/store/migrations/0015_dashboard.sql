-- The web dashboard's sign-ins: one-time login links minted by `nanoclaw dashboard`, and the
-- browser sessions they open. Only SHA-256 digests of the tokens are kept, so a copy of the
-- database opens no session.
CREATE TABLE dashboard_tokens (
    digest      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('login', 'session')),
    -- Sessions: the token every request that changes something must carry (CSRF).
    csrf        TEXT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The web chat shows a chat's transcript: its messages by chat, newest first.
CREATE INDEX inbound_chat ON inbound(chat_id, id);
