-- nanoclaw schema v8: per-chat wiring rules, and messages held for the owner's decision.

-- Wirings get a trigger rule (in place of requires_trigger), a sender allowlist and a policy
-- for senders not on it. SQLite cannot change a CHECK constraint, so the table is rebuilt.
CREATE TABLE wirings_v8 (
    id               INTEGER PRIMARY KEY,
    chat_id          INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    group_id         TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- word: the group's trigger word; mention: the platform says the bot was addressed (or
    -- the trigger word); always: every message; regex: trigger_pattern matches.
    trigger_rule     TEXT NOT NULL DEFAULT 'word'
                     CHECK (trigger_rule IN ('word', 'mention', 'always', 'regex')),
    trigger_pattern  TEXT NULL,
    -- JSON array of platform sender ids; NULL lets anyone in the chat through.
    allowed_senders  TEXT NULL,
    -- A sender not on the allowlist: 'ignore', or 'ask' the owner (the message is held and
    -- replayed on approval).
    unknown_senders  TEXT NOT NULL DEFAULT 'ignore' CHECK (unknown_senders IN ('ignore', 'ask')),
    session_mode     TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared', 'per-thread')),
    created_at       INTEGER NOT NULL,
    UNIQUE (chat_id, group_id)
);
INSERT INTO wirings_v8 (id, chat_id, group_id, trigger_rule, session_mode, created_at)
    SELECT id, chat_id, group_id, CASE WHEN requires_trigger THEN 'word' ELSE 'always' END,
           session_mode, created_at
    FROM wirings;
DROP TABLE wirings;
ALTER TABLE wirings_v8 RENAME TO wirings;
CREATE INDEX wirings_group ON wirings(group_id);

-- Messages from an unknown chat or sender, kept until the owner decides; approved ones are
-- routed again, as if they had just arrived.
CREATE TABLE held_messages (
    id               INTEGER PRIMARY KEY,
    chat_id          INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    -- The wiring whose allowlist the sender is not on (unknown_sender); NULL for an unknown chat.
    group_id         TEXT NULL,
    reason           TEXT NOT NULL CHECK (reason IN ('unknown_chat', 'unknown_sender')),
    platform_msg_id  TEXT NOT NULL,
    sender           TEXT NOT NULL,
    sender_name      TEXT NULL,
    text             TEXT NOT NULL,
    thread           TEXT NULL,
    mentions_me      INTEGER NOT NULL DEFAULT 0,
    received_at      INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'approved', 'denied')),
    created_at       INTEGER NOT NULL,
    UNIQUE (chat_id, platform_msg_id)
);
CREATE INDEX held_waiting ON held_messages(state, chat_id);

-- Chats the owner turned away: their messages are dropped without asking again.
CREATE TABLE blocked_chats (
    chat_id     INTEGER PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

-- One-time pairing codes: the first message in an unknown chat that is exactly the code wires
-- that chat to the group.
CREATE TABLE pairing_codes (
    code        TEXT PRIMARY KEY NOT NULL,
    channel     TEXT NOT NULL,
    group_id    TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER NULL,
    created_at  INTEGER NOT NULL
);

-- Chats that are the owner's main chat besides the terminal (a direct chat with the owner on
-- a platform): approvals are taken from them and the host's notices go to the newest.
CREATE TABLE owner_chats (
    chat_id     INTEGER PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
