//! Data parallelism across processes and machines: `--nodes N`, on Burn's `burn-collective`.
//!
//! `pdl launch --nodes 2 mnist-cnn` (like PyTorch's `torchrun --nproc-per-node 2`) starts two
//! processes of `pdl train mnist-cnn --nodes 2 --node-rank R --master ws://127.0.0.1:29500`; on
//! several machines each runs that command itself, with its own rank and rank 0's address. They
//! train the one model a single process would train with the same `--batch-size` B:
//!
//! - **Data.** Every rank shuffles the training set with the run's seed, so all hold the same
//!   order, and cuts it into slices of B/N. At step t rank r takes slice N·t + r, as
//!   `--devices N` deals slices to its devices ([`crate::parallel`]) and as PyTorch's
//!   `DistributedSampler` gives each rank its own part: no example twice in an epoch.
//! - **Gradients.** After its backward pass each rank holds the gradient of its slice's mean loss.
//!   The optimiser step ([`crate::parallel::MeanOverDevices`]) hands them to [`NodeGroup::average`],
//!   which lays every parameter's gradient end to end in one vector, has burn-collective return
//!   the **mean** of the ranks' vectors (`all_reduce` with `ReduceOperation::Mean`, a ring over the
//!   nodes), and puts the pieces back. Every rank then takes the same optimiser step from the same
//!   weights, so they stay equal without ever sending weights.
//! - **Who writes.** Rank 0 writes the run folder: checkpoints, logs, `metrics.json`, the
//!   dashboard. The others train in a private temporary folder that is removed at the end. On
//!   `--resume` every rank reads rank 0's checkpoint, so on several machines the run folder must be
//!   on a shared file system (as with `torchrun`).
//!
//! Rank 0 also starts burn-collective's *orchestrator* (a websocket server on the `--master` port
//! that pairs the ranks up), as a child process of its own (`pdl orchestrate`), which ends with it.
//!
//! **How each call is made, and why.** burn-collective 0.21's cross-node all-reduce returns the
//! first time and hangs the second: its `SyncService::sync` ends by clearing a *copy* of the list
//! of peers that have synced (`lock().to_vec()`), not the list, so the next sync never sees the
//! list equal to the set of nodes (`global/node/sync.rs`; the README has the measurements). So
//! every call here is a registration of its own: `register`, one `all_reduce`, then
//! `finish_collective` and `reset_collective`, with the node's data port moving through eight
//! values in turn (reusing a port at once lost results in the measurements; eight gave 300 right
//! of 300). That costs a registration per step (tens of milliseconds), which is why all the
//! gradients travel as one vector. Every vector also carries two *markers*, the rank and the call's
//! number, whose means are known in advance: a result that is not the mean of this call (a rank's
//! own tensor, or another call's) stops the run with an error instead of training on it.
//!
//! **Faults.** A call that does not return within `--node-timeout` seconds (a rank died, never
//! came, or hangs) ends the process with a one-line error naming the ranks that did not answer;
//! checkpoints already written stay, and `--resume` continues. At the start the ranks compare
//! their experiment, seed, batch size, epochs and config through one call, and any disagreement is
//! an error naming what differs.

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The orchestrator's port when `--master` gives none: `torchrun`'s default `MASTER_PORT`.
pub const DEFAULT_PORT: u16 = 29500;

/// How many data ports a node takes in turn, one per call (see the module doc).
const PORT_TURNS: usize = 8;

/// Where this process sits among the nodes of a run, from `pdl train`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// How many processes train together (`--nodes`).
    pub count: usize,
    /// This process's rank, `0..count` (`--node-rank`).
    pub rank: usize,
    /// Rank 0's host, where the orchestrator listens (`--master ws://HOST:PORT`).
    pub master_host: String,
    /// The orchestrator's port.
    pub master_port: u16,
    /// The address each rank is reached at, in rank order (`--node-hosts`).
    pub hosts: Vec<String>,
    /// How long a call waits for the other ranks (`--node-timeout`).
    pub timeout: Duration,
}

