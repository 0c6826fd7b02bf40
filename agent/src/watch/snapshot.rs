//! What a data source of `watch` (and `record`) produces: cumulative counts per
//! workload per (ABI, syscall), with the workload's identity and its policy.

use std::{collections::BTreeMap, fmt, str::FromStr};

use probe_common::Abi;
use serde::{Deserialize, Serialize};

use crate::{policy::selector::Glob, syscall_table};

/// One syscall of one ABI, written `abi:name` (`x86_64:read`, `i386:mount`), as the
/// agent API keys its counts. `name` is the kernel's name, `#N` for a number without
/// one, or `unclassified` (ABI `unknown`) for what the probe could not classify.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyscallKey {
    pub abi: String,
    pub name: String,
}

impl SyscallKey {
    pub fn new(abi: &str, name: &str) -> SyscallKey {
        SyscallKey {
            abi: abi.to_string(),
            name: name.to_string(),
        }
    }

    /// The key of a probe counter index.
    pub fn of_index(index: u32) -> SyscallKey {
        let (abi, name) = syscall_table::describe_index(index);
        SyscallKey {
            abi: abi.map_or("unknown", Abi::name).to_string(),
            name,
        }
    }

    pub fn abi(&self) -> Option<Abi> {
        Abi::ALL.into_iter().find(|a| a.name() == self.abi)
    }

    /// The probe's counter index, when the key names a real syscall of a known ABI.
    pub fn index(&self) -> Option<u32> {
        let abi = self.abi()?;
        match self.name.strip_prefix('#') {
            Some(nr) => probe_common::syscall_index(abi, nr.parse().ok()?),
            None => syscall_table::index_of(abi, &self.name),
        }
    }

    /// Whether a policy can name it: a known ABI and a syscall name (not `#N`).
    pub fn nameable(&self) -> bool {
        self.abi().is_some() && syscall_table::all_names().contains(self.name.as_str())
    }

    /// `mount (i386)` for other ABIs, bare `read` for x86_64, as reports print it.
    pub fn label(&self) -> String {
        match self.abi() {
            Some(abi) => syscall_table::label(Some(abi), &self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for SyscallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.abi, self.name)
    }
}

impl FromStr for SyscallKey {
    type Err = String;
    fn from_str(s: &str) -> Result<SyscallKey, String> {
        match s.split_once(':') {
            Some((abi, name)) if !abi.is_empty() && !name.is_empty() => {
                Ok(SyscallKey::new(abi, name))
            }
            _ => Err(format!("`{s}`: expected ABI:SYSCALL, e.g. `x86_64:read`")),
        }
    }
}

impl Serialize for SyscallKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SyscallKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Counts keyed by syscall.
pub type Counts = BTreeMap<SyscallKey, u64>;

/// Who a workload is. Empty strings where a field is unknown (as in the agent's logs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub cgroup_id: u64,
    /// Relative to the cgroup v2 root.
    pub cgroup: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub image: String,
    pub runtime: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Identity {
    /// A short name for tables: `namespace/pod/container`, else the container id's
    /// first 12 characters, else the cgroup path.
    pub fn display_name(&self) -> String {
        if !self.pod.is_empty() || !self.namespace.is_empty() {
            let mut parts = vec![self.namespace.as_str(), self.pod.as_str()];
            if !self.container.is_empty() {
                parts.push(&self.container);
            }
            return parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("/");
        }
        if !self.container.is_empty() {
            return self.container.clone();
        }
        if !self.container_id.is_empty() {
            return self.container_id.chars().take(12).collect();
        }
        if self.cgroup.is_empty() {
            format!("cgroup #{}", self.cgroup_id)
        } else {
            self.cgroup.clone()
        }
    }
}

/// One workload in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    pub identity: Identity,
    /// The policy bound to it and its mode, when the source knows (the agent does; the
    /// standalone probe does not police).
    pub policy: Option<String>,
    pub mode: Option<String>,
    /// Cumulative since the source began watching this workload.
    pub counts: Counts,
    /// Cumulative violations (syscalls outside the policy), agent source only.
    pub violations: Counts,
    /// The workload went away: these are its last counts.
    pub gone: bool,
}

