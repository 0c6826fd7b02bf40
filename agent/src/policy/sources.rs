//! Where policy and set files come from: the files given, bounded walks of policy
//! directories, and the search for the sets a policy `include`s.
//!
//! A policy file given alone is read alone, plus the sets it includes. A set named
//! `NAME` is looked for, in order:
//!
//! 1. among the files given (on the command line, or found in the agent's policy
//!    directory), by `metadata.name`;
//! 2. beside the including file: `NAME.yaml` or `NAME.yml` in its own directory, then in
//!    that directory's `sets/` (not if `sets` is a symlink); nothing is walked;
//! 3. `NAME.yaml` or `NAME.yml` in the `--sets DIR` directory;
//! 4. the sets shipped with sysfence ([`super::SHIPPED_SETS`]). An include in a shipped
//!    set is not looked for on disk (steps 2 and 3).
//!
//! A candidate that is not a set of that name (a policy, another set, a directory) is
//! passed over, and reported as skipped; one that cannot be read or does not parse is
//! an error. An include that resolves nowhere is an error at its file:line that lists
//! what was searched.
//!
//! A directory (`sysfence agent --policies DIR`, `sysfence check DIR`) gives its
//! `*.yaml` and `*.yml` files and those of its subdirectories, by a [`walk`] bounded
//! by [`Limits::POLICY_DIR`]: at most 4 levels below DIR and 10000 entries in all;
//! directories on another filesystem than DIR's are not entered; a directory reached
//! again (a symlink loop such as `a -> .`, or a second link to one already read) and a
//! file reached again are read once. Hidden entries (names starting with `.`) are not
//! read: kubelet mounts a ConfigMap as a timestamped `..2026_...` directory, a `..data`
//! link to it, and one link per key beside them; the links are what the walk reads.
//! Everything else a walk passes over is reported, with its path and the reason.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt, fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use marked_yaml::Spanned;

use super::{
    SHIPPED_SETS,
    compile::{SetCatalog, Unresolved},
    diag::{Diagnostic, start},
    model::{self, Document, SetDoc},
};

/// How far a walk goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Levels of subdirectories read below the root (0: the root alone).
    pub max_depth: usize,
    /// Directory entries looked at, in all; past it the walk stops (an error).
    pub max_entries: usize,
}

impl Limits {
    /// The walk of a policy directory (`agent --policies`, `check DIR`).
    pub const POLICY_DIR: Limits = Limits {
        max_depth: 4,
        max_entries: 10_000,
    };
}

/// Why a walk or a set search passed over a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A directory that leads back to one being read (`a -> .`).
    Loop { back_to: PathBuf },
    /// A symlink that leads to itself (the kernel's ELOOP).
    SymlinkLoop,
    /// A directory already read under another path.
    DirAlreadyRead { first: PathBuf },
    /// A file already read under another path (a symlink or hard link to it).
    FileAlreadyRead { first: PathBuf },
    /// A directory deeper than [`Limits::max_depth`].
    TooDeep { max_depth: usize },
    /// A directory on another filesystem than the walk's root.
    OtherFilesystem,
    /// A symlink to nothing (a ConfigMap mid-update, a removed file).
    Dangling,
    /// The walk stopped here: more than [`Limits::max_entries`] entries.
    TooManyEntries { max_entries: usize },
    /// A directory that cannot be listed, or a path that cannot be looked at.
    Unreadable(String),
    /// Not a policy or set file: not `*.yaml`/`*.yml`, not a regular file, or (in a set
    /// search) a file that holds something else.
    NotPolicy(String),
    /// A `sets/` beside a policy that is a symlink: set searches follow no symlinked
    /// directory.
    SymlinkedSetsDir,
}

