//! `rainkv-ctl`: talk to a running RainKV cluster: `get`, `put`, `append` and `status`.
//!
//! Exit status: 0 on success, 1 when the cluster cannot serve the request in time (the
//! reasons are printed), 2 for a bad command line or configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;
use rainkv::messages::raft::Role;

#[derive(Parser)]
#[command(
    name = "rainkv-ctl",
    version,
    about = "Talk to a running RainKV cluster"
)]
struct Cli {
    /// The cluster configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
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
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Append VALUE to KEY's value.
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Show each node's role, term, commit index and applied index.
    Status,
}

/// Failure to serve the request (exit 1) or a usage error (exit 2).
enum Failure {
    Unavailable(String),
    Usage(String),
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
    let config = ClusterFile::load(&cli.config).map_err(|e| Failure::Usage(e.to_string()))?;
    let limit = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--timeout must be a positive number of seconds, not {}",
                cli.timeout
            ))
        })?;
    let client = ClusterClient::connect(&config);
    let outcome = match cli.command {
        Command::Status => status(&client, &config, limit).await,
        command => kv(&client, &config, command, limit).await,
    };
    client.close();
    outcome
}

async fn kv(
    client: &ClusterClient,
    config: &ClusterFile,
    command: Command,
    limit: Duration,
) -> Result<(), Failure> {
    let clerk = client.clerk();
    let op = async {
        match &command {
            Command::Get { key } => clerk
                .get_string(key.clone())
                .await
                .map(|value| Some(value.unwrap_or_default())),
            Command::Put { key, value } => {
                clerk.put(key.clone(), value.clone()).await.map(|()| None)
            }
            Command::Append { key, value } => clerk
                .append(key.clone(), value.clone())
                .await
                .map(|()| None),
            Command::Status => Ok(None),
        }
    };
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(Some(value))) => {
            println!("{value}");
            Ok(())
        }
        Ok(Ok(None)) => {
            println!("ok");
            Ok(())
        }
        Ok(Err(e)) => Err(Failure::Unavailable(e.to_string())),
        Err(_) => {
            let mut message = format!(
                "cluster {:?} did not serve the request within {limit:?}",
                config.name
            );
            let reasons = client.unreachable_reasons().await;
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
            Ok(s) => {
                answered += 1;
                leaders += usize::from(s.role == Role::Leader);
                println!(
                    "{:<5} {:<22} {:<10} {:>6} {:>10} {:>10}",
                    report.node.id, address, s.role, s.term, s.commit_index, s.last_applied
                );
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
    Ok(())
}
