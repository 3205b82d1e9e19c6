//! Extra host folders a group asks to see (`group_mounts`).
//!
//! A row is a request, not a grant: the host checks it against the mount allowlist (which lives outside
//! the data dir) at every spawn and mounts only what passes.

use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};

use crate::engine::{Store, now_ms};
use crate::error::{Ctx, StoreError};

/// A mount a group asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMount {
    pub group_id: String,
    /// The folder appears in the sandbox as `/workspace/extra/<name>`.
    pub name: String,
    /// The host path as the owner gave it (absolute, or starting with `~/`).
    pub host_path: String,
    /// Whether read-write was asked for; the allowlist decides whether it is granted.
    pub read_write: bool,
    pub created_at: i64,
}

/// Input of [`Store::add_group_mount`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewGroupMount {
    pub group_id: String,
    pub name: String,
    pub host_path: String,
    pub read_write: bool,
}

const MOUNT_COLS: &str = "group_id, name, host_path, read_write, created_at";

fn mount_at(row: &Row<'_>) -> rusqlite::Result<GroupMount> {
    Ok(GroupMount {
        group_id: row.get(0)?,
        name: row.get(1)?,
        host_path: row.get(2)?,
        read_write: row.get(3)?,
        created_at: row.get(4)?,
    })
}

/// A mount name becomes one path component inside the sandbox (`/workspace/extra/<name>`): letters,
/// digits, `_`, `.` and `-`, starting with a letter or digit, at most 64 characters, and never `..`.
pub fn validate_mount_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() > 64 || name.contains("..") {
        return Err(StoreError::Invalid(format!(
            "mount name {name:?} must be 1-64 characters of letters, digits, '_', '.' or '-', \
             starting with a letter or digit, without \"..\""
        )));
    }
    Ok(())
}

impl Store {
    /// Record a mount request. A group's mount names are unique: adding a name it already uses is an
    /// error that says how to replace it.
    pub async fn add_group_mount(&self, m: NewGroupMount) -> Result<GroupMount, StoreError> {
        validate_mount_name(&m.name)?;
        if m.host_path.trim().is_empty() {
            return Err(StoreError::Invalid("the mount's host path is empty".into()));
        }
        self.write("add group mount", move |tx| {
            let mount = GroupMount {
                group_id: m.group_id.clone(),
                name: m.name.clone(),
                host_path: m.host_path.clone(),
                read_write: m.read_write,
                created_at: now_ms(),
            };
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO group_mounts ({MOUNT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (group_id, name) DO NOTHING"
                ),
                params![
                    mount.group_id,
                    mount.name,
                    mount.host_path,
                    mount.read_write,
                    mount.created_at
                ],
            );
            match inserted {
                Ok(0) => Err(StoreError::Invalid(format!(
                    "the group already has a mount named {:?}; remove it first or pick another name",
                    mount.name
                ))),
                Ok(_) => Ok(mount.clone()),
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    Err(StoreError::NotFound {
                        what: "group",
                        id: mount.group_id.clone(),
                    })
                }
                Err(source) => Err(StoreError::Sqlite {
                    op: "add group mount",
                    source,
                }),
            }
        })
        .await
    }

    /// Forget a mount request; `false` when the group has no mount with that name.
    pub async fn remove_group_mount(
        &self,
        group_id: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<bool, StoreError> {
        let (group_id, name) = (group_id.into(), name.into());
        self.write("remove group mount", move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM group_mounts WHERE group_id = ?1 AND name = ?2",
                    params![group_id, name],
                )
                .ctx("remove group mount")?;
            Ok(n > 0)
        })
        .await
    }

    /// The group's mount requests, by name.
    pub async fn group_mounts(
        &self,
        group_id: impl Into<String>,
    ) -> Result<Vec<GroupMount>, StoreError> {
        let group_id = group_id.into();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {MOUNT_COLS} FROM group_mounts WHERE group_id = ?1 ORDER BY name"
                ))
                .ctx("list group mounts")?;
            let rows = stmt
                .query_map([&group_id], mount_at)
                .ctx("list group mounts")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("list group mounts")
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewGroup;

    async fn store_with_group() -> (Store, String) {
        let store = Store::open_in_memory().unwrap();
        let g = store
            .ensure_group(NewGroup {
                name: "Work".into(),
                folder: "work".into(),
                ..NewGroup::default()
            })
            .await
            .unwrap();
        (store, g.id)
    }

    fn new(group_id: &str, name: &str, rw: bool) -> NewGroupMount {
        NewGroupMount {
            group_id: group_id.into(),
            name: name.into(),
            host_path: "~/projects/site".into(),
            read_write: rw,
        }
    }

    #[tokio::test]
    async fn mounts_are_added_listed_by_name_and_removed() {
        let (store, gid) = store_with_group().await;
        store
            .add_group_mount(new(&gid, "site", true))
            .await
            .unwrap();
        store
            .add_group_mount(new(&gid, "docs", false))
            .await
            .unwrap();
        let mounts = store.group_mounts(&gid).await.unwrap();
        let names: Vec<_> = mounts.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["docs", "site"]);
        assert!(mounts[1].read_write && !mounts[0].read_write);
        assert_eq!(mounts[1].host_path, "~/projects/site");

        assert!(store.remove_group_mount(&gid, "site").await.unwrap());
        assert!(!store.remove_group_mount(&gid, "site").await.unwrap());
        assert_eq!(store.group_mounts(&gid).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_duplicate_name_an_unknown_group_and_bad_names_are_refused() {
        let (store, gid) = store_with_group().await;
        store
            .add_group_mount(new(&gid, "site", false))
            .await
            .unwrap();
        let err = store
            .add_group_mount(new(&gid, "site", true))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already has a mount named \"site\""), "{err}");
        // The first request is untouched.
        assert!(!store.group_mounts(&gid).await.unwrap()[0].read_write);

        let err = store
            .add_group_mount(new("grp-nope", "site", false))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { what: "group", .. }),
            "{err:?}"
        );

        for bad in [
            "",
            "..",
            "a..b",
            "a/b",
            "a:b",
            ".hidden",
            "-x",
            &"x".repeat(65),
        ] {
            let err = store
                .add_group_mount(new(&gid, bad, false))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{bad:?}: {err:?}");
        }
        for good in ["a", "my.project-2", "A_b", &"x".repeat(64)] {
            validate_mount_name(good).unwrap();
        }
    }
}