impl NodeSpec {
    /// The spec of rank `rank` of `count`, checked: `master` is `ws://HOST:PORT`, `HOST:PORT` or
    /// `HOST` (port [`DEFAULT_PORT`]); `hosts` is one address for every rank, or one per rank.
    pub fn new(
        count: usize,
        rank: usize,
        master: &str,
        hosts: &str,
        timeout_seconds: u64,
    ) -> Result<Self> {
        let hosts: Vec<String> = hosts.split(',').map(|h| h.trim().to_string()).collect();
        let hosts = match hosts.len() {
            1 => vec![hosts[0].clone(); count],
            n if n == count => hosts,
            n => bail!(
                "--node-hosts: {n} addresses for {count} ranks; give one for all, or one per rank"
            ),
        };
        if rank >= count {
            bail!(
                "--node-rank {rank}: the ranks of --nodes {count} are 0 to {}",
                count - 1
            );
        }
        if timeout_seconds == 0 {
            bail!("--node-timeout 0: give the seconds a node waits for the others (e.g. 60)");
        }
        let rest = master.strip_prefix("ws://").unwrap_or(master);
        let rest = rest.trim_end_matches('/');
        let (master_host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()),
            None => (rest, Some(DEFAULT_PORT)),
        };
        let last_port = port.map(|p| p as usize + count * PORT_TURNS);
        let (Some(master_port), Some(true)) = (port, last_port.map(|p| p <= u16::MAX as usize))
        else {
            bail!(
                "--master {master}: expected ws://HOST:PORT with a port below {} (each node also \
                 takes {PORT_TURNS} ports after it)",
                u16::MAX as usize - count * PORT_TURNS
            );
        };
        if let Some((low, high)) = ephemeral_ports() {
            let last = master_port as usize + count * PORT_TURNS;
            if (master_port as usize) <= high && last >= low {
                bail!(
                    "--master {master}: the ports {master_port}-{last} that the nodes take fall in \
                     this machine's ephemeral range ({low}-{high}), from which the system picks \
                     the ports of outgoing connections, so one of them may be taken mid-run: \
                     choose a port below {low} (e.g. {DEFAULT_PORT})"
                );
            }
        }
        if master_host.is_empty() {
            bail!("--master {master}: no host; expected ws://HOST:PORT, e.g. ws://127.0.0.1:29500");
        }
        Ok(Self {
            count,
            rank,
            master_host: master_host.to_string(),
            master_port,
            hosts,
            timeout: Duration::from_secs(timeout_seconds),
        })
    }

    /// The data port of this node's `call`-th call: the ports after the orchestrator's, a block of
    /// `count` per turn, so that nodes on one machine never share one.
    fn data_port(&self, call: u64) -> u16 {
        self.data_port_of(self.rank, call)
    }

    /// The data port of rank `rank`'s `call`-th call.
    fn data_port_of(&self, rank: usize, call: u64) -> u16 {
        let turn = (call % PORT_TURNS as u64) as usize;
        (self.master_port as usize + 1 + turn * self.count + rank) as u16
    }

    /// This node's address.
    fn host(&self) -> &str {
        &self.hosts[self.rank]
    }

    /// The ranks other than this one, as an error message names them.
    fn others(&self) -> String {
        let others: Vec<String> = (0..self.count)
            .filter(|&r| r != self.rank)
            .map(|r| r.to_string())
            .collect();
        match others.len() {
            1 => format!("rank {}", others[0]),
            _ => format!("one of ranks {}", others.join(", ")),
        }
    }
}

/// The range of ports the system gives outgoing connections (Linux), if it can be read.
fn ephemeral_ports() -> Option<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ends = text.split_whitespace().map(|v| v.parse::<usize>().ok());
    Some((ends.next()??, ends.next()??))
}

