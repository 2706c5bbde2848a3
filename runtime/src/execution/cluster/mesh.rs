//! Connecting this process to its peers: one TCP connection per pair of
//! processes, handed to timely, which runs its own protocol (exchange,
//! progress) over them through `initialize_networking_from_sockets`, the
//! entry it offers for sockets connected by the caller.
//!
//! timely can connect the processes itself, but it retries a refused
//! connection once a second, prints every retry and wait to stdout (where
//! the job's own output goes) and waits forever for a peer that never
//! comes. Here retries back off from a few milliseconds, nothing is
//! printed, the wait ends at the startup deadline with an error naming the
//! processes that did not come, and a greeting tells a peer started with
//! another number of processes (an error) from a stranger on the port
//! (ignored). As in timely, process `i` dials every process before it in
//! the hostfile and accepts every process after it.
//!
//! The send threads also count the bytes they put on the wire, for the
//! `network_bytes_sent` metric.

use std::any::Any;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamstate_api::{Error, ErrorKind, Result};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::logging::{CommunicationEvent, CommunicationEventBuilder};
use timely::communication::{AllocatorBuilder, Hooks};
use timely::logging_core::Logger;

use super::config::ClusterConfig;
use crate::metrics::JobMetrics;

/// What a process says first on a connection: this tag, then the number
/// of processes and its own index (little-endian `u64`s).
const GREETING_TAG: &[u8; 8] = b"sstate01";
const GREETING_LEN: usize = 24;
/// How long a new connection has to greet: a peer greets at once, so a
/// silent stranger holds the accepting loop up no longer than this.
const GREETING_WAIT: Duration = Duration::from_secs(2);

/// The longest pause between two attempts to reach a peer that is not
/// listening yet.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// timely's allocators for this process's workers, and what must live as
/// long as they do (the network threads' guard).
pub(crate) type Allocators = (Vec<AllocatorBuilder>, Box<dyn Any + Send>);

/// Connects this process to every peer (none for one process) and builds
/// timely's allocators over the connections. Bytes this process sends to
/// peers are added to `metrics.network_bytes_sent` as they go.
pub(crate) fn connect(cluster: &ClusterConfig, metrics: &Arc<JobMetrics>) -> Result<Allocators> {
    if cluster.processes == 1 {
        return cluster
            .local_communication()
            .try_build()
            .map_err(|e| Error::config(format!("cannot start the workers: {e}")));
    }
    let deadline = Instant::now() + cluster.startup_timeout;
    let mut sockets: Vec<Option<TcpStream>> = Vec::with_capacity(cluster.processes);
    for peer in 0..cluster.process {
        sockets.push(Some(dial(cluster, peer, deadline)?));
    }
    sockets.push(None);
    sockets.extend(accept(cluster, deadline)?.into_iter().map(Some));
    let hooks = Hooks {
        log_fn: counting_sent_bytes(Arc::clone(metrics)),
        ..Hooks::default()
    };
    let process_allocators = ProcessBuilder::new_typed_vector(cluster.workers, hooks.refill.clone(), None);
    let (builders, guard) =
        initialize_networking_from_sockets(process_allocators, sockets, cluster.process, cluster.workers, hooks)
            .map_err(|e| Error::config("cannot start the network threads").with_source(e))?;
    Ok((
        builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        Box::new(guard),
    ))
}

/// A logger for each send thread that adds the length of every message it
/// sends to the metrics (timely logs one event per message, a batch of
/// records, so the count costs little).
fn counting_sent_bytes(metrics: Arc<JobMetrics>) -> LogFn {
    Arc::new(move |setup| {
        if !setup.sender {
            return None;
        }
        let metrics = Arc::clone(&metrics);
        Some(Logger::<CommunicationEventBuilder>::new(
            Instant::now(),
            Duration::ZERO,
            move |_, events: &mut Option<Vec<(Duration, CommunicationEvent)>>| {
                let sent: usize = events
                    .iter()
                    .flatten()
                    .filter_map(|(_, event)| match event {
                        CommunicationEvent::Message(m) if m.is_send => Some(m.header.length),
                        _ => None,
                    })
                    .sum();
                metrics.network_bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
            },
        ))
    })
}

/// timely's hook that makes a logger for each network thread.
type LogFn = Arc<
    dyn Fn(timely::communication::logging::CommunicationSetup) -> Option<Logger<CommunicationEventBuilder>>
        + Send
        + Sync,
>;

fn greeting(cluster: &ClusterConfig) -> [u8; GREETING_LEN] {
    let mut bytes = [0u8; GREETING_LEN];
    bytes[..8].copy_from_slice(GREETING_TAG);
    bytes[8..16].copy_from_slice(&(cluster.processes as u64).to_le_bytes());
    bytes[16..].copy_from_slice(&(cluster.process as u64).to_le_bytes());
    bytes
}

