-- nanoclaw schema v12: the shared memory store. Per agent group, in namespaces (`shared`, or
-- `skill:<name>` for one skill), searched by full text. The FTS5 index holds no copy of the
-- text (external content); triggers keep it in step with the table.
CREATE TABLE memories (
    -- AUTOINCREMENT: an id is never reused, so a stale id can never forget a newer memory.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    namespace   TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- Listing (recent first) and counting a group's memories.
CREATE INDEX memories_group ON memories(group_id, id);
-- A search checks each match's group and namespace: from this small index (named in the query)
-- instead of the row with its text, about twice as fast per match.
CREATE INDEX memories_scope ON memories(id, group_id, namespace);

-- Porter stemming so "birthdays" finds "birthday"; diacritics folded so "cafe" finds "café".
CREATE VIRTUAL TABLE memories_fts USING fts5(
    text,
    content = 'memories',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER memories_au AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);
END;