/// This process's membership of a multi-process run: the calls it makes to the other ranks.
#[derive(Debug)]
pub struct NodeGroup {
    spec: NodeSpec,
    /// What every rank must agree on (label, fingerprint), compared at the first call.
    fingerprint: Vec<(String, u64)>,
    /// Calls made so far: every rank makes the same calls in the same order.
    calls: Mutex<u64>,
    /// Rank 0's orchestrator process, ended when the group is dropped.
    orchestrator: Mutex<Option<Child>>,
    /// The all-reduce strategy between nodes (burn-collective's default when unset).
    strategy: Mutex<Option<AllReduceStrategy>>,
    /// The last call's finishing, running beside the next step (see [`NodeGroup::mean`]).
    finishing: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
}

impl NodeGroup {
    /// Joins the run described by `spec`; rank 0 starts the orchestrator first. `fingerprint`
    /// lists what the ranks must agree on, checked by [`NodeGroup::check_agreement`].
    ///
    /// Burn's log goes to `log_file` from here on, as the Learner would send it (burn-collective's
    /// websocket server otherwise sends it to stdout first), and stdout is filtered
    /// ([`filter_stdout`]).
    pub fn join(
        spec: NodeSpec,
        fingerprint: Vec<(String, u64)>,
        log_file: &std::path::Path,
    ) -> Result<Arc<Self>> {
        use burn::train::ApplicationLoggerInstaller;
        burn::train::FileApplicationLoggerInstaller::new(log_file)
            .install()
            .map_err(anyhow::Error::msg)?;
        filter_stdout()?;
        let orchestrator = match spec.rank {
            0 => Some(start_orchestrator(spec.master_port)?),
            _ => None,
        };
        quiet_collective_panics();
        Ok(Arc::new(Self {
            spec,
            fingerprint,
            calls: Mutex::new(0),
            orchestrator: Mutex::new(orchestrator),
            strategy: Mutex::new(None),
            finishing: Mutex::new(None),
        }))
    }

    /// How many processes train together.
    pub fn count(&self) -> usize {
        self.spec.count
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.spec.rank
    }

    /// Sets the all-reduce strategy of the next calls (every rank must set the same).
    pub fn set_strategy(&self, strategy: Option<AllReduceStrategy>) {
        *self.strategy.lock().expect("strategy") = strategy;
    }

