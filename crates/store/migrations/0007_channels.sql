-- nanoclaw schema v7: what platform channels keep between runs.

-- Small per-channel state: update offsets, gateway resume tokens, cursors.
CREATE TABLE channel_state (
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
);

-- The send ledger: each part of each outgoing message, recorded before it is sent
-- ('sending') and after the platform took it ('sent'), so a restart never sends a part twice.
CREATE TABLE channel_sends (
    idempotency_key  TEXT NOT NULL,
    part             INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('sending', 'sent')),
    platform_msg_id  TEXT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (idempotency_key, part)
);
