//! nanoclaw's central SQLite database.
//!
//! One [`Store`] handle per process (cheap to clone). Every call runs on a single owner thread that holds
//! the connection, so writes are serialized; write transactions are `BEGIN IMMEDIATE` with a busy timeout
//! so a second process on the same file waits instead of failing. Times are unix milliseconds (UTC); calls
//! whose behaviour depends on time take `now_ms` so tests control the clock.
//!
//! Besides the message path's state it keeps each agent group's memory store (`memories.rs`:
//! namespaced texts behind an FTS5 index; see docs/MEMORY.md).

mod channels;
mod chats;
mod dashboard;
mod egress;
mod engine;
mod error;
mod group_commit;
mod groups;
mod held;
mod host_state;
mod inbound;
mod memories;
mod model;
mod mounts;
mod ops;
mod outbound;
mod sessions;
mod skills;
mod tasks;
mod usage;
mod vault;

pub use channels::LedgerPart;
pub use dashboard::TranscriptLine;
pub use egress::{EgressAction, EgressRule, EgressSettings};
pub use engine::{
    DEFAULT_BUSY_TIMEOUT, LockWait, LockWaitFn, SCHEMA_VERSION, Store, StoreOptions, now_ms,
};
pub use error::StoreError;
pub use groups::{DEFAULT_TRIGGER, validate_folder};
pub use held::{Held, NewHeld, Pairing};
pub use host_state::Paused;
pub use inbound::backoff_ms;
pub use memories::{
    MAX_MEMORIES_PER_GROUP, MAX_MEMORY_TEXT_BYTES, MAX_QUERY_BYTES, MAX_RESULTS, Memory, MemoryHit,
    MemoryQuery, NewMemory, RANK_WINDOW, SHARED_NAMESPACE, SKILL_NAMESPACE_PREFIX,
    validate_namespace,
};
pub use model::{
    Chat, Group, HeldMessage, Inbound, InboundStatus, InsertedInbound, NewGroup, NewInbound,
    NewOutbound, Outbound, OutboundFile, OutboundKind, OutboundState, RetryOutcome, Session,
    SessionMode, SessionScope, SessionStatus, TriggerRule, UnknownSenders, Usage, UsageTotals,
    Wiring, WiringOptions,
};
pub use mounts::{GroupMount, NewGroupMount, validate_mount_name};
pub use ops::{FailureCounts, QueueCounts};
/// Re-exported so [`Store::call`] users need no direct rusqlite dependency.
pub use rusqlite;
pub use skills::{
    ActiveSkillEgress, GroupSkill, GroupSkillState, NewGroupSkill, SkillEgress, SkillSecret,
    SkillSecretGrant,
};
pub use tasks::{
    FailedRun, FireTask, FiredRun, NewTask, RunStatus, TASK_FAILING_AFTER, Task, TaskChanges,
    TaskRunRow, TaskStatus,
};
pub use vault::{
    AUDIT_GENESIS_HASH, ApprovalState, AuditRecord, GrantApproval, NewAudit, NewGrant,
    SecretRecord, SecretVersion, VaultGrant,
};
