//! sysfence: per-container syscall allowlists enforced by eBPF.
//!
//! The binary is in `main.rs`; this library holds everything it is made of, so that
//! tests can reach it.

pub mod agent;
pub mod api;
pub mod cgroup;
pub mod check;
pub mod clock;
pub mod doctor;
pub mod event;
pub mod gvisor;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod probe;
pub mod record;
pub mod report;
pub mod run;
pub mod seccomp;
pub mod status;
pub mod syscall_table;
pub mod undo;
pub mod watch;
pub mod workload;