impl Skip {
    /// Whether passing over this path may lose a policy that was meant to be read: the
    /// load then fails (and the agent keeps the policies in force).
    pub fn is_error(&self) -> bool {
        matches!(self, Skip::Unreadable(_) | Skip::TooManyEntries { .. })
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Loop { back_to } => write!(
                f,
                "a symlink loop: it leads back to {}, which is being read",
                back_to.display()
            ),
            Skip::SymlinkLoop => f.write_str("a symlink loop: it leads to itself"),
            Skip::DirAlreadyRead { first } => {
                write!(f, "the same directory as {}, read once", first.display())
            }
            Skip::FileAlreadyRead { first } => {
                write!(f, "the same file as {}, read once", first.display())
            }
            Skip::TooDeep { max_depth } => write!(
                f,
                "more than {max_depth} directory levels below the policy directory"
            ),
            Skip::OtherFilesystem => f.write_str(
                "on another filesystem than the policy directory (walks do not leave it)",
            ),
            Skip::Dangling => f.write_str("a symlink to nothing"),
            Skip::TooManyEntries { max_entries } => write!(
                f,
                "more than {max_entries} entries: the walk stopped here; is this the \
                 policy directory?"
            ),
            Skip::Unreadable(e) => write!(f, "cannot read: {e}"),
            Skip::NotPolicy(why) => write!(f, "not a policy: {why}"),
            Skip::SymlinkedSetsDir => f.write_str(
                "a symlink: set searches follow no symlinked directory (name it with --sets)",
            ),
        }
    }
}

/// A path passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: Skip,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What a walk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The `*.yaml`/`*.yml` files, in walk order (entries sorted by name).
    pub files: Vec<PathBuf>,
    /// The directories read, the root first (what the agent's watcher watches).
    pub dirs: Vec<PathBuf>,
    pub skipped: Vec<Skipped>,
}

/// Walk `root` for policy files, within `limits`. Fails only when `root` itself is not
/// a readable directory; everything else it passes over is in [`Walk::skipped`].
pub fn walk(root: &Path, limits: Limits) -> io::Result<Walk> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let id = (meta.dev(), meta.ino());
    let mut walker = Walker {
        limits,
        dev: meta.dev(),
        entries: 0,
        stopped: false,
        dirs_seen: HashMap::from([(id, root.to_path_buf())]),
        files_seen: HashMap::new(),
        out: Walk::default(),
    };
    let mut ancestors = vec![(id, root.to_path_buf())];
    walker.read_dir(root, 0, &mut ancestors)?;
    Ok(walker.out)
}

type FileId = (u64, u64);

struct Walker {
    limits: Limits,
    /// The root's filesystem.
    dev: u64,
    entries: usize,
    stopped: bool,
    dirs_seen: HashMap<FileId, PathBuf>,
    files_seen: HashMap<FileId, PathBuf>,
    out: Walk,
}

impl Walker {
    fn skip(&mut self, path: &Path, reason: Skip) {
        self.out.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    }

    fn read_dir(
        &mut self,
        dir: &Path,
        depth: usize,
        ancestors: &mut Vec<(FileId, PathBuf)>,
    ) -> io::Result<()> {
        let mut entries = Vec::new();
        for e in fs::read_dir(dir)? {
            match e {
                Ok(e) => entries.push(e.path()),
                Err(e) => self.skip(dir, Skip::Unreadable(e.to_string())),
            }
        }
        entries.sort();
        self.out.dirs.push(dir.to_path_buf());
        for path in entries {
            if self.stopped {
                return Ok(());
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                self.stopped = true;
                let max_entries = self.limits.max_entries;
                self.skip(dir, Skip::TooManyEntries { max_entries });
                return Ok(());
            }
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let reason = stat_failure(&path, &e);
                    self.skip(&path, reason);
                    continue;
                }
            };
            let id = (meta.dev(), meta.ino());
            if meta.is_dir() {
                if let Some((_, back_to)) = ancestors.iter().find(|(a, _)| *a == id) {
                    let back_to = back_to.clone();
                    self.skip(&path, Skip::Loop { back_to });
                } else if meta.dev() != self.dev {
                    self.skip(&path, Skip::OtherFilesystem);
                } else if let Some(first) = self.dirs_seen.get(&id) {
                    let first = first.clone();
                    self.skip(&path, Skip::DirAlreadyRead { first });
                } else if depth + 1 > self.limits.max_depth {
                    let max_depth = self.limits.max_depth;
                    self.skip(&path, Skip::TooDeep { max_depth });
                } else {
                    self.dirs_seen.insert(id, path.clone());
                    ancestors.push((id, path.clone()));
                    if let Err(e) = self.read_dir(&path, depth + 1, ancestors) {
                        self.skip(&path, Skip::Unreadable(e.to_string()));
                    }
                    ancestors.pop();
                }
            } else if !meta.is_file() {
                self.skip(&path, Skip::NotPolicy("not a regular file".into()));
            } else if !is_yaml(&path) {
                self.skip(&path, Skip::NotPolicy("not a *.yaml or *.yml file".into()));
            } else if let Some(first) = self.files_seen.get(&id) {
                let first = first.clone();
                self.skip(&path, Skip::FileAlreadyRead { first });
            } else {
                self.files_seen.insert(id, path.clone());
                self.out.files.push(path);
            }
        }
        Ok(())
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Why `stat` on `path` failed, as a skip.
fn stat_failure(path: &Path, e: &io::Error) -> Skip {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if e.raw_os_error() == Some(libc::ELOOP) {
        Skip::SymlinkLoop
    } else if is_link && e.kind() == io::ErrorKind::NotFound {
        Skip::Dangling
    } else {
        Skip::Unreadable(e.to_string())
    }
}

