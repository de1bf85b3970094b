//! A writer of acknowledged writes and their read-back, for the process tests that check
//! no acknowledged write is lost while nodes come and go (included by those that use it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rainkv::deploy::client::ClusterClient;
use rainkv::deploy::cluster_file::ClusterFile;

/// A write not acknowledged within this fails the test.
pub const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Puts `w<i>` = `v<i>`, one at a time, on a thread (and actix system) of its own until told
/// to stop; returns when each write was acknowledged, in order. A write not acknowledged
/// within [`WRITE_LIMIT`] fails it.
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Instant>>,
}

impl Writer {
    pub fn start(config: ClusterFile) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = ClusterClient::connect(&config);
                let clerk = client.clerk();
                let mut acked = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let i = acked.len();
                    let put = clerk.put(format!("w{i}"), format!("v{i}"));
                    match tokio::time::timeout(WRITE_LIMIT, put).await {
                        Ok(Ok(())) => acked.push(Instant::now()),
                        Ok(Err(e)) => panic!("put w{i}: {e}"),
                        Err(_) => panic!(
                            "put w{i} not acknowledged within {WRITE_LIMIT:?}; the nodes: {:?}",
                            client.status(Duration::from_millis(500)).await
                        ),
                    }
                }
                client.close();
                acked
            })
        });
        Writer { stop, thread }
    }

    pub fn stop(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer failed")
    }
}

/// Reads back the first `count` writes of a [`Writer`] (`w<i>` = `v<i>`); fails the test
/// naming any that are missing or wrong.
pub fn assert_acknowledged_writes_kept(cluster: &ClusterFile, count: usize) {
    let cluster = cluster.clone();
    let lost: Vec<usize> = actix_rt::System::new().block_on(async move {
        let client = ClusterClient::connect(&cluster);
        let clerk = client.clerk();
        let mut lost = Vec::new();
        for i in 0..count {
            let read = tokio::time::timeout(WRITE_LIMIT, clerk.get_string(format!("w{i}"))).await;
            match read {
                Ok(Ok(Some(value))) if value == format!("v{i}") => {}
                _ => lost.push(i),
            }
        }
        client.close();
        lost
    });
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
