//! Keeping the protocol pipes out of the tools' reach.
//!
//! Tools run model-written code as the agent's own uid. Without care, such code could open
//! `/proc/<agent>/fd/1` and write forged protocol lines to the host, or read the host's
//! messages from `/proc/<agent>/fd/0`. Two things close that:
//!
//! - [`protect`]: the agent makes itself non-dumpable. The kernel then denies same-uid
//!   processes without `CAP_SYS_PTRACE` access to its `/proc/<pid>/fd`, `mem` and ptrace.
//!   The flag survives `fork` but is reset by `execve`, so the tools the agent starts are
//!   ordinary processes again that hold none of its descriptors (all are close-on-exec).
//! - [`become_init`]: the process that is pid 1 of the sandbox holds the same stdio. The
//!   runtimes start the agent itself as pid 1 (bubblewrap `--as-pid-1`, Docker without
//!   `Init`) so no dumpable init (bwrap's reaper, docker-init) sits on the pipes; the agent
//!   then forks: the non-dumpable parent reaps orphans and forwards signals, the child
//!   is the agent.

use std::io;

/// Makes this process non-dumpable (see the module docs).
pub fn protect() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process can be read through `/proc/<pid>` by other processes of its uid.
pub fn is_dumpable() -> bool {
    // SAFETY: as above; PR_GET_DUMPABLE only returns a value.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// Signals pid 1 passes on to the agent.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// When this process is pid 1: forks, and returns in the child, which goes on as the agent.
/// The parent stays pid 1 for the sandbox's lifetime: it reaps every orphan, forwards
/// `FORWARDED` signals to the agent and exits with the agent's status. Call it first thing
/// in `main`, while the process has one thread, after [`protect`] (the child inherits it).
pub fn become_init() -> io::Result<()> {
    // SAFETY: plain libc calls on a zeroed sigset_t that lives on this stack frame; the
    // process is single-threaded, so fork() duplicates no locks held by other threads, and
    // the child only restores its signal mask before returning into ordinary Rust code.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        let agent = libc::fork();
        if agent < 0 {
            let error = io::Error::last_os_error();
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Err(error);
        }
        if agent == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Ok(());
        }
        loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(agent, sig);
                continue;
            }
            loop {
                let mut status: libc::c_int = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == agent {
                    let code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        1
                    };
                    libc::_exit(code);
                }
            }
        }
    }
}
