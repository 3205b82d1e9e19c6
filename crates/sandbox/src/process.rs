//! Control of a sandbox that is one host child process (bwrap, the `container` CLI).

use async_trait::async_trait;

/// What a runtime releases once its sandbox has ended. It may block (removing a cgroup
/// waits for the killed tasks to go), so it never runs on an async runtime worker.
pub(crate) type Cleanup = Box<dyn FnOnce() + Send>;

/// The host process of one sandbox, and the runtime's cleanup for it.
pub(crate) struct ProcessControl {
    child: tokio::process::Child,
    cleanup: Option<Cleanup>,
}

impl ProcessControl {
    /// `cleanup` runs once, after the process ended or was killed, or on drop.
    pub(crate) fn new(child: tokio::process::Child, cleanup: Option<Cleanup>) -> Self {
        Self { child, cleanup }
    }

    async fn run_cleanup(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            run_blocking(cleanup).await;
        }
    }
}

/// Runs `cleanup` on tokio's blocking pool and waits for it.
pub(crate) async fn run_blocking(cleanup: Cleanup) {
    let mut guard = RunOnce(Some(cleanup));
    if let Err(error) = tokio::task::spawn_blocking(move || guard.run()).await {
        tracing::warn!(%error, "sandbox cleanup did not complete");
    }
}

/// Runs the cleanup when asked, or when dropped unrun: a blocking task the runtime drops
/// at shutdown before it started still releases what the sandbox held.
struct RunOnce(Option<Cleanup>);

impl RunOnce {
    fn run(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup();
        }
    }
}

impl Drop for RunOnce {
    fn drop(&mut self) {
        self.run();
    }
}

#[async_trait]
impl crate::SandboxControl for ProcessControl {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().await.ok()?;
        self.run_cleanup().await;
        status.code()
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
        self.run_cleanup().await;
    }
}

impl Drop for ProcessControl {
    fn drop(&mut self) {
        // kill_on_drop stops the process; what the runtime holds outside it (a cgroup, a
        // container) must still go. Inside an async runtime it goes on the blocking pool
        // (this drop may run on a worker); outside one, here.
        let _ = self.child.start_kill();
        if let Some(cleanup) = self.cleanup.take() {
            let mut guard = RunOnce(Some(cleanup));
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || guard.run())),
                Err(_) => guard.run(),
            }
        }
    }
}
