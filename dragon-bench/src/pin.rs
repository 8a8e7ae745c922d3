//! Pinning processes to cores, so the server and its load clients do not share one.

/// The cores this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins this thread (and so the threads it starts later, such as a runtime's) to `cpu`.
/// Call it before starting any other thread. Warns and returns false if it could not.
pub fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity only reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!("warning: could not pin to core {cpu}");
    }
    ok
}

/// Where the fan-out benchmark's processes run.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// The server's core (this process, and the memory probes it starts).
    pub server: Option<usize>,
    /// The load clients' core (the `--fleet` process).
    pub clients: Option<usize>,
    /// Cores this process could use before pinning.
    pub cores: usize,
}

impl Placement {
    /// Pins this process to the first allowed core and reserves the second for the clients,
    /// when there are two or more and `wanted`.
    pub fn apply(wanted: bool) -> Placement {
        let allowed = allowed_cpus();
        let cores = allowed.len();
        if !wanted || cores < 2 {
            return Placement {
                server: None,
                clients: None,
                cores,
            };
        }
        let server = pin(allowed[0]).then_some(allowed[0]);
        Placement {
            server,
            clients: server.map(|_| allowed[1]),
            cores,
        }
    }

    /// A process started by a pinned one: pinned already if it may use one core only.
    pub fn inherited() -> Placement {
        let allowed = allowed_cpus();
        Placement {
            server: (allowed.len() == 1).then(|| allowed[0]),
            clients: None,
            cores: allowed.len(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let pinning = match (self.server, self.clients) {
            (Some(s), Some(c)) => format!(
                "pinning applied: server (and Dragon's Redis nodes) on core {s}, load clients on core {c}; Redis itself is not pinned"
            ),
            _ if self.cores < 2 => {
                "pinning not applied (fewer than 2 cores): server and clients share the cores"
                    .to_owned()
            }
            _ => "pinning not applied (--no-pin or it failed): server and clients share the cores"
                .to_owned(),
        };
        format!(
            "machine: {} cores usable ({} online); {pinning}",
            self.cores,
            // SAFETY: sysconf only reads a configuration value.
            unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        )
    }
}
