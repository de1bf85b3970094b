//! etcd for `rainkv bench --scale`: a 3-member etcd cluster (fsync on) started by the
//! repository's `benches/etcd/cluster.sh`, measured by its load generator
//! (`benches/etcd/setup.sh` installs etcd with apt and builds it), the way
//! `benches/vs-etcd.sh` drives them. The scripts are found in the source tree this binary
//! was built from.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::scale::{EtcdBench, EtcdRun, Measured};

/// A running etcd cluster and the load generator that measures it; stopped when dropped.
pub struct EtcdCluster {
    scripts: PathBuf,
    loadgen: PathBuf,
    /// The members' data, logs and pids (`ETCD_ANCHOR_DIR`).
    work: PathBuf,
}

/// Where `benches/etcd` is.
fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/etcd")
}

/// Whether `program` is on the `PATH`.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs `command`, returning its standard output, or why it failed.
fn output(mut command: Command, what: &str) -> Result<String, String> {
    let out = command
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!("{what}: {} ({})", out.status, tail.join(" / ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl EtcdCluster {
    /// Installs what is missing if `install` (else only if etcd is already installed: a
    /// run without `--etcd` never installs anything), builds the load generator and starts
    /// the cluster; `Err` says why etcd is not measured.
    pub fn start(install: bool) -> Result<EtcdCluster, String> {
        if !install && !installed("etcd") {
            return Err("etcd is not installed (give --etcd to install it and compare)".into());
        }
        let scripts = scripts();
        if !scripts.join("setup.sh").is_file() {
            return Err(format!("no {} (run from a source tree)", scripts.display()));
        }
        let setup = output(
            Command::new(scripts.join("setup.sh")),
            "benches/etcd/setup.sh",
        )?;
        let loadgen = setup
            .lines()
            .last()
            .map(PathBuf::from)
            .ok_or("benches/etcd/setup.sh printed no load generator")?;
        let work = std::env::temp_dir().join(format!("rainkv-scale-etcd-{}", std::process::id()));
        let cluster = EtcdCluster {
            scripts,
            loadgen,
            work,
        };
        let mut start = cluster.script("start");
        start.arg("fsync");
        output(start, "benches/etcd/cluster.sh start")?;
        Ok(cluster)
    }

    fn script(&self, verb: &str) -> Command {
        let mut command = Command::new(self.scripts.join("cluster.sh"));
        command.arg(verb).env("ETCD_ANCHOR_DIR", &self.work);
        command
    }
}

/// The value of `name=` in a line of `key=value` words.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// The figures of the load generator's `workload=<name>` line in `out`.
fn parse(out: &str, workload: &str) -> Option<Measured> {
    let line = out
        .lines()
        .find(|l| field(l, "workload") == Some(workload))?;
    let ops_per_s = field(line, "ops_per_s")?.parse().ok()?;
    let p99_ms: f64 = field(line, "p99_ms")?.parse().ok()?;
    Some(Measured {
        ops_per_s,
        p99: Duration::from_secs_f64(p99_ms / 1000.0),
    })
}

impl EtcdBench for EtcdCluster {
    fn measure(&mut self, run: EtcdRun) -> Result<Measured, String> {
        let workload = if run.put { "put" } else { "get" };
        let mut command = Command::new(&self.loadgen);
        command
            .args(["--target", "leader", "--workloads", workload])
            .args(["--concurrency", &run.clients.to_string()])
            .args(["--conns", &run.clients.clamp(1, 8).to_string()])
            .args(["--ops", &run.ops.to_string()])
            .args(["--keyspace", &run.key_space.to_string()])
            .args(["--value-size", &run.value_bytes.to_string()])
            .args(["--warmup", &(run.ops / 10).min(1000).to_string()]);
        let out = output(command, "the etcd load generator")?;
        parse(&out, workload).ok_or_else(|| format!("no {workload} line from the load generator"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if let Err(e) = output(self.script("stop"), "benches/etcd/cluster.sh stop") {
            log::warn!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_generators_line_is_read() {
        let out = "# etcd-bench version=3.4\n\
                   workload=put target=leader conns=8 conc=64 ops=50000 errors=0 secs=3.2 \
                   ops_per_s=15576 mean_ms=4.1 p50_ms=3.9 p99_ms=9.800 p999_ms=14.0\n";
        let m = parse(out, "put").expect("a put line");
        assert_eq!(m.ops_per_s, 15576.0);
        assert_eq!(m.p99, Duration::from_micros(9800));
        assert_eq!(parse(out, "get"), None);
    }
}
