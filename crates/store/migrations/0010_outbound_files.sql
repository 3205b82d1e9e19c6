-- nanoclaw schema v10: files attached to outbound messages.

-- One row per file, in the order the agent listed them. `path` is the host's own copy in its
-- outbox (never the agent's file: the agent could change that after the check), kept until the
-- message is delivered or given up; `size` is the copy's length in bytes.
CREATE TABLE outbound_files (
    outbound_id  INTEGER NOT NULL REFERENCES outbound(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    file_name    TEXT NOT NULL,
    path         TEXT NOT NULL,
    mime_type    TEXT NULL,
    size         INTEGER NOT NULL,
    PRIMARY KEY (outbound_id, position)
);
