-- nanoclaw schema v1. All times are INTEGER unix milliseconds (UTC).

CREATE TABLE agent_groups (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    folder      TEXT NOT NULL UNIQUE,
    trigger     TEXT NOT NULL DEFAULT '@Andy',
    is_main     INTEGER NOT NULL DEFAULT 0,
    provider    TEXT NULL,
    model       TEXT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE chats (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    platform_id  TEXT NOT NULL,
    name         TEXT NOT NULL,
    is_group     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    UNIQUE (channel, platform_id)
);

CREATE TABLE wirings (
    id                INTEGER PRIMARY KEY,
    chat_id           INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    group_id          TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    requires_trigger  INTEGER NOT NULL DEFAULT 1,
    session_mode      TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared', 'per-thread')),
    created_at        INTEGER NOT NULL,
    UNIQUE (chat_id, group_id)
);
CREATE INDEX wirings_group ON wirings(group_id);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    group_id     TEXT NOT NULL REFERENCES agent_groups(id),
    chat_id      INTEGER NOT NULL REFERENCES chats(id),
    thread       TEXT NULL,
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    created_at   INTEGER NOT NULL,
    last_active  INTEGER NOT NULL
);
-- At most one active session per (group, chat, thread); a NULL thread (shared mode) counts as one value.
CREATE UNIQUE INDEX sessions_one_active
    ON sessions(group_id, chat_id, COALESCE(thread, ''))
    WHERE status = 'active';

CREATE TABLE inbound (
    id               INTEGER PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions(id),
    chat_id          INTEGER NOT NULL REFERENCES chats(id),
    platform_msg_id  TEXT NOT NULL,
    sender           TEXT NOT NULL,
    sender_name      TEXT NULL,
    text             TEXT NOT NULL,
    thread           TEXT NULL,
    received_at      INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    tries            INTEGER NOT NULL DEFAULT 0,
    process_after    INTEGER NOT NULL,
    last_error       TEXT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (session_id, platform_msg_id)
);
CREATE INDEX inbound_status_due ON inbound(status, process_after);

CREATE TABLE outbound (
    id                   INTEGER PRIMARY KEY,
    session_id           TEXT NULL REFERENCES sessions(id),
    chat_id              INTEGER NOT NULL REFERENCES chats(id),
    in_reply_to          INTEGER NULL,
    idempotency_key      TEXT NOT NULL UNIQUE,
    text                 TEXT NOT NULL,
    kind                 TEXT NOT NULL CHECK (kind IN ('reply', 'message', 'error')),
    state                TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    tries                INTEGER NOT NULL DEFAULT 0,
    platform_message_id  TEXT NULL,
    last_error           TEXT NULL,
    created_at           INTEGER NOT NULL,
    delivered_at         INTEGER NULL
);
CREATE INDEX outbound_state ON outbound(state, id);
CREATE INDEX outbound_chat ON outbound(chat_id, id);

CREATE TABLE turn_usage (
    id              INTEGER PRIMARY KEY,
    session_id      TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_read      INTEGER NOT NULL DEFAULT 0,
    cache_creation  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);
CREATE INDEX turn_usage_session ON turn_usage(session_id);
