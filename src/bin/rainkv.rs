//! `rainkv`: run one node of a cluster (`serve`), the one-command fault demo (`demo`), the
//! benchmark (`bench`), check a data directory's WAL (`wal check`), or turn a trace into an
//! HTML timeline (`timeline`). A thin shell over
//! `rainkv::deploy` and `rainkv::storage`: argument parsing, logging set-up and what the user
//! reads: progress bars (`indicatif`) for the demo and the benchmark when stderr is a
//! terminal, plain lines otherwise.

/// See Cargo.toml: per-message allocations made glibc's malloc a third of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rainkv::deploy::bench::{run_bench, BenchOptions, BenchProgress, Workload};
use rainkv::deploy::bench_sharded::{
    line_with_groups, run_sharded_bench, ShardedBenchOptions, ShardedBenchProgress,
};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::{ClusterFile, NodeAddrs};
use rainkv::deploy::demo::{run_demo, DemoOptions, DemoProgress, Verdict};
use rainkv::deploy::demo_sharded::{run_sharded_demo, ShardedDemoOptions, ShardedProgress};
use rainkv::deploy::etcd_bench::EtcdCluster;
use rainkv::deploy::local::{LocalCluster, LocalOptions};
use rainkv::deploy::node::{NodeSockets, TcpNode};
use rainkv::deploy::scale::{run_scale, EtcdBench, ScaleOptions};
use rainkv::deploy::sharded_file::{Deployment, GroupName};
use rainkv::deploy::store::open_store;
use rainkv::messages::apply::HaltCause;
use rainkv::messages::rsm::Halt;
use rainkv::storage::{check_wal, DataDirLock, Persister};
use rainkv::trace::{self, Tracer};

/// How long the benchmark waits for the cluster to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "rainkv",
    version,
    about = "RainKV: a replicated key/value store on Raft, every part an actix actor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster until SIGTERM or Ctrl-C, or until its disk fails (then it
    /// exits with status 1). On SIGTERM it stops gracefully and exits 0: its client port
    /// closes and the requests in flight are answered, a leader hands its leadership to the
    /// most up-to-date follower, and its last save reaches the disk.
    ///
    /// With a sharded deployment file, --group says which group the node belongs to: the
    /// shard controller's (`controller`) or a replica group's (its gid).
    Serve {
        /// The cluster configuration file (unsharded or sharded).
        #[arg(long)]
        config: PathBuf,
        /// With a sharded deployment file: `controller` or a replica group's gid.
        #[arg(long, value_name = "controller|GID", conflicts_with = "join")]
        group: Option<GroupName>,
        /// This node's id in the configuration (in its group, with --group; with --join: a new
        /// id, not in the file).
        #[arg(long)]
        id: usize,
        /// The node's data directory (default: rainkv-data-<id>, or with --group
        /// rainkv-data-controller-<id> or rainkv-data-g<gid>-<id>).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Join the running cluster as a new node, with an empty data directory, after
        /// `rainkv-ctl member add ID --peer ADDR --client ADDR --learner`: the leader sends it
        /// the state. Needs --peer and --client (the addresses given to member add).
        #[arg(long, requires_all = ["peer", "client"])]
        join: bool,
        /// With --join: the address this node's peer port listens on.
        #[arg(long, requires = "join")]
        peer: Option<std::net::SocketAddr>,
        /// With --join: the address this node's client port listens on.
        #[arg(long, requires = "join")]
        client: Option<std::net::SocketAddr>,
        /// Serve GET /metrics (Prometheus text) and GET /health over HTTP on this address;
        /// overrides the node's `metrics` address in the cluster file.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Run without TLS even though an address is not loopback (the token and every
        /// request then cross the network in the clear).
        #[arg(long)]
        insecure: bool,
    },
    /// Start 3 nodes on loopback in this process, run clients while the leader is killed and
    /// restarted and a node is cut off, and check the history for linearizability.
    Demo {
        /// How long the clients run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// How many clients run at once.
        #[arg(long, default_value_t = 5)]
        clients: usize,
        /// Record the run and write its timeline (one self-contained HTML page) here.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Record the run and write its trace (JSON Lines) here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Run every connection in mutual TLS, with a CA and certificates made for the run.
        #[arg(long)]
        tls: bool,
        /// Run a sharded deployment instead: a controller group and three replica groups of
        /// three nodes, groups joining and leaving and shards moving while group leaders are
        /// killed mid-migration. Exit status 0 only if the history is linearizable and every
        /// shard ends served by its configured group.
        #[arg(long, conflicts_with_all = ["timeline", "trace", "tls"])]
        sharded: bool,
    },
    /// Measure throughput and latency: seq_put, put_64, get_64 and mixed_64.
    Bench {
        /// A running cluster to measure (default: 3 nodes on loopback in this process).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Operations of each concurrent workload.
        #[arg(long, default_value_t = 50_000)]
        ops: usize,
        /// Operations of seq_put.
        #[arg(long, default_value_t = 2000)]
        seq_ops: usize,
        /// Distinct keys the workloads touch.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Bytes of each value written.
        #[arg(long, default_value_t = 128)]
        value_bytes: usize,
        /// Give up (exit 1) when an operation has had no answer for this many seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        give_up_after: u64,
        /// Workloads to run, comma-separated (default: all; with --sharded: mixed_64).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<Workload>>,
        /// Measure sharded deployments in this process instead: the workloads once per group
        /// count of --groups (plus the controller's group), then the time to move a shard of
        /// each size of --move-kib from one group to another.
        #[arg(long, conflicts_with = "config")]
        sharded: bool,
        /// With --sharded: the group counts to measure, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,2,3",
            requires = "sharded"
        )]
        groups: Vec<usize>,
        /// With --sharded: the sizes of the shard moved, in KiB, comma-separated (empty: no
        /// move).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1024,16384,65536",
            requires = "sharded"
        )]
        move_kib: Vec<usize>,
        #[command(flatten)]
        scale: ScaleArgs,
    },
    /// Inspect a node's write-ahead log.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Turn a JSON Lines trace (RAINKV_TRACE=PATH) into one self-contained HTML timeline.
    Timeline {
        /// The trace file.
        trace: PathBuf,
        /// The HTML file to write.
        #[arg(short, long, default_value = "timeline.html")]
        output: PathBuf,
    },
}

