-- nanoclaw schema v13: the skills each group enabled, and what enabling them grants. A skill's
-- grants live in their own tables (never in the owner's `group_egress_rules` or `vault_grants`),
-- so disabling a skill removes exactly what it added and never a rule the owner made by hand.
-- Only rows whose skill is `enabled` apply: a paused skill's grants are suspended.
CREATE TABLE group_skills (
    group_id      TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    skill         TEXT NOT NULL,
    -- Where the skill was found when it was enabled or approved: builtin, user or group.
    source        TEXT NOT NULL,
    -- The content hash the owner approved (enable or approve).
    content_hash  TEXT NOT NULL,
    -- 'enabled', or 'paused' when its files no longer match `content_hash` (or it is gone).
    state         TEXT NOT NULL CHECK (state IN ('enabled', 'paused')),
    -- 1: the owner asked for it; 0: enabled because an enabled skill requires it.
    requested     INTEGER NOT NULL DEFAULT 1,
    -- Why it is paused, and the hash found then (NULL when the skill is gone or broken).
    paused_reason TEXT,
    found_hash    TEXT,
    enabled_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (group_id, skill)
);

-- Hosts an enabled skill may reach, with the methods it declared (comma-separated, upper case).
CREATE TABLE group_skill_egress (
    group_id  TEXT NOT NULL,
    skill     TEXT NOT NULL,
    pattern   TEXT NOT NULL,
    methods   TEXT NOT NULL,
    PRIMARY KEY (group_id, skill, pattern),
    FOREIGN KEY (group_id, skill) REFERENCES group_skills(group_id, skill) ON DELETE CASCADE
);

-- Vault secrets an enabled skill may use, each on one host pattern (placeholders only: the
-- sandbox holds a placeholder, the egress proxy swaps in the value for these hosts).
CREATE TABLE group_skill_secrets (
    group_id     TEXT NOT NULL,
    skill        TEXT NOT NULL,
    secret_name  TEXT NOT NULL,
    host         TEXT NOT NULL,
    PRIMARY KEY (group_id, skill, secret_name, host),
    FOREIGN KEY (group_id, skill) REFERENCES group_skills(group_id, skill) ON DELETE CASCADE
);
