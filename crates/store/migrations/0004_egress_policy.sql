-- nanoclaw schema v4: each group's egress policy (deny by default). The host's egress proxy reads these
-- rows on every request (briefly cached); loopback, private, link-local and metadata addresses are refused
-- whatever they say.

CREATE TABLE group_egress_rules (
    group_id    TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- `api.example.com` (exactly that host) or `*.example.com` (any subdomain), lower case.
    pattern     TEXT NOT NULL,
    -- One action per pattern: allowing a denied pattern replaces the deny (and the reverse).
    action      TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, pattern)
);

CREATE TABLE group_egress_settings (
    group_id    TEXT PRIMARY KEY REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- Comma-separated upper-case methods, e.g. `GET,HEAD`; NULL means every method.
    methods     TEXT,
    -- Comma-separated ports, e.g. `80,443,8443`; NULL means the default (80 and 443).
    ports       TEXT,
    updated_at  INTEGER NOT NULL
);