/// `rainkv bench --scale`: how cost grows (3 nodes on loopback in this process).
#[derive(clap::Args)]
struct ScaleArgs {
    /// Sweep clients (1-256), value sizes (16 B-1 MiB) and key counts (10 thousand-10
    /// million) instead of the four workloads; prints each figure as a line.
    #[arg(long, conflicts_with_all = ["config", "workloads"])]
    scale: bool,
    /// With --scale: a few seconds of each sweep instead of about a quarter of an hour.
    #[arg(long, requires = "scale")]
    quick: bool,
    /// With --scale: write the report (one HTML page of SVG plots) here.
    #[arg(long, requires = "scale")]
    report: Option<PathBuf>,
    /// With --scale: measure etcd at the same points, installing it (apt) and building its
    /// load generator if needed. Without it etcd is measured only if already installed.
    #[arg(long, requires = "scale", conflicts_with = "no_etcd")]
    etcd: bool,
    /// With --scale: never measure etcd.
    #[arg(long, requires = "scale")]
    no_etcd: bool,
}

#[derive(Subcommand)]
enum WalCommand {
    /// Print each record of DIR/wal, the state a restart would start from (term, vote, last
    /// index and term, snapshot point) and the verdict (ok, a torn tail a restart would cut,
    /// or damage a restart refuses), changing nothing. Exit status 0 unless a restart would
    /// refuse the directory.
    Check {
        /// The node's data directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs its life at info; the demo and the benchmark print their own progress.
    let level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Demo { .. }
        | Command::Bench { .. }
        | Command::Wal { .. }
        | Command::Timeline { .. } => "error",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let system = actix_rt::System::new();
    let outcome = system.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                group,
                id,
                data,
                join,
                peer,
                client,
                metrics,
                insecure,
            } => {
                let joining = match (join, peer, client) {
                    (true, Some(peer), Some(client)) => Some(NodeAddrs {
                        id,
                        peer,
                        client,
                        metrics: None,
                    }),
                    _ => None,
                };
                let who = match group {
                    Some(group) => Who::Sharded(group),
                    None => Who::Single(joining),
                };
                serve(config, id, who, data, metrics, insecure).await
            }
            Command::Demo {
                seconds,
                clients,
                timeline,
                trace,
                tls,
                sharded,
            } => match sharded {
                true => demo_sharded(seconds, clients).await,
                false => demo(seconds, clients, timeline, trace, tls).await,
            },
            Command::Bench { scale, .. } if scale.scale => bench_scale(scale).await,
            Command::Bench {
                config,
                ops,
                seq_ops,
                keys,
                value_bytes,
                give_up_after,
                workloads,
                sharded,
                groups,
                move_kib,
                scale: _,
            } => {
                let mut options = BenchOptions {
                    ops,
                    seq_ops,
                    key_space: keys,
                    value_bytes,
                    patience: Duration::from_secs(give_up_after),
                    ..BenchOptions::default()
                };
                if sharded {
                    options.workloads = vec![Workload::Mixed];
                }
                if let Some(workloads) = workloads {
                    options.workloads = workloads;
                }
                match sharded {
                    true => bench_sharded(options, groups, move_kib).await,
                    false => bench(config, options).await,
                }
            }
            Command::Wal {
                command: WalCommand::Check { dir },
            } => wal_check(&dir),
            Command::Timeline { trace, output } => timeline(&trace, &output),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Which node `rainkv serve` runs, besides its id.
enum Who {
    /// A node of an unsharded cluster: one of the file's, or the new node given (`--join`).
    Single(Option<NodeAddrs>),
    /// A node of this group of a sharded deployment.
    Sharded(GroupName),
}

/// `rainkv serve`: node `id` of the file (of a group of it, in a sharded deployment), or the
/// new node `joining`; with HTTP on `metrics` if given, else on the file's metrics address for
/// the node, if any.
async fn serve(
    path: PathBuf,
    id: usize,
    who: Who,
    data: Option<PathBuf>,
    metrics: Option<std::net::SocketAddr>,
    insecure: bool,
) -> Result<ExitCode, String> {
    let deployment = Deployment::load(&path).map_err(|e| e.to_string())?;
    let (config, joining, needs_tls) = match (&deployment, &who) {
        (Deployment::Single(config), Who::Single(joining)) => {
            (config.clone(), *joining, config.needs_tls())
        }
        (Deployment::Sharded(file), Who::Sharded(group)) => {
            let config = file.group(*group)?;
            (config, None, file.needs_tls())
        }
        (Deployment::Single(_), Who::Sharded(_)) => {
            return Err(format!(
                "{} describes an unsharded cluster: --group is for a sharded deployment",
                path.display()
            ))
        }
        (Deployment::Sharded(file), Who::Single(_)) => {
            return Err(format!(
                "{} describes a sharded deployment: pass --group controller or --group GID \
                 (its gids: {:?}); a sharded group's members cannot change (no --join)",
                path.display(),
                file.gids()
            ))
        }
    };
    let mut addrs = match joining {
        Some(addrs) => addrs,
        None => *config.node(id).map_err(|e| e.to_string())?,
    };
    addrs.metrics = metrics.or(addrs.metrics);
    if !insecure {
        let exposed = [addrs.peer, addrs.client]
            .into_iter()
            .find(|addr| config.tls.is_none() && !addr.ip().is_loopback());
        if let Some(why) = needs_tls.or(exposed.map(|addr| {
            format!("address {addr} is not loopback and TLS is off; add a [tls] section or pass --insecure")
        })) {
            return Err(why);
        }
    }
    let default_dir = match &who {
        Who::Single(_) => format!("rainkv-data-{id}"),
        Who::Sharded(GroupName::Controller) => format!("rainkv-data-controller-{id}"),
        Who::Sharded(GroupName::Replica(gid)) => format!("rainkv-data-g{gid}-{id}"),
    };
    let data = data.unwrap_or_else(|| PathBuf::from(default_dir));
    // Before anything else: a second process on the same directory stops here, before it
    // binds a port or reads a file. Held until this process exits.
    let _lock = DataDirLock::acquire(&data).map_err(|e| match e.kind() {
        std::io::ErrorKind::ResourceBusy => e.to_string(),
        _ => format!("cannot lock the data directory {}: {e}", data.display()),
    })?;
    let sockets = NodeSockets::bind(&addrs).await.map_err(|e| e.to_string())?;
    let store = open_store(&data)
        .map_err(|e| format!("cannot open the data directory {}: {e}", data.display()))?;
    if joining.is_none() && store.load().is_ok_and(|state| state.term == 0) {
        log::warn!(
            "{}: no saved Raft state: node {id} starts afresh. Right for a new cluster; but if \
             this node was a member before and lost its data, stop it: restarted under its old \
             id it cannot catch up (its leader reports it), and it must be replaced instead \
             (`rainkv-ctl member remove {id}`, then `serve --join` under a new id)",
            data.display()
        );
    }
    let node = match (&deployment, &who, joining) {
        (Deployment::Sharded(file), Who::Sharded(group), _) => {
            TcpNode::start_sharded(file, *group, id, sockets, store, &Tracer::off())
        }
        (_, _, Some(me)) => TcpNode::join(&config, me, sockets, store),
        (_, _, None) => TcpNode::start(&config, id, sockets, store),
    }
    .map_err(|e| e.to_string())?;
    let of_group = match who {
        Who::Sharded(group) => format!(" of {group}"),
        Who::Single(_) => String::new(),
    };
    println!(
        "rainkv node {id}{of_group} of cluster {:?}: peers on {}, clients on {}{}",
        config.name,
        addrs.peer,
        addrs.client,
        addrs
            .metrics
            .map(|addr| format!(", metrics on http://{addr}/metrics"))
            .unwrap_or_default()
    );
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let signal = tokio::select! {
        signal = &mut signal => signal,
        halt = node.halted() => match halt {
            // Fail-stop: nothing more can be acknowledged; a supervisor sees the exit, and a
            // restart recovers from what is on disk.
            Some(Halt { cause: HaltCause::Storage, reason }) => {
                log::error!("node {id}: its storage failed; exiting: {reason}");
                node.shutdown().await;
                return Err(format!("node {id} stopped because its storage failed: {reason}"));
            }
            // Something it cannot trust, which a restart would meet again: it stays up to say
            // why in its status until it is stopped.
            Some(Halt { cause: HaltCause::Untrusted, .. }) => (&mut signal).await,
            None => return Err(format!("node {id}: its replica stopped")),
        },
    }
    .map_err(|e| format!("cannot wait for a shutdown signal: {e}"))?;
    println!("{signal}: shutting down");
    // Each step logs what it did. Clients wait no longer than their call timeout, so neither
    // does the drain; a node that does not lead hands nothing off.
    node.drain_clients(config.tcp_settings().call_timeout).await;
    node.hand_off_leadership().await;
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `rainkv timeline TRACE -o PAGE`: the trace as one HTML page.
fn timeline(trace: &Path, output: &Path) -> Result<ExitCode, String> {
    let jsonl = std::fs::read_to_string(trace)
        .map_err(|e| format!("cannot read {}: {e}", trace.display()))?;
    write_page(&jsonl, &trace.display().to_string(), output)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the timeline page of the JSON Lines trace `jsonl` to `output` and says so.
fn write_page(jsonl: &str, title: &str, output: &Path) -> Result<(), String> {
    let page = trace::timeline::render(jsonl, title);
    std::fs::write(output, &page).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    println!(
        "timeline: {}: {} events, {} KiB",
        output.display(),
        jsonl.lines().filter(|l| !l.trim().is_empty()).count(),
        page.len() / 1024
    );
    Ok(())
}

/// A progress bar on stderr when it is a terminal; `None` (plain lines) otherwise.
fn progress_bar(template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    // The template is ours and fixed: a bad one is a bug caught the first time it runs.
    match ProgressStyle::with_template(template) {
        Ok(style) => bar.set_style(style.progress_chars("=> ")),
        Err(e) => log::warn!("progress bar template: {e}"),
    }
    Some(bar)
}

/// Prints a line to stdout, above the bar if there is one.
fn say(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// `rainkv wal check DIR`: the records, the state a restart starts from, and the verdict;
/// exit status 1 if a restart would refuse the directory.
fn wal_check(dir: &std::path::Path) -> Result<ExitCode, String> {
    let check = check_wal(dir).map_err(|e| format!("cannot check the WAL: {e}"))?;
    println!("{}", check.summary());
    for record in &check.records {
        println!("{record}");
    }
    if let Some(state) = &check.state {
        println!("state after a restart: {state}");
    }
    println!("verdict: {}", check.verdict);
    Ok(if check.is_usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Waits for Ctrl-C or, on Unix, SIGTERM; returns which came.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.map(|()| "Ctrl-C"),
            _ = terminate.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}

async fn demo(
    seconds: u64,
    clients: usize,
    timeline: Option<PathBuf>,
    trace_file: Option<PathBuf>,
    tls: bool,
) -> Result<ExitCode, String> {
    if seconds == 0 || clients == 0 {
        return Err("--seconds and --clients must be at least 1".into());
    }
    let certs = match tls {
        true => {
            let dir =
                std::env::temp_dir().join(format!("rainkv-demo-certs-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            rainkv::deploy::certs::init(&dir, 3, Default::default())?;
            Some(dir)
        }
        false => None,
    };
    // Recording costs nothing unless one of the two asks for it.
    let tracer = match timeline.is_some() || trace_file.is_some() {
        true => Tracer::recording(),
        false => Tracer::off(),
    };
    let options = DemoOptions {
        duration: Duration::from_secs(seconds),
        clients,
        trace: tracer.clone(),
        tls: certs.clone(),
        ..DemoOptions::default()
    };
    let over = if tls { "TCP with mutual TLS" } else { "TCP" };
    println!("RainKV demo: 3 nodes on loopback {over}, {clients} clients, {seconds} s of faults");
    let bar = progress_bar("{elapsed_precise} {bar:20.cyan/blue} {pos:>3}/{len}s {wide_msg}");
    if let Some(bar) = &bar {
        bar.set_length(seconds);
    }
    let outcome = run_demo(&options, &mut |progress| match (progress, &bar) {
        (DemoProgress::Note(line), bar) => say(bar.as_ref(), line),
        (DemoProgress::Tick(tick), Some(bar)) => {
            bar.set_position(tick.elapsed.as_secs());
            let leader = tick.leader.map_or("none".to_string(), |l| l.to_string());
            bar.set_message(format!(
                "{} ops {}/s  faults {}  leader {leader}  up {}/{}",
                tick.ops, tick.ops_last_second, tick.faults, tick.up, tick.nodes
            ));
        }
        (DemoProgress::Tick(tick), None) if tick.second => println!("{}", tick.line()),
        (DemoProgress::Tick(_), None) => {}
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(dir) = &certs {
        let _ = std::fs::remove_dir_all(dir);
    }
    // A failed run's trace is worth having too: it shows how far the run got.
    if tracer.is_on() {
        let events = tracer.events();
        if let Some(path) = &trace_file {
            trace::write_jsonl(&events, path)
                .map_err(|e| format!("cannot write the trace to {}: {e}", path.display()))?;
            println!("trace: {}: {} events", path.display(), events.len());
        }
        if let Some(path) = &timeline {
            let mut jsonl = String::new();
            for event in &events {
                jsonl.push_str(&trace::to_json(event));
                jsonl.push('\n');
            }
            let title = format!("rainkv demo, {seconds} s, {clients} clients");
            write_page(&jsonl, &title, path)?;
        }
    }
    let report = outcome.map_err(|e| e.to_string())?;
    println!("{}", report.summary());
    println!("{} faults injected", report.faults.len());
    Ok(print_verdict(&report.verdict))
}

/// Prints the checker's verdict (with its explanation unless linearizable); success only
/// when linearizable.
fn print_verdict(verdict: &Verdict) -> ExitCode {
    if let Verdict::NotLinearizable(why) | Verdict::Undecided(why) = verdict {
        println!("{why}");
    }
    println!("{}", verdict.line());
    match verdict {
        Verdict::Linearizable => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// `rainkv bench --scale`: runs the sweeps, prints each figure, writes the report if asked.
async fn bench_scale(args: ScaleArgs) -> Result<ExitCode, String> {
    let options = match args.quick {
        true => ScaleOptions::quick(),
        false => ScaleOptions::full(),
    };
    let mut etcd = match args.no_etcd {
        true => Err("not asked for (--no-etcd)".to_string()),
        false => EtcdCluster::start(args.etcd),
    };
    if args.etcd {
        if let Err(why) = &etcd {
            return Err(format!("--etcd: {why}"));
        }
    }
    eprintln!("how cost grows: 3 nodes on loopback in this process (durable store, fsync on)");
    let mut lines = Vec::new();
    let etcd_bench = etcd
        .as_mut()
        .map(|e| e as &mut dyn EtcdBench)
        .map_err(|e| e.clone());
    let report = run_scale(&options, etcd_bench, &mut |line| {
        println!("{line}");
        lines.push(line.to_string());
    })
    .await?;
    drop(etcd);
    if let Some(path) = args.report {
        let page = rainkv::deploy::report::html(&report, &lines)?;
        std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(config: Option<PathBuf>, options: BenchOptions) -> Result<ExitCode, String> {
    if options.in_flight == 0 || options.key_space == 0 {
        return Err("the benchmark needs at least one client and one key".into());
    }
    eprintln!(
        "{} keys of 16 bytes, values of {} bytes",
        options.key_space, options.value_bytes
    );
    let mut local = None;
    let client = match config {
        Some(path) => {
            let config = ClusterFile::load(&path).map_err(|e| e.to_string())?;
            eprintln!(
                "benchmarking cluster {:?} ({} nodes)",
                config.name,
                config.nodes.len()
            );
            ClusterClient::connect(&config)
        }
        None => {
            let cluster = LocalCluster::start(LocalOptions::default())
                .await
                .map_err(|e| format!("cannot start the local cluster: {e}"))?;
            eprintln!("benchmarking 3 nodes on loopback in this process (durable store, fsync on)");
            let client = cluster.client().clone();
            local = Some(cluster);
            client
        }
    };
    if client.wait_for_leader(LEADER_WAIT).await.is_none() {
        let mut why = format!("no leader within {LEADER_WAIT:?}");
        for reason in client.unreachable_reasons().await {
            why.push_str(&format!("\n  {reason}"));
        }
        return Err(why);
    }
    let bar =
        progress_bar("{prefix:>9} {elapsed_precise} {bar:20.cyan/blue} {pos}/{len} ops {wide_msg}");
    let results = run_bench(&client, &options, &mut |progress| match (progress, &bar) {
        (BenchProgress::Done(result), bar) => say(bar.as_ref(), &result.line()),
        (
            BenchProgress::Running {
                name,
                done,
                total,
                elapsed,
            },
            Some(bar),
        ) => {
            if bar.prefix() != name {
                bar.reset();
                bar.set_prefix(name.to_string());
            }
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
            bar.set_message(format!("{rate:.0} ops/s"));
        }
        (BenchProgress::Running { .. }, None) => {}
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    client.close();
    if let Some(mut cluster) = local {
        cluster.shutdown().await;
    }
    if let Some(why) = results.iter().find_map(|r| r.gave_up(options.patience)) {
        return Err(format!("{why}; the workloads after it were not run"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `rainkv demo --sharded`: the sharded demo, its progress, figures and verdicts.
async fn demo_sharded(seconds: u64, clients: usize) -> Result<ExitCode, String> {
    if seconds == 0 || clients == 0 {
        return Err("--seconds and --clients must be at least 1".into());
    }
    let options = ShardedDemoOptions {
        duration: Duration::from_secs(seconds),
        clients,
        ..ShardedDemoOptions::default()
    };
    println!(
        "RainKV sharded demo: a controller and 3 groups of 3 nodes on loopback TCP, \
         {clients} clients, {seconds} s of joins, leaves, moves and leader kills"
    );
    let bar = progress_bar("{elapsed_precise} {bar:20.cyan/blue} {pos:>3}/{len}s {wide_msg}");
    if let Some(bar) = &bar {
        bar.set_length(seconds);
    }
    let outcome = run_sharded_demo(&options, &mut |progress| match (progress, &bar) {
        (ShardedProgress::Note(line), bar) => say(bar.as_ref(), line),
        (ShardedProgress::Tick(tick), Some(bar)) => {
            bar.set_position(tick.elapsed.as_secs());
            bar.set_message(format!(
                "{} ops {}/s  config {}  moved {}  up {}/{}",
                tick.ops, tick.ops_last_second, tick.config, tick.shards_moved, tick.up, tick.nodes
            ));
        }
        (ShardedProgress::Tick(tick), None) if tick.second => println!("{}", tick.line()),
        (ShardedProgress::Tick(_), None) => {}
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = outcome.map_err(|e| e.to_string())?;
    println!("{}", report.demo.summary());
    println!("{} shards moved", report.shards_moved);
    println!("{}", report.owners_line());
    let settled = report.settled();
    match settled {
        true => println!(
            "all shards served by their groups (settled {:.1} s after the clients stopped)",
            report.settled_in.as_secs_f64()
        ),
        false => {
            for line in &report.unsettled {
                println!("  {line}");
            }
            println!(
                "NOT all shards served by their groups after {:?}",
                options.settle_wait
            );
        }
    }
    let verdict = print_verdict(&report.demo.verdict);
    Ok(match settled {
        true => verdict,
        false => ExitCode::FAILURE,
    })
}

/// `rainkv bench --sharded`: one result line per workload and group count, then one per move.
async fn bench_sharded(
    bench: BenchOptions,
    groups: Vec<usize>,
    move_kib: Vec<usize>,
) -> Result<ExitCode, String> {
    if bench.in_flight == 0 || bench.key_space == 0 || groups.contains(&0) {
        return Err("the benchmark needs at least one client, one key and one group".into());
    }
    let options = ShardedBenchOptions {
        groups,
        bench,
        move_sizes: move_kib.iter().map(|kib| kib << 10).collect(),
    };
    eprintln!(
        "benchmarking sharded deployments of {:?} groups of 3 nodes (and a controller group) \
         on loopback in this process (durable store, fsync on)",
        options.groups
    );
    let bar = progress_bar(
        "{prefix:>18} {elapsed_precise} {bar:20.cyan/blue} {pos}/{len} ops {wide_msg}",
    );
    let outcome = run_sharded_bench(&options, &mut |progress| match progress {
        ShardedBenchProgress::Note(line) => say(bar.as_ref(), line),
        ShardedBenchProgress::Moved(result) => say(bar.as_ref(), &result.line()),
        ShardedBenchProgress::Workload(groups, BenchProgress::Done(result)) => {
            say(bar.as_ref(), &line_with_groups(result, groups))
        }
        ShardedBenchProgress::Workload(
            groups,
            BenchProgress::Running {
                name, done, total, ..
            },
        ) => {
            if let Some(bar) = &bar {
                let prefix = format!("{name} groups={groups}");
                if bar.prefix() != prefix {
                    bar.reset();
                    bar.set_prefix(prefix);
                }
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        }
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (workloads, _) = outcome?;
    let gave_up = workloads.iter().find_map(|(groups, results)| {
        let why = results
            .iter()
            .find_map(|r| r.gave_up(options.bench.patience))?;
        Some(format!("{why} (on {groups} groups)"))
    });
    if let Some(why) = gave_up {
        return Err(why);
    }
    Ok(ExitCode::SUCCESS)
}
