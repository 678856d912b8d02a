//! The userspace implementation as the host's child processes: started in the grant's namespace from one long-lived spawner thread with `PR_SET_PDEATHSIG`, supervised, and stopped with the host.

#[allow(unused_imports)]
use super::*;

/// How long a new `wireguard-go` may take to open its UAPI socket.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopped `wireguard-go` may take to end after SIGTERM.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(2);

/// How many lines of a child's output are kept for an error message.
pub(super) const OUTPUT_TAIL: usize = 8;

// ---------------------------------------------------------------------------
// Userspace children

/// The userspace implementations this host started, by device name.
#[derive(Default)]
pub struct Devices {
    slots: Mutex<HashMap<String, Slot>>,
    /// The kernel's `wireguard` generic netlink family id by namespace
    /// (`None`: the host's), `None` where it has no WireGuard, as first
    /// probed: `auto` keeps one backend for the host's lifetime, and kernel
    /// calls reuse the id instead of resolving it again.
    kernel: Mutex<HashMap<Option<PathBuf>, Option<u16>>>,
}

pub(super) enum Slot {
    /// A `create-device` is starting it.
    Starting,
    Running(Userspace),
}

/// One running `wireguard-go`.
pub(super) struct Userspace {
    pub(super) child: Child,
    /// The namespace it was started in (`None`: the host's).
    pub(super) netns: Option<PathBuf>,
    /// The last lines it printed.
    pub(super) output: Arc<Mutex<VecDeque<String>>>,
}

impl Devices {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `name` for a start; false if it is taken.
    pub(super) fn reserve(&self, name: &str) -> bool {
        let mut slots = self.lock();
        if slots.contains_key(name) {
            return false;
        }
        slots.insert(name.to_string(), Slot::Starting);
        true
    }

    pub(super) fn kernel_probes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Option<PathBuf>, Option<u16>>> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the probe of `netns` found (the family id, or none), if it has run.
    pub(super) fn kernel_known(&self, netns: Option<&Path>) -> Option<Option<u16>> {
        self.kernel_probes()
            .get(&netns.map(Path::to_path_buf))
            .copied()
    }

    pub(super) fn remember_kernel(&self, netns: Option<&Path>, family: Option<u16>) {
        self.kernel_probes()
            .insert(netns.map(Path::to_path_buf), family);
    }

    /// Takes the running child of `name` if it runs in `netns`.
    pub(super) fn take(&self, name: &str, netns: Option<&Path>) -> Option<Userspace> {
        let mut slots = self.lock();
        match slots.get(name) {
            Some(Slot::Running(u)) if u.netns.as_deref() == netns => match slots.remove(name) {
                Some(Slot::Running(u)) => Some(u),
                _ => None,
            },
            _ => None,
        }
    }

    /// Forgets children that have ended by themselves (their link was
    /// deleted from outside, or they crashed).
    pub(super) fn reap(&self) {
        self.lock().retain(|name, slot| match slot {
            Slot::Running(u) => match u.child.try_wait() {
                Ok(None) => true,
                _ => {
                    tracing::warn!(device = %name, "wireguard-go ended by itself");
                    let _ = std::fs::remove_file(socket_path(name));
                    false
                }
            },
            Slot::Starting => true,
        });
    }

    /// Stops every child and removes its socket: on shutdown.
    pub fn stop_all(&self) {
        let running: Vec<(String, Userspace)> = self
            .lock()
            .drain()
            .filter_map(|(n, s)| match s {
                Slot::Running(u) => Some((n, u)),
                Slot::Starting => None,
            })
            .collect();
        for (_, u) in &running {
            terminate(&u.child);
        }
        for (name, mut u) in running {
            stop(&name, &mut u.child);
            tracing::info!(device = %name, "stopped wireguard-go");
        }
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub(super) fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: a signal to our own child, which has not been reaped yet
        // (so the pid cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Stops a child (SIGTERM, then SIGKILL after [`STOP_GRACE`]), reaps it and
/// removes its socket. Blocks for up to [`STOP_GRACE`].
pub(super) fn stop(name: &str, child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        terminate(child);
        let started = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && started.elapsed() < STOP_GRACE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(socket_path(name));
}

/// What the spawning thread is asked to start.
pub(super) struct SpawnRequest {
    pub(super) program: PathBuf,
    pub(super) name: String,
    pub(super) netns: Option<std::fs::File>,
    pub(super) reply: tokio::sync::oneshot::Sender<io::Result<(Child, io::PipeReader)>>,
}

/// The one thread that starts children. `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked a child ends, so children are forked from a thread
/// that lives as long as the process, never from a tokio worker.
pub(super) static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

pub(super) fn send_spawn(request: SpawnRequest) -> io::Result<()> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    if spawner.is_none() {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("wasmgate-wireguard".into())
            .spawn(move || {
                for r in rx {
                    let result = spawn_child(&r.program, &r.name, r.netns.as_ref());
                    let _ = r.reply.send(result);
                }
            })?;
        *spawner = Some(tx);
    }
    match spawner.as_ref() {
        Some(tx) => tx
            .send(request)
            .map_err(|_| io::Error::other("the spawning thread has ended")),
        None => Err(io::Error::other("no spawning thread")),
    }
}

/// `program -f name`, with an empty environment, its output on a pipe,
/// inside `netns`, ending with its parent.
pub(super) fn spawn_child(
    program: &Path,
    name: &str,
    netns: Option<&std::fs::File>,
) -> io::Result<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = Command::new(program);
    cmd.arg("-f")
        .arg(name)
        .env_clear()
        .env("LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let ns_fd = netns.map(|f| f.as_raw_fd());
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe system calls and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the line above: nothing would stop us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = ns_fd {
                crate::util::netns::enter(fd)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The command holds the pipe's write ends; dropping it lets the reader
    // see the end of the output when the child ends.
    drop(cmd);
    Ok((child, reader))
}

/// `binary` as configured: an absolute path, or a name in the host's `PATH`.
pub(super) fn resolve_binary(binary: &str) -> Result<PathBuf, Error> {
    if binary.starts_with('/') {
        return Ok(PathBuf::from(binary));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Error::Os(format!(
                "the userspace implementation `{binary}` is not in PATH (install wireguard-go, or set `userspace_binary`)"
            ))
        })
}

/// Copies a child's output into the host log, keeping its last lines.
pub(super) fn follow_output(
    name: String,
    reader: io::PipeReader,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let spawned = std::thread::Builder::new()
        .name("wasmgate-wg-log".into())
        .spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let line = line.trim();
                // wireguard-go's banner about the kernel module is box art.
                if line.is_empty() || line.starts_with(['│', '┌', '└']) {
                    continue;
                }
                tracing::debug!(device = %name, "wireguard-go: {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == OUTPUT_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(300).collect());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot follow wireguard-go's output");
    }
}

/// A start in progress: on drop (failure, or the request's deadline) the
/// child is stopped and the name released.
pub(super) struct Starting<'a> {
    pub(super) devices: &'a Devices,
    pub(super) name: String,
    pub(super) running: Option<Userspace>,
}

impl Starting<'_> {
    pub(super) fn commit(mut self) {
        if let Some(u) = self.running.take() {
            self.devices
                .lock()
                .insert(self.name.clone(), Slot::Running(u));
        }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut slots = self.devices.lock();
        if let Some(mut u) = self.running.take() {
            let _ = u.child.kill();
            let _ = u.child.wait();
            let _ = std::fs::remove_file(socket_path(&self.name));
        }
        if matches!(slots.get(&self.name), Some(Slot::Starting)) {
            slots.remove(&self.name);
        }
    }
}
