//! The kernels to boot: the newest /boot/vmlinuz-* of each series, or those a pattern
//! names.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, bail};

pub(super) fn boot_has_6_12() -> bool {
    kernels(Some("6.12")).is_ok()
}

pub(super) struct Kernel {
    pub(super) release: String,
    pub(super) path: PathBuf,
}

impl Kernel {
    /// Its release's series, to tag its lines.
    pub(super) fn series(&self) -> String {
        series(&self.release)
    }
}

/// A kernel release's `major.minor` (`6.12` of `6.12.118+deb12-amd64`).
pub(super) fn series(release: &str) -> String {
    release
        .split(['.', '-', '+'])
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// Sort key of a kernel release: digit runs compare as numbers (6.1.0-9 < 6.1.0-10).
pub(super) fn version_key(release: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = release;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (n, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        key.push((n.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    key
}

/// Whether `release` contains `pat` not followed by a digit (`6.1` is not in `6.12.5`).
pub(super) fn release_matches(release: &str, pat: &str) -> bool {
    release.match_indices(pat).any(|(i, _)| {
        !release[i + pat.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

pub(super) fn kernels(pat: Option<&str>) -> anyhow::Result<Vec<Kernel>> {
    let mut all: Vec<Kernel> = fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some(Kernel {
                release,
                path: e.path(),
            })
        })
        .collect();
    all.sort_by_key(|k| version_key(&k.release));
    let found: Vec<String> = all.iter().map(|k| k.release.clone()).collect();
    if let Some(pat) = pat {
        all.retain(|k| release_matches(&k.release, pat));
    }
    // The newest of each series (6.1, 6.12): older ABIs stay in /boot after upgrades.
    let series = |k: &Kernel| k.release.split('.').take(2).collect::<Vec<_>>().join(".");
    let mut newest: Vec<Kernel> = Vec::new();
    for k in all {
        if newest.last().is_some_and(|last| series(last) == series(&k)) {
            newest.pop();
        }
        newest.push(k);
    }
    let all = newest;
    if all.is_empty() {
        bail!(
            "no kernel {}in /boot (found: {})",
            pat.map_or(String::new(), |p| format!("matching `{p}` ")),
            if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            }
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernels_series_is_its_major_and_minor() {
        let k = |r: &str| Kernel {
            release: r.into(),
            path: PathBuf::new(),
        };
        assert_eq!(k("6.1.0-57-amd64").series(), "6.1");
        assert_eq!(k("6.12.118+deb12-amd64").series(), "6.12");
    }

    #[test]
    fn kernel_patterns_do_not_cross_minor_versions() {
        assert!(release_matches("6.1.0-37-amd64", "6.1"));
        assert!(!release_matches("6.12.38+deb12-amd64", "6.1"));
        assert!(release_matches("6.12.38+deb12-amd64", "6.12"));
        assert!(release_matches("6.12.38+deb12-amd64", "amd64"));
    }

    #[test]
    fn releases_sort_as_versions() {
        let mut r = [
            "6.1.0-10-amd64",
            "6.12.9+deb12-amd64",
            "6.1.0-9-amd64",
            "6.12.117+deb12-amd64",
        ];
        r.sort_by_key(|r| version_key(r));
        assert_eq!(
            r,
            [
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.12.9+deb12-amd64",
                "6.12.117+deb12-amd64"
            ]
        );
    }
}