    /// The mean over the ranks of each rank's `values`: one burn-collective call, checked with the
    /// markers, under the time limit (see the module doc). `what` names the call in errors.
    pub fn mean<B: Backend>(&self, values: Tensor<B, 1>, what: &str) -> Result<Tensor<B, 1>> {
        let mut calls = self.calls.lock().expect("call counter");
        let call = *calls;
        *calls += 1;
        let device = values.device();
        let len = values.dims()[0];
        let markers = Tensor::<B, 1>::from_floats([self.spec.rank as f32, call as f32], &device);
        let sent = Tensor::cat(vec![values, markers], 0);
        let port = self.spec.data_port(call);
        let config = self.config(port)?;
        let _watch = Watch::start(
            self.spec.timeout,
            format!(
                "rank {} of {}: {what} (call {call}) got no answer within {} s: {} stopped or \
                 hangs (or cannot reach {}:{port}); checkpoints already written are kept, \
                 continue with --resume",
                self.spec.rank,
                self.spec.count,
                self.spec.timeout.as_secs(),
                self.spec.others(),
                self.spec.host(),
            ),
        );
        let id = PeerId::from(0usize);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if call > 0 {
                self.settle_finish()?;
                self.wait_for_peer_servers(call - 1, false);
            }
            burn_collective::register::<B>(id, device.clone(), config)
                .map_err(|e| anyhow::anyhow!("register: {e:?}"))?;
            self.wait_for_peer_servers(call, true);
            let primitive = sent.into_primitive().tensor();
            let mean = burn_collective::all_reduce::<B>(id, primitive, ReduceOperation::Mean)
                .map_err(|e| anyhow::anyhow!("all_reduce: {e:?}"))?;
            // Finishing waits ~40 ms for the orchestrator's answer (burn-collective's websocket
            // server leaves Nagle's algorithm on): it runs beside the next step's compute, and the
            // next call waits for it (see `settle_finish`).
            let finishing = std::thread::spawn(move || {
                burn_collective::finish_collective::<B>(id)
                    .map_err(|e| anyhow::anyhow!("finish_collective: {e:?}"))?;
                burn_collective::reset_collective::<B>();
                Ok(())
            });
            *self.finishing.lock().expect("finishing") = Some(finishing);
            Ok::<_, anyhow::Error>(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(mean)))
        }));
        let mean = match outcome {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("burn-collective panicked")),
        }
        .map_err(|e| {
            let cause = last_panic().map(|p| format!("; {p}")).unwrap_or_default();
            anyhow::anyhow!(
                "rank {} of {}: {what} (call {call}) failed: {} stopped or cannot be reached \
                 (burn-collective: {e}{cause}); checkpoints already written are kept, continue \
                 with --resume",
                self.spec.rank,
                self.spec.count,
                self.spec.others()
            )
        })?;
        let got: Vec<f32> = mean
            .clone()
            .slice(len..len + 2)
            .into_data()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let expected = [(self.spec.count - 1) as f32 / 2.0, call as f32];
        if (got[0] - expected[0]).abs() > 1e-3 || (got[1] - expected[1]).abs() > 1e-3 {
            bail!(
                "rank {}: {what} (call {call}): the all-reduce returned something other than the \
                 mean of this call (markers {got:?}, expected {expected:?}), a known fault of \
                 burn-collective 0.21; checkpoints already written are kept, continue with --resume",
                self.spec.rank
            );
        }
        Ok(mean.slice(0..len))
    }

    /// Waits until this node has finished its previous call (started in the background by
    /// [`NodeGroup::mean`]), and says how that went.
    fn settle_finish(&self) -> Result<()> {
        let finishing = self.finishing.lock().expect("finishing").take();
        match finishing.map(|f| f.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => bail!("burn-collective panicked while finishing a call"),
        }
    }

    /// Waits until every other rank's data server of call `call` is `listening` (accepts
    /// connections) or, with `listening` false, has closed. The time limit ([`Watch`]) covers a
    /// rank that never gets there. Both waits stand in for what burn-collective 0.21 leaves out:
    ///
    /// - **Listening, after `register`.** `register` returns once the orchestrator has heard from
    ///   every rank, but each rank's data server (started by `register`) is a task that may not be
    ///   listening yet; the all-reduce's first connection to it then fails ("Failed to connect to
    ///   data server"; measured on a busy 2-core machine: 4 of 9 runs).
    /// - **Closed, before the next `register`.** The orchestrator forgets a node when the node
    ///   finishes, but it numbers a new registration by how many nodes it still holds: a rank that
    ///   registers its next call while another has not finished this one gets the other's *old*
    ///   entry as its peer, and the call hangs (measured: `mnist-cnn` over two processes hung at
    ///   its 238th call). A node's data server closes only after the orchestrator has
    ///   acknowledged its finish, so a refused connection shows it is safe to register again.
    fn wait_for_peer_servers(&self, call: u64, listening: bool) {
        for rank in (0..self.spec.count).filter(|&r| r != self.spec.rank) {
            let address = (
                self.spec.hosts[rank].as_str(),
                self.spec.data_port_of(rank, call),
            );
            while std::net::TcpStream::connect(address).is_ok() != listening {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Checks that every rank runs the same experiment with the same settings (the fingerprint
    /// given to [`NodeGroup::join`]): one call carrying each fingerprint's hex digits and their
    /// squares, whose means show whether the ranks' digits differ (their variance is then above 0).
    pub fn check_agreement<B: Backend>(&self, device: &B::Device) -> Result<()> {
        let digits: Vec<f32> = self
            .fingerprint
            .iter()
            .flat_map(|(_, value)| (0..16).map(move |i| ((value >> (4 * i)) & 0xf) as f32))
            .collect();
        let squares = digits.iter().map(|d| d * d);
        let values: Vec<f32> = digits.iter().copied().chain(squares).collect();
        let n = digits.len();
        let mean: Vec<f32> = self
            .mean(
                Tensor::<B, 1>::from_floats(values.as_slice(), device),
                "comparing the ranks' settings",
            )?
            .into_data()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let differ: Vec<&str> = self
            .fingerprint
            .iter()
            .enumerate()
            .filter(|(f, _)| (16 * f..16 * (f + 1)).any(|i| mean[n + i] - mean[i] * mean[i] > 1e-3))
            .map(|(_, (label, _))| label.as_str())
            .collect();
        if !differ.is_empty() {
            bail!(
                "the {} ranks differ in {}: every rank must run the same experiment with the \
                 same flags and config",
                self.spec.count,
                differ.join(", ")
            );
        }
        Ok(())
    }

    /// The mean over the ranks of `grads`, the gradients of `module`'s parameters: one vector of
    /// them all, end to end in the order the module's fields visit them (the same on every rank).
    pub fn average<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams> {
        let mut flat = Flatten::<B> {
            grads: &grads,
            pieces: Vec::new(),
        };
        module.visit(&mut flat);
        if flat.pieces.is_empty() {
            return Ok(grads);
        }
        let mean = self.mean(Tensor::cat(flat.pieces, 0), "averaging the gradients")?;
        module.visit(&mut Unflatten::<B> {
            grads: &mut grads,
            mean,
            offset: 0,
        });
        Ok(grads)
    }

    /// The collective's config for a call on data port `port`.
    fn config(&self, port: u16) -> Result<CollectiveConfig> {
        let address = |host: &str, port: u16| {
            let text = format!("ws://{host}:{port}");
            burn_communication::Address::from_str(&text)
                .map_err(|_| anyhow::anyhow!("{text} is not an address"))
        };
        let config = CollectiveConfig::default();
        let config = match *self.strategy.lock().expect("strategy") {
            Some(strategy) => config.with_global_all_reduce_strategy(strategy),
            None => config,
        };
        Ok(config
            .with_num_devices(1)
            .with_num_nodes(self.spec.count as u32)
            .with_global_address(address(&self.spec.master_host, self.spec.master_port)?)
            .with_node_address(address(self.spec.host(), port)?)
            .with_data_service_port(port))
    }
}

impl Drop for NodeGroup {
    fn drop(&mut self) {
        // Let the last call finish (rank 0's orchestrator answers it), for a few seconds at most:
        // a peer that has gone would leave it waiting.
        if let Some(finishing) = self.finishing.lock().ok().and_then(|mut f| f.take()) {
            let until = Instant::now() + Duration::from_secs(5);
            while !finishing.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(mut child) = self.orchestrator.lock().ok().and_then(|mut o| o.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lays the gradient of every parameter that has one end to end, in visiting order.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    pieces: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let len = grad.shape().num_elements();
            self.pieces.push(grad.reshape([len]));
        }
    }
}

/// Puts the pieces of the averaged vector back as the gradients, in the same visiting order.
struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    mean: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let shape: Shape = grad.shape();
            let len = shape.num_elements();
            let piece = self.mean.clone().slice(self.offset..self.offset + len);
            self.offset += len;
            self.grads
                .register::<B::InnerBackend, D>(param.id, piece.reshape(shape));
        }
    }
}

/// Starts `pdl orchestrate --port PORT` beside this process, after checking that the port is
/// free (an error that names it, rather than a server that fails inside its own thread). The
/// orchestrator of a rank 0 that was just killed holds the port for up to a quarter of a second
/// more (see [`orchestrate`]), as when `pdl launch` restarts the ranks: the check waits up to 3 s.
fn start_orchestrator(port: u16) -> Result<Child> {
    let waited = std::time::Instant::now();
    loop {
        match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(listener) => break drop(listener),
            Err(_) if waited.elapsed() < Duration::from_secs(3) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => bail!(
                "cannot start the orchestrator on port {port} ({e}): another run (or program) \
                 holds it; give another with --master ws://HOST:PORT (pdl launch: --port)"
            ),
        }
    }
    let exe = std::env::current_exe().context("cannot find the pdl executable")?;
    Command::new(exe)
        .args(["orchestrate", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the orchestrator")
}

/// The threads each of `ranks` processes on this machine gets: its share of the cores, unless
/// `RAYON_NUM_THREADS` says otherwise (`pdl launch`, `pdl bench --model all-reduce`).
pub fn threads_per_rank(ranks: usize) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| (cores / ranks).max(1).to_string())
}

