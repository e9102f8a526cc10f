//! Child processes that die with the process that started them, however it ends.
//!
//! `local-cluster`, the chaos harness and the bench all start replicas as children. A
//! destructor that kills them does not run when their parent is killed (kill -9, an
//! unhandled signal, a closed terminal), and a replica left behind keeps its ports and
//! its CPU, which the next run then trips over or measures. Linux can send a child a
//! signal when its parent dies (`PR_SET_PDEATHSIG`), with one trap: "parent" there is
//! the *thread* that forked it, so a child started from a thread that ends early (a
//! tokio blocking thread, a worker retired by `block_in_place`) is signalled while the
//! process goes on. [`spawn_tied`] forks on one thread that lives as long as the process;
//! [`die_with_parent`] is for a caller that knows its spawning thread outlives the child.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Makes the child `command` starts receive `signal` when the thread that spawns it ends
/// (see the module comment), and refuse to start if this process has already ended by
/// then.
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure calls only prctl(2) and getppid(2),
    // which are async-signal-safe, and allocates nothing on its success path.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before that took effect: no signal will come, so do not
            // start at all.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` with [`die_with_parent`] from a thread that lives as long as this
/// process, so the child gets `signal` when, and only when, this process ends.
pub fn spawn_tied(mut command: Command, signal: libc::c_int) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            // Never returns: the sender lives in a static.
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the child spawner thread");
        Mutex::new(requests)
    });
    die_with_parent(&mut command, signal);
    let gone = || io::Error::other("the child spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, reply))
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child started from a thread that then ends keeps running: the spawn happened on
    /// the long-lived thread, not on the caller's.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let mut child = std::thread::spawn(|| {
            let mut sleep = Command::new("sleep");
            sleep.arg("30");
            spawn_tied(sleep, libc::SIGKILL).expect("spawning sleep")
        })
        .join()
        .unwrap();
        // The asking thread has ended; a signal tied to it would already be on its way.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child died with the thread that asked for it"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
