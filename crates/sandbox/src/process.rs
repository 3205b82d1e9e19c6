//! Control of a sandbox that is one host child process (bwrap, the `container` CLI).

use async_trait::async_trait;

/// The host process of one sandbox, and the runtime's cleanup for it.
pub(crate) struct ProcessControl {
    child: tokio::process::Child,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl ProcessControl {
    /// `cleanup` runs once, after the process ended or was killed, or on drop.
    pub(crate) fn new(
        child: tokio::process::Child,
        cleanup: Option<Box<dyn FnOnce() + Send>>,
    ) -> Self {
        Self { child, cleanup }
    }

    fn run_cleanup(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

#[async_trait]
impl crate::SandboxControl for ProcessControl {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().await.ok()?;
        self.run_cleanup();
        status.code()
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
        self.run_cleanup();
    }
}

impl Drop for ProcessControl {
    fn drop(&mut self) {
        // kill_on_drop stops the process; what the runtime holds outside it (a cgroup, a
        // container) must still go.
        let _ = self.child.start_kill();
        self.run_cleanup();
    }
}
