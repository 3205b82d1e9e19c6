-- nanoclaw schema v2: extra host folders a group asks to see. Whether one is actually mounted is decided
-- at every spawn by the host's mount allowlist (outside the data dir); these rows are only requests.

CREATE TABLE group_mounts (
    group_id    TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- Appears in the sandbox as /workspace/extra/<name>.
    name        TEXT NOT NULL,
    -- As the owner gave it (absolute or ~/...); resolved and checked again at every spawn.
    host_path   TEXT NOT NULL,
    -- Asked for read-write; the allowlist may still make it read-only.
    read_write  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, name)
);