/// `pdl orchestrate`: burn-collective's global orchestrator on `port`, until the process that
/// started it ends.
pub fn orchestrate(port: u16) -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
    let runtime = tokio::runtime::Runtime::new().context("cannot start the orchestrator")?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

/// burn-collective 0.21 prints `Connecting to ws://... ...` on stdout at every connection to the
/// orchestrator, which here is every call: two lines a step. While a multi-process run trains,
/// stdout goes through a pipe that drops those lines and passes everything else on; [`restore_stdout`]
/// hands stdout back (and lets the last lines through) before the process ends.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn filter_stdout() -> Result<()> {
    use std::io::{BufRead, Write};
    use std::os::fd::FromRawFd;
    let mut slot = FILTER.lock().expect("stdout filter");
    if slot.is_some() {
        return Ok(());
    }
    std::io::stdout().flush()?;
    let mut ends = [0i32; 2];
    // SAFETY: plain descriptor calls on descriptors this function owns; stdout (1) is replaced by
    // the pipe's write end, and the original is kept as `original`.
    let (reader, original) = unsafe {
        if libc::pipe(ends.as_mut_ptr()) != 0 {
            bail!("cannot filter stdout: {}", std::io::Error::last_os_error());
        }
        let original = libc::dup(1);
        if original < 0 || libc::dup2(ends[1], 1) < 0 {
            bail!("cannot filter stdout: {}", std::io::Error::last_os_error());
        }
        libc::close(ends[1]);
        (std::fs::File::from_raw_fd(ends[0]), original)
    };
    // SAFETY: `original` is a fresh duplicate of stdout, owned by this file from here on.
    let mut out = unsafe { std::fs::File::from_raw_fd(libc::dup(original)) };
    let pump = std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let chatter =
                line.starts_with(b"Connecting to ") || line.starts_with(b"Failed to connect to ");
            if !chatter {
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
            }
        }
    });
    *slot = Some((original, pump));
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn filter_stdout() -> Result<()> {
    Ok(())
}

