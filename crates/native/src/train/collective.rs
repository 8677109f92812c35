//! The data-parallel group of `qzhou train` on Burn's collective engine (burn-collective):
//! one peer per device (`--devices`), one process per node (`--nodes N --node-rank R
//! --coordinator HOST:PORT`, or torchrun's `NNODES`/`NODE_RANK`/`MASTER_ADDR`/`MASTER_PORT`).
//! Node 0 runs burn-collective's coordinator (it pairs the nodes up; tensors then travel
//! node to node on each node's own port). Peer ranks: `node_rank · devices + device`.
//!
//! burn-collective has no timeouts: a peer that stops answering would leave the others
//! waiting for ever. A watchdog ends the process with an error when a peer has waited longer
//! than `--peer-timeout` inside one collective call; a node that dies outright makes the
//! others' all-reduce fail within a second (its connections reset, or, in the closing sync of
//! an all-reduce, which holds no connection to it, its port refuses the vendored crate's
//! liveness probe: `vendor/README.md`), which ends them too.

use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use burn_communication::Address;
use qzhou_core::training::PeerGroup;
use qzhou_core::QzhouError;

/// Where this process sits in the run: its node, its devices, how to reach the others.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Peers (devices) in this process.
    pub local: usize,
    /// Nodes (processes) in the run.
    pub nodes: usize,
    /// This node's index, `0..nodes`.
    pub node_rank: usize,
    /// `HOST:PORT` of the coordinator (node 0 listens on its port); several nodes only.
    pub coordinator: Option<String>,
    /// `HOST:PORT` the other nodes reach this node's tensor service at.
    pub node_address: Option<String>,
    /// Longest wait inside one collective call before the process gives up.
    pub timeout: Duration,
}

impl GroupSpec {
    /// Peers in the whole run.
    pub fn size(&self) -> usize {
        self.local * self.nodes
    }

    /// The run-wide rank of this node's device peer `local`.
    pub fn rank(&self, local: usize) -> usize {
        self.node_rank * self.local + local
    }

    /// Check the node settings and work out the addresses.
    pub fn validate(mut self) -> Result<Self> {
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if self.node_rank >= self.nodes {
            bail!(
                "--node-rank {} is not below --nodes {}",
                self.node_rank,
                self.nodes
            );
        }
        if self.nodes == 1 {
            return Ok(self);
        }
        let Some(coordinator) = &self.coordinator else {
            bail!("--nodes {} needs --coordinator HOST:PORT (or MASTER_ADDR and MASTER_PORT): node 0 runs the coordinator there", self.nodes);
        };
        let (host, port) = split_host_port(coordinator, "--coordinator")?;
        if self.node_address.is_none() {
            let own = usize::from(port) + 1 + self.node_rank;
            let own = u16::try_from(own)
                .context("--coordinator port too high to derive node ports; give --node-address")?;
            self.node_address = Some(format!("{host}:{own}"));
        }
        split_host_port(
            self.node_address.as_deref().unwrap_or_default(),
            "--node-address",
        )?;
        Ok(self)
    }

    /// burn-collective's configuration, the same for every peer of this node.
    fn config(&self) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(self.local);
        if self.nodes == 1 {
            return Ok(config);
        }
        let coordinator = self.coordinator.as_deref().unwrap_or_default();
        let node = self.node_address.as_deref().unwrap_or_default();
        let (_, port) = split_host_port(node, "--node-address")?;
        let address = |a: &str| Address::from_str(&format!("ws://{a}")).map_err(anyhow::Error::msg);
        Ok(config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(address(coordinator)?)
            .with_node_address(address(node)?)
            .with_data_service_port(port))
    }
}

fn split_host_port<'a>(s: &'a str, what: &str) -> Result<(&'a str, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{what} `{s}` is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("{what} `{s}`: `{port}` is not a port number"))?;
    if host.is_empty() {
        bail!("{what} `{s}` has no host");
    }
    Ok((host, port))
}

