//! Agent groups.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::engine::{Store, new_id, now_ms};
use crate::error::{Ctx, StoreError};
use crate::model::{Group, NewGroup};

/// The trigger used when a group does not set one.
pub const DEFAULT_TRIGGER: &str = "@Andy";

pub(crate) const GROUP_COLS: &str =
    "id, name, folder, trigger, is_main, provider, model, created_at, timezone";

/// Map a row selected with [`GROUP_COLS`] starting at column `at`.
pub(crate) fn group_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(at)?,
        name: row.get(at + 1)?,
        folder: row.get(at + 2)?,
        trigger: row.get(at + 3)?,
        is_main: row.get(at + 4)?,
        provider: row.get(at + 5)?,
        model: row.get(at + 6)?,
        created_at: row.get(at + 7)?,
        timezone: row.get(at + 8)?,
    })
}

/// A group folder becomes a directory name: keep it to a safe, portable charset, and keep `global`
/// (the shared folder) reserved.
pub fn validate_folder(folder: &str) -> Result<(), StoreError> {
    let mut chars = folder.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !first_ok || !rest_ok || folder.len() > 64 {
        return Err(StoreError::Invalid(format!(
            "group folder {folder:?} must be 1-64 characters of letters, digits, '_' or '-', \
             starting with a letter or digit"
        )));
    }
    if folder.eq_ignore_ascii_case("global") {
        return Err(StoreError::Invalid(
            "group folder \"global\" is reserved for the shared folder; pick another name".into(),
        ));
    }
    Ok(())
}

fn group_by_folder_sync(conn: &Connection, folder: &str) -> Result<Option<Group>, StoreError> {
    conn.query_row(
        &format!("SELECT {GROUP_COLS} FROM agent_groups WHERE folder = ?1"),
        [folder],
        |r| group_at(r, 0),
    )
    .optional()
    .ctx("look up group by folder")
}

fn folder_clash(err: rusqlite::Error, folder: &str) -> StoreError {
    if err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
        StoreError::Invalid(format!("another group already uses folder {folder:?}"))
    } else {
        StoreError::Sqlite {
            op: "update group",
            source: err,
        }
    }
}

impl Store {
    /// Insert the group, or return the existing one with the same folder unchanged.
    pub async fn ensure_group(&self, g: NewGroup) -> Result<Group, StoreError> {
        validate_folder(&g.folder)?;
        self.write("ensure group", move |tx| {
            if let Some(existing) = group_by_folder_sync(tx, &g.folder)? {
                return Ok(existing);
            }
            let group = Group {
                id: new_id("grp"),
                name: g.name.clone(),
                folder: g.folder.clone(),
                trigger: g.trigger.clone().unwrap_or_else(|| DEFAULT_TRIGGER.to_string()),
                is_main: g.is_main,
                provider: g.provider.clone(),
                model: g.model.clone(),
                created_at: now_ms(),
                timezone: None,
            };
            tx.execute(
                &format!("INSERT INTO agent_groups ({GROUP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    group.id,
                    group.name,
                    group.folder,
                    group.trigger,
                    group.is_main,
                    group.provider,
                    group.model,
                    group.created_at,
                    group.timezone
                ],
            )
            .ctx("insert group")?;
            tracing::info!(group = %group.id, folder = %group.folder, "store: group created");
            Ok(group)
        })
        .await
    }

    /// Overwrite every field of the group with id `g.id` (except `created_at`).
    pub async fn update_group(&self, g: &Group) -> Result<(), StoreError> {
        validate_folder(&g.folder)?;
        let g = g.clone();
        self.write("update group", move |tx| {
            let changed = tx
                .execute(
                    "UPDATE agent_groups SET name = ?2, folder = ?3, trigger = ?4, is_main = ?5,
                         provider = ?6, model = ?7, timezone = ?8
                     WHERE id = ?1",
                    params![
                        g.id, g.name, g.folder, g.trigger, g.is_main, g.provider, g.model,
                        g.timezone
                    ],
                )
                .map_err(|e| folder_clash(e, &g.folder))?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "group",
                    id: g.id.clone(),
                });
            }
            Ok(())
        })
        .await
    }

    /// The group with this id.
    pub async fn group(&self, id: impl Into<String>) -> Result<Option<Group>, StoreError> {
        let id = id.into();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {GROUP_COLS} FROM agent_groups WHERE id = ?1"),
                [&id],
                |r| group_at(r, 0),
            )
            .optional()
            .ctx("look up group")
        })
        .await
    }

    /// The group with this folder.
    pub async fn group_by_folder(
        &self,
        folder: impl Into<String>,
    ) -> Result<Option<Group>, StoreError> {
        let folder = folder.into();
        self.read(move |conn| group_by_folder_sync(conn, &folder))
            .await
    }

    /// All groups, main group first, then by creation.
    /// The main group (the owner's), once it exists.
    pub async fn main_group(&self) -> Result<Option<Group>, StoreError> {
        Ok(self.list_groups().await?.into_iter().find(|g| g.is_main))
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {GROUP_COLS} FROM agent_groups ORDER BY is_main DESC, created_at, folder"
                ))
                .ctx("list groups")?;
            let rows = stmt.query_map([], |r| group_at(r, 0)).ctx("list groups")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list groups")
        })
        .await
    }
}