/// The original stdout and the thread pumping the pipe, while [`filter_stdout`] is on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static FILTER: Mutex<Option<(i32, std::thread::JoinHandle<()>)>> = Mutex::new(None);

/// Puts the original stdout back and waits until the pipe has passed on everything written to it.
pub fn restore_stdout() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some((original, pump)) = FILTER.lock().ok().and_then(|mut f| f.take()) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: stdout (1) becomes the original again, which closes the pipe's last write end,
        // so the pump reads to the end and stops.
        unsafe {
            libc::dup2(original, 1);
            libc::close(original);
        }
        let _ = pump.join();
    }
}

/// The message of the last panic in a thread of burn-collective's (see [`quiet_collective_panics`]).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn last_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|p| p.clone())
}

/// burn-collective `expect`s on its connections: a peer that goes away panics one of its threads,
/// and Rust prints the panic with its location. Those panics are recorded for the one-line error
/// instead ([`NodeGroup::mean`] or the time limit reports it); others print as before.
fn quiet_collective_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let from_collective = info.location().is_some_and(|l| {
                l.file().contains("burn-collective") || l.file().contains("burn-communication")
            }) || std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio"));
            if from_collective {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                if let Ok(mut last) = LAST_PANIC.lock() {
                    *last = Some(message);
                }
            } else {
                default(info);
            }
        }));
    });
}

/// A deadline on the call in progress: if it passes, the process ends with the message (a call
/// into burn-collective cannot be interrupted from the thread that made it).
struct Watch;

/// The deadline being watched and the error it ends with.
static WATCHED: Mutex<Option<(Instant, String)>> = Mutex::new(None);

