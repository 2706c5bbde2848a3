//! Where this process stands in the cluster (`ClusterConfig`: the
//! `--processes`, `--process`, `--hosts`, `--workers` and
//! `--startup-timeout` flags), read and checked.

use std::path::Path;
use std::time::Duration;

use streamstate_api::{Error, ErrorKind, Result};

/// Where this process stands in the cluster: `--processes N --process I
/// --hosts FILE [--workers W]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Number of processes, `N`.
    pub processes: usize,
    /// This process's index, `0..N`.
    pub process: usize,
    /// `host:port` of every process, in process order (empty for one
    /// process).
    pub hosts: Vec<String>,
    /// Worker threads per process, `W`.
    pub workers: usize,
    /// How long this process waits for every other to connect before it
    /// gives up (timely itself would wait forever for a peer that never
    /// comes) [default: [`DEFAULT_STARTUP_TIMEOUT`]].
    pub startup_timeout: Duration,
}

/// Five minutes, as Flink's `slot.request.timeout`: long enough for pods
/// that start one after another.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

impl ClusterConfig {
    /// One process of `workers` workers (no sockets).
    ///
    /// ```
    /// let config = streamstate_runtime::execution::ClusterConfig::single_process(2);
    /// assert_eq!(config.parallelism(), 2);
    /// ```
    pub fn single_process(workers: usize) -> Self {
        Self {
            processes: 1,
            process: 0,
            hosts: Vec::new(),
            workers,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// Process `process` of `processes`, their addresses read from
    /// `hostfile` (one `host:port` per line, in process order; blank lines
    /// and `#` comments skipped).
    ///
    /// ```
    /// # use streamstate_runtime::execution::ClusterConfig;
    /// let dir = tempfile::tempdir().unwrap();
    /// let hosts = dir.path().join("hosts");
    /// std::fs::write(&hosts, "127.0.0.1:7001\n127.0.0.1:7002\n").unwrap();
    /// let config = ClusterConfig::from_hostfile(&hosts, 2, 1, 1).unwrap();
    /// assert_eq!(config.hosts[1], "127.0.0.1:7002");
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the file when it cannot be read, has
    /// fewer addresses than processes, or an address is not `host:port`;
    /// and as [`Self::validate`].
    pub fn from_hostfile(hostfile: &Path, processes: usize, process: usize, workers: usize) -> Result<Self> {
        let shown = hostfile.display().to_string();
        let text = std::fs::read_to_string(hostfile).map_err(|e| {
            Error::new(ErrorKind::Config, "cannot read the hostfile")
                .with_context("file", shown.clone())
                .with_source(e)
        })?;
        let hosts: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        for host in &hosts {
            let port_ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                return Err(
                    Error::config(format!("hostfile line {host:?} is not host:port")).with_context("file", shown)
                );
            }
        }
        if hosts.len() < processes {
            return Err(Error::config(format!(
                "the hostfile has {} addresses for {processes} processes",
                hosts.len()
            ))
            .with_context("file", shown));
        }
        let config = Self {
            processes,
            process,
            hosts: hosts.into_iter().take(processes).collect(),
            workers,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        };
        config.validate()?;
        Ok(config)
    }

    /// Subtasks of the job: processes times workers.
    pub fn parallelism(&self) -> u32 {
        (self.processes * self.workers) as u32
    }

    /// Checks the numbers fit together.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.processes == 0 || self.workers == 0 {
            return Err(Error::config("processes and workers must be at least 1"));
        }
        if self.process >= self.processes {
            return Err(Error::config(format!(
                "process index {} is not below the number of processes {}",
                self.process, self.processes
            )));
        }
        if self.processes > 1 && self.hosts.len() != self.processes {
            return Err(Error::config(format!(
                "{} processes need {} addresses, got {}",
                self.processes,
                self.processes,
                self.hosts.len()
            )));
        }
        Ok(())
    }

    /// timely's communication within one process (`mesh` connects
    /// several processes itself).
    pub(super) fn local_communication(&self) -> timely::CommunicationConfig {
        match self.workers {
            1 => timely::CommunicationConfig::Thread,
            workers => timely::CommunicationConfig::Process(workers),
        }
    }
}
