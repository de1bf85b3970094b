//! `rainkv-ctl`: talk to a running RainKV cluster: `get`, `put`, `append`, `status`,
//! `transfer-leader` and `member` (`list`, `add`, `promote`, `remove`); and to a sharded
//! deployment: `get`, `put`, `append` and `status` again, and `shard` (`join`, `leave`, `move`,
//! `query`) to change and read the controller's configuration.
//!
//! The cluster file names the first members; members added since are found by asking the
//! nodes (`Admin.Members`), so every command reaches them too.
//!
//! Keys and values are text by default. With `--hex`, keys and values on the command line are
//! hex (`00ff41`, either case) and `get` prints the value as lowercase hex. A value argument
//! `@PATH` is the contents of the file at PATH, and `-` (or `@-`) is standard input, taken as
//! raw bytes with or without `--hex` (values of any size a frame holds: no command-line
//! limit); `@@...` is a text value that really starts with `@` (one `@` is dropped). Without `--hex`,
//! `get` refuses to print a value that is not UTF-8 (it says to use `--hex`) rather than
//! mangle it.
//!
//! `transfer-leader --to ID` moves leadership to node ID (Raft's leadership transfer): the
//! leader brings ID's log up to date and has it campaign at once, so the cluster changes
//! leader in about one election round trip, without waiting out an election timeout.
//!
//! A write that times out (or whose session expired while it was retried) may still be
//! applied: its error says the outcome is unknown.
//!
//! Exit status: 0 on success, 1 when the cluster cannot serve the request in time (the
//! reasons are printed) or a leadership transfer fails, 2 for a bad command line or
//! configuration file (an unknown node id included), bad hex, an unreadable value file, a
//! value `get` cannot print as text, or a shard command the configuration refuses (a gid not
//! in the file or not a group, a shard out of range, leaving the last group, a shard command
//! on an unsharded cluster, a member command on a sharded one); then nothing is changed.

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use rainkv::actors::clerk::Clerk;
use rainkv::deploy::certs::Validity;
use rainkv::deploy::client::{ChangeFailure, ClusterClient, TransferFailure, Transferred};
use rainkv::deploy::cluster_file::{ClusterFile, NodeAddrs, TlsIdentity};
use rainkv::deploy::shard_client::ShardedClient;
use rainkv::deploy::sharded_file::{Deployment, ShardedFile};
use rainkv::messages::admin::{MemberReport, NodeStatus};
use rainkv::messages::kv::ClerkError;
use rainkv::messages::raft::{MembershipChange, Role};
use rainkv::messages::rsm::Health;

#[path = "rainkv-ctl/shard.rs"]
mod shard;

