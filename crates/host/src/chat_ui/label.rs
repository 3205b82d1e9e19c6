//! Messages in the owner's chat that this client did not ask for are labelled with where they
//! came from: a scheduled task, another client, or the host itself.

/// The label of a message that answers `answers` (its `reply_to` and every id it answers), for
/// a client that sent `mine`; `None` when it answers one of this client's messages.
pub fn label(kind: &str, answers: &[&str], mine: &dyn Fn(&str) -> bool) -> Option<String> {
    if answers.iter().any(|a| mine(a)) {
        return None;
    }
    // Task runs' messages carry `task:<task id>:<scheduled time>` (see the store's fire_task).
    if let Some(task) = answers.iter().find_map(|a| a.strip_prefix("task:")) {
        let id = task.rsplit_once(':').map_or(task, |(id, _)| id);
        return Some(format!("[task {id}]"));
    }
    if !answers.is_empty() {
        return Some("[another client]".into());
    }
    Some(match kind {
        "error" => "[nanoclaw !]".into(),
        _ => "[nanoclaw]".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_labelled_by_source() {
        let mine = |id: &str| id == "term-1";
        assert_eq!(label("reply", &["term-1"], &mine), None);
        assert_eq!(
            label("reply", &["task:task-abc:1764000000000"], &mine).as_deref(),
            Some("[task task-abc]")
        );
        assert_eq!(
            label("reply", &["term-9"], &mine).as_deref(),
            Some("[another client]")
        );
        assert_eq!(label("message", &[], &mine).as_deref(), Some("[nanoclaw]"));
        assert_eq!(label("error", &[], &mine).as_deref(), Some("[nanoclaw !]"));
        // A batched turn that answers one of mine among others is mine.
        assert_eq!(label("reply", &["term-9", "term-1"], &mine), None);
    }
}
