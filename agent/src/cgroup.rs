//! cgroup v2: finding the hierarchy, ids, creating and tearing down cgroups.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on a pure v2 system,
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn v2_root() -> anyhow::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: id parent major:minor root mountpoint options ... - fstype source
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found.into_iter().next().ok_or_else(|| {
        anyhow!(
            "no cgroup v2 hierarchy is mounted: sysfence keys policies on cgroup v2 ids; \
             mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
        )
    })
}

/// The cgroup v2 id of a cgroup directory: its inode number.
pub fn id_of(path: &Path) -> anyhow::Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cgroup {}", path.display()))?
        .ino())
}

/// Depth of `rel` below the root (`a/b` is at level 2).
pub fn level(rel: &str) -> u32 {
    rel.split('/').filter(|c| !c.is_empty()).count() as u32
}

/// Every cgroup below `root`, as (path relative to root, absolute path), parents first.
pub fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, abs)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&abs) else {
            continue;
        };
        let mut children: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                (child_rel, e.path())
            })
            .collect();
        children.sort();
        for child in children.into_iter().rev() {
            out.push(child.clone());
            stack.push(child);
        }
    }
    out
}

/// The v2 cgroup of a process, relative to the root.
pub fn of_pid(pid: u32) -> anyhow::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/').to_string())
        .ok_or_else(|| anyhow!("process {pid} has no cgroup v2 entry"))
}

/// A cgroup this process created; removed (after killing what is left in it) on drop.
#[derive(Debug)]
pub struct OwnedCgroup {
    pub path: PathBuf,
    pub rel: String,
    pub id: u64,
}

impl OwnedCgroup {
    /// Create `root/rel`, creating missing parents (which are left in place).
    pub fn create(root: &Path, rel: &str) -> anyhow::Result<OwnedCgroup> {
        let path = root.join(rel);
        if path.exists() {
            bail!("cgroup {} already exists", path.display());
        }
        fs::create_dir_all(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        let id = id_of(&path)?;
        Ok(OwnedCgroup {
            path,
            rel: rel.to_string(),
            id,
        })
    }

    /// An open `cgroup.procs` to move a process in, e.g. from a child before exec.
    pub fn procs_file(&self) -> anyhow::Result<fs::File> {
        fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", self.path.display()))
    }

    pub fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kill every process left in the cgroup and wait until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let kill_file = self.path.join("cgroup.kill");
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if kill_file.exists() {
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .open(&kill_file)
                    .and_then(|mut f| f.write_all(b"1"));
            } else {
                for pid in pids {
                    // SAFETY: plain libc call on a pid read from our own cgroup.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "processes still in {} after {:?}",
                    self.path.display(),
                    timeout
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.kill_all(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "cgroup not emptied");
        }
        // rmdir can fail with EBUSY for a moment after the last task exits.
        for _ in 0..200 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        tracing::warn!(cgroup = %self.path.display(), "could not remove cgroup");
    }
}
