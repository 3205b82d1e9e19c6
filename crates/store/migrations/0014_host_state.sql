-- nanoclaw schema v14: host-wide switches that must survive a restart. Today one: the owner's
-- kill switch (`/pause` … `/resume`): while a 'paused' row exists no agent starts and no
-- scheduled task fires.
CREATE TABLE host_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
