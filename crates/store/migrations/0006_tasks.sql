-- Scheduled tasks and their runs. A run is fired in ONE transaction that records it (unique per task
-- and scheduled time), queues its inbound turn and advances the task's next_run_at: a run is never
-- fired twice, and a due run is never lost across a crash.

-- The group's IANA time zone; NULL means the host's.
ALTER TABLE agent_groups ADD COLUMN timezone TEXT NULL;

CREATE TABLE tasks (
    id                    TEXT PRIMARY KEY NOT NULL,
    group_id              TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- Where the runs' answers go: the chat the task was created from.
    chat_id               INTEGER NOT NULL REFERENCES chats(id),
    prompt                TEXT NOT NULL,
    script                TEXT NULL,
    -- nanoclaw-schedule's Schedule as JSON.
    schedule              TEXT NOT NULL,
    timezone              TEXT NOT NULL,
    isolated              INTEGER NOT NULL DEFAULT 0,
    status                TEXT NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'paused', 'done', 'cancelled', 'failing')),
    next_run_at           INTEGER NULL,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    created_by            TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX tasks_due ON tasks(next_run_at) WHERE status IN ('active', 'failing');
CREATE INDEX tasks_group ON tasks(group_id);

CREATE TABLE task_runs (
    id             INTEGER PRIMARY KEY,
    task_id        TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    scheduled_for  INTEGER NOT NULL,
    fired_at       INTEGER NOT NULL,
    finished_at    INTEGER NULL,
    status         TEXT NOT NULL
                   CHECK (status IN ('queued', 'ok', 'skipped', 'failed', 'missed')),
    late_ms        INTEGER NOT NULL DEFAULT 0,
    manual         INTEGER NOT NULL DEFAULT 0,
    inbound_id     INTEGER NULL,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    error          TEXT NULL,
    UNIQUE (task_id, scheduled_for)
);
CREATE INDEX task_runs_task ON task_runs(task_id, scheduled_for);

-- The run an inbound row carries out (NULL for chat messages).
ALTER TABLE inbound ADD COLUMN task_run_id INTEGER NULL REFERENCES task_runs(id);
