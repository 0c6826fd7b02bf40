//! sysfence: per-container syscall allowlists enforced by eBPF.
//!
//! The binary is in `main.rs`; this library holds everything it is made of, so that
//! tests can reach it.

pub mod policy;
pub mod syscall_table;