/// Everything a source knows at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Unix time, milliseconds.
    pub t_ms: u64,
    pub workloads: Vec<WorkloadCounts>,
}

/// `--namespace`, `--pod`, `--container`, `--cgroup`: every filter given must match.
/// Names match exactly; `cgroup` is a glob under the cgroup v2 root where `*` stops at
/// `/`, as a policy's `cgroupPath`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.cgroup.is_none()
    }

    /// Check the cgroup glob.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(g) = &self.cgroup {
            Glob::path(g.trim_start_matches('/'))
                .map_err(|e| anyhow::anyhow!("--cgroup `{g}`: not a valid glob: {e}"))?;
        }
        Ok(())
    }

    pub fn cgroup_matches(&self, path: &str) -> bool {
        match &self.cgroup {
            None => true,
            Some(g) => Glob::path(g.trim_start_matches('/'))
                .is_ok_and(|g| g.matches(path.trim_start_matches('/'))),
        }
    }

    pub fn matches(&self, w: &Identity) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|v| v == have);
        eq(&self.namespace, &w.namespace)
            && eq(&self.pod, &w.pod)
            && eq(&self.container, &w.container)
            && self.cgroup_matches(&w.cgroup)
    }
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// A time in Unix milliseconds (0 before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `3h 2m`, `45s`, `1.2s`: a span for people.
pub fn human_span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..10 => format!("{:.1}s", ms as f64 / 1000.0),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `2026-11-29T01:02:03.456Z` from unix milliseconds.
pub fn iso_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms as i64);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // RFC 3339 drops a zero fraction; reports line up better with it always there.
    match text.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.000Z"),
        _ => text,
    }
}

/// Unix milliseconds of an RFC 3339 time (`2026-11-29T01:02:03.456789Z`, or with a
/// `+01:00` offset), as tracing's JSON logs write `timestamp`.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_resolve() {
        let k: SyscallKey = "i386:mount".parse().unwrap();
        assert_eq!(k.to_string(), "i386:mount");
        assert_eq!(k.label(), "mount (i386)");
        assert_eq!(k.index(), syscall_table::index_of(Abi::Ia32, "mount"));
        let read = SyscallKey::of_index(0);
        assert_eq!(read, SyscallKey::new("x86_64", "read"));
        assert_eq!(read.label(), "read");
        let un = SyscallKey::of_index(probe_common::UNCLASSIFIED_INDEX);
        assert_eq!(un.to_string(), "unknown:unclassified");
        assert!(un.index().is_none() && !un.nameable());
        assert!("nocolon".parse::<SyscallKey>().is_err());
    }

    #[test]
    fn filters_match_like_selectors() {
        let w = Identity {
            cgroup: "kubepods/burstable/podabc/cri-containerd-1".into(),
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: "nginx".into(),
            ..Identity::default()
        };
        assert!(Filters::default().matches(&w));
        let f = Filters {
            namespace: Some("shop".into()),
            cgroup: Some("kubepods/*/pod*/*".into()),
            ..Filters::default()
        };
        assert!(f.matches(&w));
        let f = Filters {
            cgroup: Some("kubepods/*".into()),
            ..Filters::default()
        };
        assert!(!f.matches(&w), "`*` stops at `/`");
        let f = Filters {
            pod: Some("web-2".into()),
            ..Filters::default()
        };
        assert!(!f.matches(&w));
    }

    #[test]
    fn times_round_trip() {
        let ms = 1_795_914_123_456;
        let text = iso_ms(ms);
        assert_eq!(parse_rfc3339_ms(&text), Some(ms));
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T00:00:01.5Z"),
            Some(1500),
            "fractions shorter than ms"
        );
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T01:00:00.000123+01:00"),
            Some(0)
        );
        assert_eq!(parse_rfc3339_ms("2026-02-30"), None);
        assert_eq!(human_span(3 * 3600 * 1000 + 120_000), "3h 2m");
        assert_eq!(human_span(45_000), "45s");
    }
}