/// Start the coordinator on node 0 (a thread with its own async runtime). The port is
/// checked first so that a taken port is an error here, not a silent hang of every node.
pub fn start_coordinator(spec: &GroupSpec) -> Result<()> {
    if spec.nodes == 1 || spec.node_rank != 0 {
        return Ok(());
    }
    let (_, port) = split_host_port(
        spec.coordinator.as_deref().unwrap_or_default(),
        "--coordinator",
    )?;
    std::net::TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("cannot listen on the coordinator port {port}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the coordinator's runtime")?;
    std::thread::Builder::new()
        .name("qzhou-coordinator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .context("cannot start the coordinator thread")?;
    Ok(())
}

/// burn-communication logs every tensor transfer at INFO on stdout; keep warnings on stderr.
pub fn quiet_transport_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
}

/// Ends the process when a peer has waited too long inside a collective call.
pub struct Watchdog {
    waiting: Mutex<Vec<Option<(Instant, &'static str)>>>,
    timeout: Duration,
}

impl Watchdog {
    /// A watchdog for `local` peers, checking once a second.
    pub fn start(local: usize, timeout: Duration) -> Arc<Self> {
        let dog = Arc::new(Self {
            waiting: Mutex::new(vec![None; local]),
            timeout,
        });
        let watched = Arc::downgrade(&dog);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(dog) = watched.upgrade() else { return };
            let late = dog.waiting.lock().ok().and_then(|w| {
                w.iter().enumerate().find_map(|(i, s)| {
                    s.filter(|(t, _)| t.elapsed() > dog.timeout)
                        .map(|(_, what)| (i, what))
                })
            });
            if let Some((peer, what)) = late {
                eprintln!(
                    "error: device peer {peer} of this node waited more than {} s for the other peers ({what}): a node or device stopped or stalled. Stop every node and restart them all with --resume (or raise --peer-timeout)",
                    dog.timeout.as_secs()
                );
                std::process::exit(1);
            }
        });
        dog
    }

    fn watch<T>(&self, local: usize, what: &'static str, f: impl FnOnce() -> T) -> T {
        if let Ok(mut w) = self.waiting.lock() {
            w[local] = Some((Instant::now(), what));
        }
        let out = f();
        if let Ok(mut w) = self.waiting.lock() {
            w[local] = None;
        }
        out
    }
}

/// One peer of the group, on backend `B` (the autodiff backend's inner one: gradients and
/// embeddings are inner tensors).
pub struct CollectivePeer<B: Backend> {
    rank: usize,
    size: usize,
    local: usize,
    watchdog: Arc<Watchdog>,
    _backend: PhantomData<B>,
}

impl<B: Backend> CollectivePeer<B> {
    /// Register device `local` of this node; returns once every peer of every node has.
    pub fn register(
        spec: &GroupSpec,
        local: usize,
        device: B::Device,
        watchdog: Arc<Watchdog>,
    ) -> Result<Self> {
        let rank = spec.rank(local);
        let config = spec.config()?;
        watchdog
            .watch(local, "joining the group", || {
                burn_collective::register::<B>(PeerId::from(rank), device, config)
            })
            .map_err(|e| anyhow::anyhow!("peer {rank} could not join the group: {e:?}"))?;
        Ok(Self {
            rank,
            size: spec.size(),
            local,
            watchdog,
            _backend: PhantomData,
        })
    }

    /// Leave the group (at the end of a run; errors are of no use then).
    pub fn finish(&self) {
        let _ = burn_collective::finish_collective::<B>(PeerId::from(self.rank));
    }
}

impl<B: Backend> PeerGroup<B> for CollectivePeer<B> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum<const D: usize>(
        &self,
        tensor: Tensor<B, D>,
    ) -> qzhou_core::Result<Tensor<B, D>> {
        let primitive = tensor.into_primitive().tensor();
        let summed = self.watchdog.watch(self.local, "an all-reduce", || {
            burn_collective::all_reduce::<B>(
                PeerId::from(self.rank),
                primitive,
                ReduceOperation::Sum,
            )
        });
        summed
            .map(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
            .map_err(|e| {
                QzhouError::Backend(format!(
                    "all-reduce failed on peer {} ({e:?}): another peer or node stopped; restart every node with --resume",
                    self.rank
                ))
            })
    }
}
