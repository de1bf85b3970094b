//! Running RainKV for real: nodes on TCP, configured from a file, and the programs built on
//! them (the `rainkv` and `rainkv-ctl` binaries are thin shells over this module).
//!
//! - [`config`]: the cluster configuration file (TOML).

pub mod config;