/// Where an included set was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Among the files given (command line, the agent's policy directory).
    Given,
    /// `NAME.yaml` in the including file's own directory.
    Beside,
    /// `NAME.yaml` in the `sets/` directory beside the including file.
    BesideSets,
    /// `NAME.yaml` in the `--sets` directory.
    SetsDir,
    /// Compiled into sysfence.
    Shipped,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Given => "given",
            Origin::Beside => "beside the including file",
            Origin::BesideSets => "in the sets/ beside the including file",
            Origin::SetsDir => "in --sets",
            Origin::Shipped => "shipped with sysfence",
        })
    }
}

/// A directory searched for sets, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub dir: PathBuf,
    pub origin: Origin,
}

/// The directories searched, in order, for a set included from `from` (step 2 and 3
/// of the module docs). Pure: whether they exist is for the caller to find out.
pub fn search_dirs(from: &Path, sets_dir: Option<&Path>) -> Vec<Place> {
    let mut places = Vec::new();
    if !is_shipped(from) {
        let own = match from.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        places.push(Place {
            dir: own.join("sets"),
            origin: Origin::BesideSets,
        });
        places.insert(
            0,
            Place {
                dir: own,
                origin: Origin::Beside,
            },
        );
        if let Some(d) = sets_dir {
            places.push(Place {
                dir: d.to_path_buf(),
                origin: Origin::SetsDir,
            });
        }
    }
    places
}

/// The file names a set `name` may have in a searched directory; none when the name
/// cannot be a file name (it holds `/`, or starts with `.`).
pub fn candidate_names(name: &str) -> Vec<String> {
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        return Vec::new();
    }
    vec![format!("{name}.yaml"), format!("{name}.yml")]
}

fn is_shipped(path: &Path) -> bool {
    path.starts_with(SHIPPED_PREFIX)
}

/// The pseudo directory of the shipped sets' paths.
pub const SHIPPED_PREFIX: &str = "<shipped>";

/// A file read, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFile {
    pub path: PathBuf,
    /// `policy `web``, `set `base``, ...
    pub holds: String,
}

impl fmt::Display for ReadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.holds)
    }
}

/// An include, and the set it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetUse {
    pub name: String,
    /// The set's file (`<shipped>/sets/NAME.yaml` for a shipped one).
    pub file: PathBuf,
    pub origin: Origin,
    /// The first include that led to it: file and line.
    pub included_at: (PathBuf, usize),
    /// The directories searched before it was found (none when given).
    pub searched: Vec<PathBuf>,
}