/// The `(processes, index)` a peer greets with on `stream`; `None` when
/// it is not a streamstate process (other bytes, or none within
/// [`GREETING_WAIT`]).
fn read_greeting(stream: &mut TcpStream, deadline: Instant) -> Option<(usize, usize)> {
    let mut bytes = [0u8; GREETING_LEN];
    stream
        .set_read_timeout(Some(remaining(deadline).min(GREETING_WAIT)))
        .and_then(|()| stream.read_exact(&mut bytes))
        .and_then(|()| stream.set_read_timeout(None))
        .ok()?;
    if &bytes[..8] != GREETING_TAG {
        return None;
    }
    let field = |range: std::ops::Range<usize>| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[range]);
        u64::from_le_bytes(word) as usize
    };
    Some((field(8..16), field(16..24)))
}

/// The peer's index, once its greeting shows it runs with as many
/// processes as this one.
fn same_shape(cluster: &ClusterConfig, (processes, index): (usize, usize)) -> Result<usize> {
    if processes != cluster.processes {
        return Err(Error::config(format!(
            "process {index} runs with {processes} processes, this one (process {}) with {}: start all with the same --processes and hostfile",
            cluster.process, cluster.processes
        )));
    }
    Ok(index)
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn not_connected(cluster: &ClusterConfig, missing: &[usize]) -> Error {
    let missing: Vec<String> = missing.iter().map(|&p| format!("{p} ({})", cluster.hosts[p])).collect();
    Error::new(
        ErrorKind::Storage,
        format!(
            "not every process of the cluster connected within {:?} (missing: process {}): start all {} with the same hostfile",
            cluster.startup_timeout,
            missing.join(", process "),
            cluster.processes,
        ),
    )
}

/// Connects to `peer` (a process before this one), retrying until it
/// listens or the deadline passes.
fn dial(cluster: &ClusterConfig, peer: usize, deadline: Instant) -> Result<TcpStream> {
    let address = &cluster.hosts[peer];
    let mut pause = Duration::from_millis(5);
    loop {
        // Resolved on every attempt: a peer's name may appear in DNS only
        // once it starts (a StatefulSet's pods).
        let attempt = address
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .and_then(|addr| TcpStream::connect_timeout(&addr, remaining(deadline)).ok());
        if let Some(mut stream) = attempt {
            let greeted = stream
                .set_nodelay(true)
                .and_then(|()| stream.write_all(&greeting(cluster)))
                .is_ok();
            // No answer: the peer went away between accept and greeting
            // (or a stranger holds the port); try again until the deadline.
            if let Some(hello) = greeted.then(|| read_greeting(&mut stream, deadline)).flatten() {
                let index = same_shape(cluster, hello)?;
                if index != peer {
                    return Err(Error::config(format!(
                        "{address} answers as process {index}, the hostfile says process {peer}: the processes read different hostfiles"
                    )));
                }
                return Ok(stream);
            }
        }
        if Instant::now() + pause >= deadline {
            return Err(not_connected(cluster, &[peer]));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// Accepts every process after this one; returns their connections in
/// process order.
fn accept(cluster: &ClusterConfig, deadline: Instant) -> Result<Vec<TcpStream>> {
    let later = cluster.processes - cluster.process - 1;
    let mut accepted: Vec<Option<TcpStream>> = (0..later).map(|_| None).collect();
    if later == 0 {
        return Ok(Vec::new());
    }
    let address = &cluster.hosts[cluster.process];
    let listener = TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            Error::config(format!("cannot listen on {address} (process {})", cluster.process)).with_source(e)
        })?;
    while accepted.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let ready = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_nodelay(true))
                    .is_ok();
                if !ready {
                    continue;
                }
                // A stranger is dropped. A peer of another shape gets this
                // process's greeting, so that it can say what is wrong too,
                // and fails the start.
                let Some(hello) = read_greeting(&mut stream, deadline) else {
                    tracing::warn!(%from, "ignored a connection that is not a streamstate process");
                    continue;
                };
                if stream.write_all(&greeting(cluster)).is_err() {
                    continue;
                }
                let index = same_shape(cluster, hello)?;
                if index <= cluster.process || index >= cluster.processes {
                    return Err(Error::config(format!(
                        "{from} connected as process {index}; only processes after {} connect to it: the processes read different hostfiles",
                        cluster.process
                    )));
                }
                accepted[index - cluster.process - 1] = Some(stream);
            }
            Err(e) if e.kind() == IoKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> = (0..later)
                        .filter(|i| accepted[*i].is_none())
                        .map(|i| i + cluster.process + 1)
                        .collect();
                    return Err(not_connected(cluster, &missing));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(Error::config(format!("cannot accept peers on {address}")).with_source(e));
            }
        }
    }
    Ok(accepted.into_iter().flatten().collect())
}
