-- nanoclaw schema v5: the owner's approval of grants marked `needs_approval`, and rate limits per secret.

-- Injections of a secret per minute (sliding window, counted by the host's egress proxy); 0 = no limit.
ALTER TABLE vault_secrets ADD COLUMN per_minute INTEGER NOT NULL DEFAULT 0;

-- One row per grant that was asked for (or decided by the owner): the first use of a grant that needs
-- approval records `pending` and the owner is asked once in the main chat; `approved` lets it inject,
-- `denied` keeps refusing it. Removed with the grant (grant ids can be reused after a delete).
CREATE TABLE vault_grant_approvals (
    grant_id      INTEGER PRIMARY KEY REFERENCES vault_grants(id) ON DELETE CASCADE,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
    requested_at  INTEGER NOT NULL,
    decided_at    INTEGER,
    -- The group whose agent asked and the host it asked for (the grant's own, when decided unasked).
    group_folder  TEXT NOT NULL,
    host          TEXT NOT NULL
);