impl Watch {
    fn start(limit: Duration, message: String) -> Watch {
        static WATCHER: OnceLock<()> = OnceLock::new();
        WATCHER.get_or_init(|| {
            std::thread::spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let expired = WATCHED
                        .lock()
                        .ok()
                        .and_then(|w| w.as_ref().filter(|(at, _)| Instant::now() > *at).cloned());
                    if let Some((_, message)) = expired {
                        let cause = last_panic().map(|p| format!(" ({p})")).unwrap_or_default();
                        exit_with(&format!("{message}{cause}"));
                    }
                }
            });
        });
        *WATCHED.lock().expect("watch") = Some((Instant::now() + limit, message));
        Watch
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut watched) = WATCHED.lock() {
            *watched = None;
        }
    }
}

/// Ends the process with `message` as pdl's one-line error, from a thread that cannot return an
/// error to `main` (the time limit, an optimiser step). A multi-process run has no dashboard (see
/// [`filter_stdout`]), so there is no terminal to give back. The orchestrator child notices and
/// ends too.
pub fn exit_with(message: &str) -> ! {
    restore_stdout();
    let line: String = message.chars().filter(|&c| c != '\n').collect();
    eprintln!("error: {line}");
    std::process::exit(1);
}

/// A 64-bit FNV-1a hash: the fingerprint of a setting the ranks compare (the same on every
/// machine and build, unlike std's hasher).
pub fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_and_ports_never_meet() {
        let spec = NodeSpec::new(3, 2, "ws://10.0.0.1:4000/", "10.0.0.1,b,10.0.0.3", 60).unwrap();
        assert_eq!(
            (spec.master_host.as_str(), spec.master_port),
            ("10.0.0.1", 4000)
        );
        assert_eq!((spec.host(), spec.hosts[1].as_str()), ("10.0.0.3", "b"));
        assert_eq!(spec.others(), "one of ranks 0, 1");
        let plain = NodeSpec::new(2, 1, "localhost", "127.0.0.1", 5).unwrap();
        assert_eq!(plain.master_port, DEFAULT_PORT);
        assert_eq!(plain.hosts, ["127.0.0.1", "127.0.0.1"]);
        assert_eq!(plain.others(), "rank 0");
        // Every (rank, call) of one machine's nodes gets a port of its own within a turn, none
        // of them the orchestrator's, and a node comes back to a port only after eight calls.
        let ranks: Vec<NodeSpec> = (0..3)
            .map(|r| NodeSpec::new(3, r, "127.0.0.1:4000", "127.0.0.1", 60).unwrap())
            .collect();
        for call in 0..20u64 {
            let mut ports: Vec<u16> = ranks.iter().map(|s| s.data_port(call)).collect();
            ports.sort();
            ports.dedup();
            assert_eq!(ports.len(), 3);
            assert!(!ports.contains(&4000));
            for s in &ranks {
                let next = (1..8).map(|k| s.data_port(call + k));
                assert!(next.into_iter().all(|p| p != s.data_port(call)));
                assert_eq!(s.data_port(call), s.data_port(call + 8));
            }
        }
        for (args, start) in [
            ((2, 2, "127.0.0.1:4000"), "--node-rank 2"),
            ((2, 0, "ws://:4000"), "--master ws://:4000: no host"),
            (
                (2, 0, "127.0.0.1:70000"),
                "--master 127.0.0.1:70000: expected",
            ),
            (
                (2, 0, "127.0.0.1:65530"),
                "--master 127.0.0.1:65530: expected",
            ),
            (
                (2, 0, "127.0.0.1:40000"),
                "--master 127.0.0.1:40000: the ports 40000-40016",
            ),
        ] {
            let err = NodeSpec::new(args.0, args.1, args.2, "127.0.0.1", 60).unwrap_err();
            assert!(err.to_string().starts_with(start), "{err}");
        }
        let err = NodeSpec::new(2, 0, "127.0.0.1:4000", "a,b,c", 60).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--node-hosts: 3 addresses for 2 ranks"),
            "{err}"
        );
    }

    #[test]
    fn fingerprints_are_fnv_1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fingerprint(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint("foobar"), 0x8594_4171_f739_67e8);
    }
}