#[derive(Parser)]
#[command(
    name = "rainkv-ctl",
    version,
    about = "Talk to a running RainKV cluster"
)]
struct Cli {
    /// The cluster configuration file (every command but `certs` needs it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Keys and values on the command line are hex, and `get` prints hex.
    #[arg(long, global = true)]
    hex: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the value of KEY (an empty line if it has none).
    Get {
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE (`@PATH`: the contents of a file; `-`: standard input; `@@...`: a
    /// literal leading `@`).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Append VALUE to KEY's value (`@PATH`, `-` and `@@...` as for `put`).
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Show each node's role, term, commit index and applied index; for a sharded deployment,
    /// per group its leader, term, config number and each shard's state (serving, pulling,
    /// frozen, awaiting deletion).
    Status,
    /// Change or read a sharded deployment's configuration (which group owns which shard).
    Shard {
        #[command(subcommand)]
        command: ShardCmd,
    },
    /// Move leadership to node ID.
    ///
    /// The leader brings ID's log up to date, then has it start an election at once; clients
    /// wait about one election round trip instead of an election timeout. Waits (up to
    /// --timeout) until ID reports that it leads; a no-op if it already does. Fails if ID
    /// cannot be reached or does not serve, if no node leads, or if the leader refuses.
    TransferLeader {
        /// The id of the node to take over.
        #[arg(long, value_name = "ID")]
        to: usize,
    },
    /// List or change the cluster's members, one node at a time.
    ///
    /// To replace a node: `member add NEW --peer ADDR --client ADDR --learner`, start the new
    /// node with `rainkv serve --join`, wait until `member list` shows it caught up, then
    /// `member promote NEW` and `member remove OLD`.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Write the certificates mutual TLS needs (point the cluster file's `[tls] dir` at them).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand)]
enum ShardCmd {
    /// Add replica groups (their servers as the file lists them); shards are rebalanced with
    /// as few moves as possible.
    Join {
        /// The groups' gids (as in the file).
        #[arg(required = true)]
        gids: Vec<u64>,
        /// Print the configuration the controller would produce and the shards that would
        /// move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove replica groups; their shards move to the groups that stay. The last group
    /// cannot leave (its shards would have no owner).
    Leave {
        /// The groups' gids.
        #[arg(required = true)]
        gids: Vec<u64>,
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Give SHARD to group GID (a later join or leave may move it again).
    Move {
        /// The shard, 0..10.
        shard: usize,
        /// The group that gets it (a group of the current configuration).
        gid: u64,
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print configuration NUM (default: the latest) as tables: shard → gid, gid → servers.
    Query {
        /// The configuration number.
        num: Option<u64>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// A new cluster CA in DIR, a certificate for each of nodes 0..N and one for clients.
    /// Nothing is overwritten. Keep ca.key off the nodes.
    Init {
        /// The directory (created if missing).
        dir: PathBuf,
        /// How many node certificates (nodes 0..N).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How many days the node and client certificates are valid (the CA: at least
        /// ten years).
        #[arg(long, default_value_t = rainkv::deploy::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// A certificate for node ID (one that joins later), signed by the CA in DIR. To renew
    /// one, remove its two files first.
    Node {
        /// The directory holding the CA.
        dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        id: usize,
        /// How many days the certificate is valid.
        #[arg(long, default_value_t = rainkv::deploy::certs::DEFAULT_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Print each member: id, voter or learner, addresses, and (from the leader) how far it
    /// has the log.
    List,
    /// Add node ID as a learner: it gets the log but neither votes nor counts for commits.
    Add {
        /// The new node's id (not a member yet).
        id: usize,
        /// Its peer port's address.
        #[arg(long)]
        peer: std::net::SocketAddr,
        /// Its client port's address.
        #[arg(long)]
        client: std::net::SocketAddr,
        /// Add it as a learner (the only way a node joins; promote it once it caught up).
        #[arg(long, required = true)]
        learner: bool,
    },
    /// Make learner ID a voter; refused while it lags the leader's log by more than the
    /// cluster's promote_lag entries.
    Promote {
        /// The learner's id.
        id: usize,
    },
    /// Remove member ID (a removed leader steps down once its removal commits).
    Remove {
        /// The member's id.
        id: usize,
    },
}

/// Failure to serve the request (exit 1) or a usage error (exit 2).
enum Failure {
    Unavailable(String),
    Usage(String),
}

/// A KV request, its key and value already turned into bytes.
enum Request {
    Get(Bytes),
    Put(Bytes, Bytes),
    Append(Bytes, Bytes),
}

impl Request {
    /// The request `command` asks for, reading hex and value files; `None` for the commands
    /// that are not KV requests (`status`, `transfer-leader`).
    fn from_command(command: &Command, hex: bool) -> Result<Option<Request>, Failure> {
        let key = |key: &str| argument(key, hex).map_err(|e| Failure::Usage(format!("key: {e}")));
        let value = |value: &str| {
            value_argument(value, hex, &mut std::io::stdin().lock()).map_err(Failure::Usage)
        };
        Ok(Some(match command {
            Command::Get { key: k } => Request::Get(key(k)?),
            Command::Put { key: k, value: v } => Request::Put(key(k)?, value(v)?),
            Command::Append { key: k, value: v } => Request::Append(key(k)?, value(v)?),
            Command::Status
            | Command::Shard { .. }
            | Command::TransferLeader { .. }
            | Command::Member { .. }
            | Command::Certs { .. } => return Ok(None),
        }))
    }

    /// Runs the request: the value read by a get (`None` if missing), `None` for a write.
    async fn run(self, clerk: &Clerk) -> Result<Option<Option<Bytes>>, ClerkError> {
        match self {
            Request::Get(key) => clerk.get(key).await.map(Some),
            Request::Put(key, value) => clerk.put(key, value).await.map(|()| None),
            Request::Append(key, value) => clerk.append(key, value).await.map(|()| None),
        }
    }
}

/// A key or value as given on the command line: its UTF-8 bytes, or with `hex` the bytes the
/// hex digits spell.
fn argument(text: &str, hex: bool) -> Result<Bytes, String> {
    if hex {
        from_hex(text).map(Bytes::from)
    } else {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// A value argument: `-` or `@-` reads `stdin` to its end, `@PATH` reads the file, `@@...`
/// drops one `@`, anything else is as [`argument`] reads it.
fn value_argument(text: &str, hex: bool, stdin: &mut dyn Read) -> Result<Bytes, String> {
    if text == "-" || text == "@-" {
        let mut value = Vec::new();
        return stdin
            .read_to_end(&mut value)
            .map(|_| Bytes::from(value))
            .map_err(|e| format!("cannot read the value from standard input: {e}"));
    }
    match text.strip_prefix('@') {
        Some(rest) if rest.starts_with('@') => {
            argument(rest, hex).map_err(|e| format!("value: {e}"))
        }
        Some(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("cannot read the value file {path:?}: {e}")),
        None => argument(text, hex).map_err(|e| format!("value: {e}")),
    }
}

/// The bytes that pairs of hex digits (either case) spell.
fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!(
            "{text:?} is not hex: an odd number of digits ({})",
            text.len()
        ));
    }
    let digit = |i: usize, c: u8| {
        char::from(c)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("{text:?} is not hex: {:?} at {i}", char::from(c)))
    };
    text.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| Ok(digit(2 * i, pair[0])? << 4 | digit(2 * i + 1, pair[1])?))
        .collect()
}

/// `bytes` as lowercase hex.
fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// What `get` prints for `value` (without the newline).
fn printable(value: Option<&[u8]>, hex: bool) -> Result<String, Failure> {
    let value = value.unwrap_or_default();
    if hex {
        return Ok(to_hex(value));
    }
    String::from_utf8(value.to_vec()).map_err(|_| {
        Failure::Usage(format!(
            "the value ({} bytes) is not UTF-8 text; run again with --hex to print it as hex",
            value.len()
        ))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let system = actix_rt::System::new();
    match system.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Unavailable(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Certs { command } = &cli.command {
        return certs(command);
    }
    let path = cli
        .config
        .as_ref()
        .ok_or_else(|| Failure::Usage("--config FILE is needed".into()))?;
    let deployment = Deployment::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let common = match &deployment {
        Deployment::Single(config) => config,
        Deployment::Sharded(file) => &file.controller,
    };
    // A broken TLS identity is a configuration error, said before anything is tried.
    common
        .tls_config(TlsIdentity::Client)
        .map_err(|e| Failure::Usage(format!("cannot load the client's TLS identity: {e}")))?;
    let limit = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--timeout must be a positive number of seconds, not {}",
                cli.timeout
            ))
        })?;
    let request = Request::from_command(&cli.command, cli.hex)?;
    let config = match deployment {
        Deployment::Sharded(file) => {
            return sharded(&file, &cli.command, request, cli.hex, limit).await
        }
        Deployment::Single(config) => config,
    };
    if let Command::Shard { .. } = &cli.command {
        return Err(Failure::Usage(format!(
            "{} describes an unsharded cluster (top-level [[node]] entries): shard commands \
             need a sharded deployment file ([[controller.node]] and [[group]] entries)",
            path.display()
        )));
    }
    let client = ClusterClient::connect_members(&config, limit).await;
    let outcome = match (request, &cli.command) {
        (Some(request), _) => {
            let reasons = async { client.unreachable_reasons().await };
            kv(
                &client.clerk(),
                &config.name,
                reasons,
                request,
                cli.hex,
                limit,
            )
            .await
        }
        (None, Command::TransferLeader { to }) => transfer_leader(&client, *to, limit).await,
        (None, Command::Member { command }) => member(&client, command, limit).await,
        (None, _) => status(&client, &config, limit).await,
    };
    client.close();
    outcome
}

/// A command against a sharded deployment.
async fn sharded(
    file: &ShardedFile,
    command: &Command,
    request: Option<Request>,
    hex: bool,
    limit: Duration,
) -> Result<(), Failure> {
    let client = ShardedClient::connect(file);
    let outcome = match (request, command) {
        (Some(request), _) => {
            let reasons = async { client.unreachable_reasons().await };
            let name = &file.controller.name;
            kv(&client.clerk(), name, reasons, request, hex, limit).await
        }
        (None, Command::Shard { command }) => shard::run(&client, command, limit).await,
        (None, Command::Status) => shard::status(&client, limit).await,
        (None, _) => Err(Failure::Usage(
            "member and transfer-leader work on an unsharded cluster only: a sharded \
             deployment's groups keep the members its file lists"
                .into(),
        )),
    };
    client.close();
    outcome
}

/// Runs `request` through `clerk` within `limit`; on a timeout, says why the nodes of the
/// cluster called `name` could not be reached, as `reasons` tells.
async fn kv(
    clerk: &Clerk,
    name: &str,
    reasons: impl std::future::Future<Output = Vec<String>>,
    request: Request,
    hex: bool,
    limit: Duration,
) -> Result<(), Failure> {
    let write = !matches!(request, Request::Get(_));
    match tokio::time::timeout(limit, request.run(clerk)).await {
        Ok(Ok(Some(value))) => {
            println!("{}", printable(value.as_deref(), hex)?);
            Ok(())
        }
        Ok(Ok(None)) => {
            println!("ok");
            Ok(())
        }
        Ok(Err(e)) => Err(Failure::Unavailable(e.to_string())),
        Err(_) => {
            let mut message =
                format!("cluster {name:?} did not serve the request within {limit:?}");
            if write {
                message.push_str(
                    " (outcome unknown: the write may or may not have been applied, and may \
                     still be)",
                );
            }
            let reasons = reasons.await;
            if reasons.is_empty() {
                message.push_str("\n  the nodes answer, but none could serve it (no leader?)");
            }
            for reason in reasons {
                message.push_str(&format!("\n  {reason}"));
            }
            Err(Failure::Unavailable(message))
        }
    }
}

fn certs(command: &CertsCommand) -> Result<(), Failure> {
    let written = match command {
        CertsCommand::Init { dir, nodes, days } => {
            rainkv::deploy::certs::init(dir, *nodes, Validity::days(*days))
        }
        CertsCommand::Node { dir, id, days } => {
            rainkv::deploy::certs::node(dir, *id, Validity::days(*days))
        }
    }
    .map_err(Failure::Usage)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn member(
    client: &ClusterClient,
    command: &MemberCommand,
    limit: Duration,
) -> Result<(), Failure> {
    let change = match command {
        MemberCommand::List => return member_list(client, limit).await,
        MemberCommand::Add {
            id, peer, client, ..
        } => MembershipChange::AddLearner {
            id: *id,
            contact: NodeAddrs {
                id: *id,
                peer: *peer,
                client: *client,
                metrics: None,
            }
            .contact(),
        },
        MemberCommand::Promote { id } => MembershipChange::Promote(*id),
        MemberCommand::Remove { id } => MembershipChange::Remove(*id),
    };
    match client.change_member(change.clone(), limit).await {
        Ok(index) => {
            println!("done: {change}, committed at index {index}");
            Ok(())
        }
        Err(e @ ChangeFailure::Refused(_)) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Unavailable(e.to_string())),
    }
}

async fn member_list(client: &ClusterClient, limit: Duration) -> Result<(), Failure> {
    let report = client
        .members(limit)
        .await
        .map_err(|why| Failure::Unavailable(format!("no node told its members: {why}")))?;
    let leader = report
        .raft
        .filter(|r| r.role == Role::Leader)
        .map(|_| report.id);
    let last = leader.and_then(|l| report.members.iter().find(|m| m.id == l)?.match_index);
    println!(
        "{:<5} {:<8} {:<40} {:>10} {:>8}",
        "id", "role", "addresses", "match", "lag"
    );
    for m in &report.members {
        let role = if m.voter { "voter" } else { "learner" };
        let (matched, lag) = match (m.match_index, last) {
            (Some(matched), Some(last)) => (
                matched.to_string(),
                last.saturating_sub(matched).to_string(),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<5} {:<8} {:<40} {:>10} {:>8}",
            m.id, role, m.contact, matched, lag
        );
    }
    match leader {
        Some(l) => println!("(as node {l}, the leader, knows it)"),
        None => println!(
            "(as node {} knows it; no leader answered, so no match or lag)",
            report.id
        ),
    }
    Ok(())
}

async fn transfer_leader(
    client: &ClusterClient,
    to: usize,
    limit: Duration,
) -> Result<(), Failure> {
    match client.transfer_leadership(to, limit).await {
        Ok(Transferred::AlreadyLeader { term }) => {
            println!("node {to} already leads (term {term}); nothing to do");
            Ok(())
        }
        Ok(Transferred::Moved { from, term, took }) => {
            println!(
                "leader is now node {to} (term {term}), was node {from}; took {} ms",
                took.as_millis()
            );
            Ok(())
        }
        Err(e @ TransferFailure::NoSuchNode { .. }) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Unavailable(e.to_string())),
    }
}

async fn status(
    client: &ClusterClient,
    config: &ClusterFile,
    limit: Duration,
) -> Result<(), Failure> {
    let reports = client.status(limit).await;
    println!(
        "{:<5} {:<22} {:<10} {:>6} {:>10} {:>10}",
        "node", "client address", "role", "term", "commit", "applied"
    );
    let mut answered = 0;
    let mut leaders = 0;
    for report in &reports {
        let address = report.node.client.to_string();
        match &report.status {
            Ok(NodeStatus {
                health: Health::Halted { reason },
                ..
            }) => println!("{:<5} {:<22} halted: {reason}", report.node.id, address),
            Ok(s) => {
                answered += 1;
                leaders += usize::from(s.is_leader());
                match s.raft {
                    Some(r) => println!(
                        "{:<5} {:<22} {:<10} {:>6} {:>10} {:>10}",
                        report.node.id, address, r.role, r.term, r.commit_index, r.last_applied
                    ),
                    None => println!(
                        "{:<5} {:<22} its Raft peer has stopped",
                        report.node.id, address
                    ),
                }
            }
            Err(why) => println!("{:<5} {:<22} {why}", report.node.id, address),
        }
    }
    let majority = config.nodes.len() / 2 + 1;
    if answered < majority {
        return Err(Failure::Unavailable(format!(
            "only {answered} of {} nodes answered; the cluster needs {majority} to serve",
            config.nodes.len()
        )));
    }
    if leaders == 0 {
        println!("no node leads right now (an election may be under way)");
    }
    if let Ok(report) = client.members(limit).await {
        if let Some(note) = members_differ(config, &report.members) {
            println!("{note}");
        }
    }
    Ok(())
}

/// A note when the log's members are not the file's nodes: the file seeds the first members
/// only, and the log is the truth after that.
fn members_differ(config: &ClusterFile, members: &[MemberReport]) -> Option<String> {
    let file: Vec<usize> = config.nodes.iter().map(|node| node.id).collect();
    let voters: Vec<usize> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let learners: Vec<usize> = members.iter().filter(|m| !m.voter).map(|m| m.id).collect();
    (voters != file || !learners.is_empty()).then(|| {
        format!(
            "members (from the log, which is the truth): voters {voters:?}, learners \
             {learners:?}; the file's nodes {file:?} were only the first members"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_hex_says_why() {
        assert_eq!(from_hex("00fF41"), Ok(vec![0, 0xff, b'A']));
        assert_eq!(from_hex(""), Ok(vec![]));
        assert_eq!(to_hex(&[0, 0xff, b'A']), "00ff41");
        let odd = from_hex("abc").unwrap_err();
        assert!(odd.contains("odd number of digits"), "{odd}");
        let bad = from_hex("0g").unwrap_err();
        assert!(bad.contains("'g' at 1"), "{bad}");
        // A multi-byte character is not a digit (and does not split a char).
        assert!(from_hex("é0").is_err());
    }

    #[test]
    fn value_arguments() {
        let value_argument = |text: &str, hex| value_argument(text, hex, &mut &b"piped\0"[..]);
        assert_eq!(value_argument("plain", false), Ok(Bytes::from("plain")));
        assert_eq!(value_argument("@@at", false), Ok(Bytes::from("@at")));
        assert_eq!(value_argument("-", false), Ok(Bytes::from("piped\0")));
        assert_eq!(value_argument("@-", true), Ok(Bytes::from("piped\0")));
        assert_eq!(value_argument("@@-", false), Ok(Bytes::from("@-")));
        // Hex never starts with '@', so the escape only means something for text.
        assert!(value_argument("@@00", true).is_err());
        assert_eq!(value_argument("4142", true), Ok(Bytes::from("AB")));
        let missing = value_argument("@/nonexistent/rainkv-value", false).unwrap_err();
        assert!(missing.contains("cannot read the value file"), "{missing}");
        let dir = std::env::temp_dir().join(format!("rainkv-ctl-{}", std::process::id()));
        std::fs::write(&dir, b"\0raw\xff").expect("write");
        let from_file = value_argument(&format!("@{}", dir.display()), true);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(from_file, Ok(Bytes::from_static(b"\0raw\xff")));
    }

    #[test]
    fn values_print_as_text_or_hex() {
        assert!(matches!(printable(Some(b"hi"), false), Ok(s) if s == "hi"));
        assert!(matches!(printable(None, false), Ok(s) if s.is_empty()));
        assert!(matches!(printable(Some(b"\0\xff"), true), Ok(s) if s == "00ff"));
        let refused = printable(Some(b"\xff"), false);
        assert!(matches!(refused, Err(Failure::Usage(m)) if m.contains("--hex")));
    }
}
