//! The agent's local API: a unix socket speaking JSON lines, for `sysfence status`,
//! `sysfence report` and `sysfence watch`.
//!
//! - [`protocol`]: the requests and answers (the contract);
//! - [`server`]: the agent's side (peer check, bounded requests, bounded connections);
//! - [`client`]: the CLI's side.
//!
//! A client writes one request line and reads answer lines until the agent closes the
//! connection (`status` and `events`: one line; `watch`: one line per second until the
//! client hangs up).

pub mod client;
pub mod protocol;
pub mod server;

use std::path::PathBuf;

/// Where the agent listens, and the CLI connects, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sysfence/api.sock";

/// The API socket path for a CLI: the flag, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}
