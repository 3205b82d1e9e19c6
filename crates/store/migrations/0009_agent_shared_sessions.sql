-- nanoclaw schema v9: one session for the whole agent group ("agent-shared"), and the thread
-- a reply goes to kept on the reply itself.

-- A session is the conversation of one chat (scope 'chat': the chat, or one of its threads in
-- per-thread mode) or of the whole agent group (scope 'group': every chat wired to the group
-- with session_mode 'agent-shared' talks into it; chat_id is the chat that started it).
ALTER TABLE sessions ADD COLUMN scope TEXT NOT NULL DEFAULT 'chat' CHECK (scope IN ('chat', 'group'));
DROP INDEX sessions_one_active;
CREATE UNIQUE INDEX sessions_one_active
    ON sessions(group_id, chat_id, COALESCE(thread, ''))
    WHERE status = 'active' AND scope = 'chat';
CREATE UNIQUE INDEX sessions_one_active_per_group
    ON sessions(group_id)
    WHERE status = 'active' AND scope = 'group';

-- Where a message goes within its chat: a per-thread session's thread, or (in a group-wide
-- session, which spans chats and threads) the thread of the message it answers. Delivery
-- reads it here instead of looking up the session of every row.
ALTER TABLE outbound ADD COLUMN thread TEXT NULL;
UPDATE outbound SET thread = (SELECT s.thread FROM sessions s WHERE s.id = outbound.session_id)
    WHERE session_id IS NOT NULL;

-- Wirings accept the new session mode. SQLite cannot change a CHECK constraint: rebuilt.
CREATE TABLE wirings_v9 (
    id               INTEGER PRIMARY KEY,
    chat_id          INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    group_id         TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    trigger_rule     TEXT NOT NULL DEFAULT 'word'
                     CHECK (trigger_rule IN ('word', 'mention', 'always', 'regex')),
    trigger_pattern  TEXT NULL,
    allowed_senders  TEXT NULL,
    unknown_senders  TEXT NOT NULL DEFAULT 'ignore' CHECK (unknown_senders IN ('ignore', 'ask')),
    session_mode     TEXT NOT NULL DEFAULT 'shared'
                     CHECK (session_mode IN ('shared', 'per-thread', 'agent-shared')),
    created_at       INTEGER NOT NULL,
    UNIQUE (chat_id, group_id)
);
INSERT INTO wirings_v9 (id, chat_id, group_id, trigger_rule, trigger_pattern, allowed_senders,
                        unknown_senders, session_mode, created_at)
    SELECT id, chat_id, group_id, trigger_rule, trigger_pattern, allowed_senders,
           unknown_senders, session_mode, created_at
    FROM wirings;
DROP TABLE wirings;
ALTER TABLE wirings_v9 RENAME TO wirings;
CREATE INDEX wirings_group ON wirings(group_id);

-- A message is stored once per session AND chat: a group-wide session holds several chats,
-- whose platforms number messages per chat (Telegram's message ids start at 1 in every chat).
-- The UNIQUE constraint is part of the table, so the table is rebuilt.
CREATE TABLE inbound_v9 (
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
    task_run_id      INTEGER NULL REFERENCES task_runs(id),
    UNIQUE (session_id, chat_id, platform_msg_id)
);
INSERT INTO inbound_v9 (id, session_id, chat_id, platform_msg_id, sender, sender_name, text, thread,
                        received_at, status, tries, process_after, last_error, updated_at, task_run_id)
    SELECT id, session_id, chat_id, platform_msg_id, sender, sender_name, text, thread,
           received_at, status, tries, process_after, last_error, updated_at, task_run_id
    FROM inbound;
DROP TABLE inbound;
ALTER TABLE inbound_v9 RENAME TO inbound;
CREATE INDEX inbound_status_due ON inbound(status, process_after);
