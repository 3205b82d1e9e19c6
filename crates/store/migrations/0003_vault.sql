-- nanoclaw schema v3: the vault. Secret values are stored only as AEAD ciphertext (XChaCha20-Poly1305,
-- the master key lives outside the data dir); the nonce is per version and the secret's name and version
-- are the associated data, so a row moved onto another name or version no longer decrypts.

-- Vault-wide values, e.g. 'key_check': a known plaintext sealed with the master key, so a wrong key is
-- detected before anything is written.
CREATE TABLE vault_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE vault_secrets (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    rotated_at      INTEGER
);

-- Every version until the secret is removed: the leak guard looks for retired values too.
CREATE TABLE vault_versions (
    name        TEXT NOT NULL REFERENCES vault_secrets(name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER,
    PRIMARY KEY (name, version)
);

-- Where a secret may be used: by which group's agents, on which host (exact or *.suffix), under which
-- path prefix ('' = any), put where (the inject template).
CREATE TABLE vault_grants (
    id              INTEGER PRIMARY KEY,
    secret_name     TEXT NOT NULL REFERENCES vault_secrets(name) ON DELETE CASCADE,
    group_folder    TEXT NOT NULL,
    host            TEXT NOT NULL,
    path_prefix     TEXT NOT NULL DEFAULT '',
    inject          TEXT NOT NULL,
    needs_approval  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    UNIQUE (secret_name, group_folder, host, path_prefix)
);
CREATE INDEX vault_grants_group ON vault_grants(group_folder);

-- Every proxied request, as a hash chain: hash = SHA-256(prev_hash || canonical row).
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    group_folder  TEXT NOT NULL,
    method        TEXT NOT NULL,
    host          TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER,
    bytes_up      INTEGER NOT NULL DEFAULT 0,
    bytes_down    INTEGER NOT NULL DEFAULT 0,
    secret_name   TEXT,
    decision      TEXT NOT NULL CHECK (decision IN ('allow', 'deny', 'inject')),
    reason        TEXT NOT NULL DEFAULT '',
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_group ON audit(group_folder, id);