impl fmt::Display for SetUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: ", self.name)?;
        if self.origin == Origin::Shipped {
            write!(f, "shipped with sysfence")?;
        } else {
            write!(f, "{} ({})", self.file.display(), self.origin)?;
        }
        write!(
            f,
            ", included at {}:{}",
            self.included_at.0.display(),
            self.included_at.1
        )?;
        if !self.searched.is_empty() {
            write!(f, "; not in {}", display_dirs(&self.searched))?;
        }
        Ok(())
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| {
            let d = d.display().to_string();
            if d.ends_with('/') { d } else { d + "/" }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type SetEntry = Arc<(PathBuf, SetDoc)>;

#[derive(Clone)]
enum Found {
    Set {
        entry: SetEntry,
        origin: Origin,
        searched: Vec<PathBuf>,
    },
    Missing(Unresolved),
}

/// Resolves includes for one load, reading each candidate file at most once.
pub(super) struct Resolver<'a> {
    sets_dir: Option<&'a Path>,
    given: BTreeMap<String, SetEntry>,
    shipped: BTreeMap<String, SetEntry>,
    /// By (the including file's directory, name); shipped includes by ("<shipped>", name).
    cache: HashMap<(PathBuf, String), Found>,
    read_once: HashSet<PathBuf>,
    pub read: Vec<ReadFile>,
    pub skipped: Vec<Skipped>,
    pub diagnostics: Vec<Diagnostic>,
    pub uses: Vec<SetUse>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(sets_dir: Option<&'a Path>, given: BTreeMap<String, SetEntry>) -> Self {
        let shipped = SHIPPED_SETS
            .iter()
            .map(|(path, text)| match model::parse(Path::new(path), text) {
                Ok(Document::Set(set)) => (
                    set.metadata.name.to_string(),
                    Arc::new((PathBuf::from(path), *set)),
                ),
                Ok(Document::Policy(_)) => panic!("{path}: shipped set is a policy"),
                Err(d) => panic!("shipped set does not parse: {d}"),
            })
            .collect();
        Resolver {
            sets_dir,
            given,
            shipped,
            cache: HashMap::new(),
            read_once: HashSet::new(),
            read: Vec::new(),
            skipped: Vec::new(),
            diagnostics: Vec::new(),
            uses: Vec::new(),
        }
    }

    /// The catalog a document needs: `first` (a given set being checked) and every set
    /// reached from `includes` (of the file `from`), each include resolved from the
    /// file that holds it. Includes that resolve nowhere are noted in the catalog, so
    /// that compiling gives their error with what was searched.
    pub(super) fn catalog_for(
        &mut self,
        from: &Path,
        first: Option<SetEntry>,
        includes: &[Spanned<String>],
    ) -> SetCatalog {
        let mut catalog = SetCatalog::default();
        let mut todo: Vec<(PathBuf, Spanned<String>)> = Vec::new();
        if let Some(entry) = first {
            todo.extend(
                entry
                    .1
                    .spec
                    .include
                    .iter()
                    .map(|i| (entry.0.clone(), i.clone())),
            );
            catalog.insert_shared(entry);
        }
        todo.extend(includes.iter().map(|i| (from.to_path_buf(), i.clone())));
        todo.reverse();
        let mut done: HashSet<(PathBuf, String)> = HashSet::new();
        while let Some((including, name)) = todo.pop() {
            if !done.insert((including.clone(), name.to_string())) {
                continue;
            }
            match self.resolve(&name, &including) {
                Found::Set {
                    entry,
                    origin,
                    searched,
                } => {
                    if let Some(other) = catalog.get_shared(&name)
                        && other.0 != entry.0
                    {
                        self.diagnostics.push(
                            Diagnostic::error(
                                &including,
                                start(name.span()),
                                format!(
                                    "set `{}` is {} here, but {} for another include of \
                                     the same policy",
                                    *name,
                                    entry.0.display(),
                                    other.0.display()
                                ),
                            )
                            .with_help("give the two sets different names"),
                        );
                        continue;
                    }
                    let line = name.span().start().map_or(0, |m| m.line());
                    if !self
                        .uses
                        .iter()
                        .any(|u| u.name == *name && u.file == entry.0)
                    {
                        self.uses.push(SetUse {
                            name: name.to_string(),
                            file: entry.0.clone(),
                            origin,
                            included_at: (including.clone(), line),
                            searched,
                        });
                    }
                    let more: Vec<_> = entry
                        .1
                        .spec
                        .include
                        .iter()
                        .rev()
                        .map(|i| (entry.0.clone(), i.clone()))
                        .collect();
                    todo.extend(more);
                    catalog.insert_shared(entry);
                }
                Found::Missing(why) => catalog.note_unresolved(&including, &name, why),
            }
        }
        catalog
    }

    fn resolve(&mut self, name: &str, from: &Path) -> Found {
        if let Some(entry) = self.given.get(name) {
            return Found::Set {
                entry: entry.clone(),
                origin: Origin::Given,
                searched: Vec::new(),
            };
        }
        let context = if is_shipped(from) {
            PathBuf::from(SHIPPED_PREFIX)
        } else {
            search_dirs(from, None)[0].dir.clone()
        };
        let key = (context, name.to_string());
        if let Some(found) = self.cache.get(&key) {
            return found.clone();
        }
        let found = self.search(name, from);
        self.cache.insert(key, found.clone());
        found
    }

    fn search(&mut self, name: &str, from: &Path) -> Found {
        let places = search_dirs(from, self.sets_dir);
        let files = candidate_names(name);
        let mut searched = Vec::new();
        for place in &places {
            if place.origin == Origin::BesideSets {
                match fs::symlink_metadata(&place.dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        self.skip_once(&place.dir, Skip::SymlinkedSetsDir);
                        continue;
                    }
                    Ok(m) if m.is_dir() => {}
                    // No `sets/` here: nothing to look at, but it was looked for.
                    _ => {
                        searched.push(place.dir.clone());
                        continue;
                    }
                }
            }
            searched.push(place.dir.clone());
            for file in &files {
                let path = place.dir.join(file);
                match self.candidate(name, &path) {
                    Candidate::Absent => {}
                    Candidate::Set(entry) => {
                        return Found::Set {
                            entry,
                            origin: place.origin,
                            searched: searched[..searched.len() - 1].to_vec(),
                        };
                    }
                    Candidate::Broken(why) => return Found::Missing(why),
                }
            }
        }
        if let Some(entry) = self.shipped.get(name) {
            return Found::Set {
                entry: entry.clone(),
                origin: Origin::Shipped,
                searched,
            };
        }
        let mut where_ = Vec::new();
        if !self.given.is_empty() {
            where_.push(format!(
                "the sets given ({})",
                self.given.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if files.is_empty() {
            where_.push(format!(
                "no directory: `{name}` cannot be a file name (it holds `/` or starts with `.`)"
            ));
        } else if !searched.is_empty() {
            where_.push(format!(
                "{} for {}",
                display_dirs(&searched),
                files.join(" or ")
            ));
        }
        where_.push(format!(
            "the shipped sets ({})",
            self.shipped.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        let mut help = format!("searched {}", where_.join("; "));
        if self.sets_dir.is_none() && !is_shipped(from) && !files.is_empty() {
            help.push_str(&format!(
                "; put {name}.yaml beside {}, or name its directory with --sets DIR",
                from.display()
            ));
        }
        Found::Missing(Unresolved {
            message: format!("unknown set `{name}`"),
            help,
        })
    }

    fn skip_once(&mut self, path: &Path, reason: Skip) {
        let s = Skipped {
            path: path.to_path_buf(),
            reason,
        };
        if !self.skipped.contains(&s) {
            self.skipped.push(s);
        }
    }

    /// Look at one candidate file for set `name`.
    fn candidate(&mut self, name: &str, path: &Path) -> Candidate {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !is_link(path) => {
                return Candidate::Absent;
            }
            Err(e) => {
                let reason = stat_failure(path, &e);
                self.skip_once(path, reason);
                return Candidate::Absent;
            }
        };
        if !meta.is_file() {
            self.skip_once(path, Skip::NotPolicy("not a regular file".into()));
            return Candidate::Absent;
        }
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return Candidate::Broken(Unresolved {
                    message: format!("set `{name}`: {} cannot be read: {e}", path.display()),
                    help: "fix its permissions, or remove it to use the next place searched".into(),
                });
            }
        };
        let first_read = self.read_once.insert(path.to_path_buf());
        let doc = match model::parse(path, &text) {
            Ok(doc) => doc,
            Err(d) => {
                if first_read {
                    self.read.push(ReadFile {
                        path: path.to_path_buf(),
                        holds: "does not parse".into(),
                    });
                    self.diagnostics.push(d);
                }
                return Candidate::Broken(Unresolved {
                    message: format!("set `{name}`: {} does not parse", path.display()),
                    help: "see its error".into(),
                });
            }
        };
        let holds = match &doc {
            Document::Policy(p) => format!("policy `{}`", *p.metadata.name),
            Document::Set(s) => format!("set `{}`", *s.metadata.name),
        };
        if first_read {
            self.read.push(ReadFile {
                path: path.to_path_buf(),
                holds: holds.clone(),
            });
        }
        match doc {
            Document::Set(set) if set.metadata.name.as_str() == name => {
                Candidate::Set(Arc::new((path.to_path_buf(), *set)))
            }
            _ => {
                self.skip_once(
                    path,
                    Skip::NotPolicy(format!("it holds {holds}, not set `{name}`")),
                );
                Candidate::Absent
            }
        }
    }
}

enum Candidate {
    Absent,
    Set(SetEntry),
    Broken(Unresolved),
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Directories the agent watches for changes: those its walk of `dir` reads, and the
/// `--sets` directory.
pub fn watched_dirs(dir: &Path, sets_dir: Option<&Path>) -> io::Result<Vec<PathBuf>> {
    let mut dirs = walk(dir, Limits::POLICY_DIR)?.dirs;
    if let Some(d) = sets_dir
        && d.is_dir()
    {
        dirs.push(d.to_path_buf());
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests;
