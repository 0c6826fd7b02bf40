use std::os::unix::fs::symlink;

use super::*;
use crate::policy::{load, load_paths, set_names};

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn set(name: &str, syscalls: &str) -> String {
    format!(
        "apiVersion: sysfence.dev/v1\nkind: SyscallSet\nmetadata:\n  name: {name}\nspec:\n  syscalls: [{syscalls}]\n"
    )
}

fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn reasons(w: &[Skipped]) -> Vec<(String, Skip)> {
    w.iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.reason.clone(),
            )
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: plain libc call.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_walk_reads_a_directory_with_symlink_loops_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("p.yaml"), &policy("p", "  allow: [read]\n"));
    symlink(".", root.join("a")).unwrap();
    symlink(".", root.join("b")).unwrap();
    // A loop further down, back to the root.
    fs::create_dir(root.join("sub")).unwrap();
    symlink("..", root.join("sub/up")).unwrap();
    let w = walk(root, Limits::POLICY_DIR).unwrap();
    assert_eq!(w.files, vec![root.join("p.yaml")]);
    assert_eq!(w.dirs, vec![root.to_path_buf(), root.join("sub")]);
    let back = |p: &Path| Skip::Loop {
        back_to: p.to_path_buf(),
    };
    assert_eq!(
        reasons(&w.skipped),
        vec![
            ("a".into(), back(root)),
            ("b".into(), back(root)),
            ("up".into(), back(root)),
        ]
    );
    assert!(w.skipped.iter().all(|s| !s.reason.is_error()));
    assert!(
        w.skipped[0]
            .to_string()
            .contains("a symlink loop: it leads back to"),
        "{}",
        w.skipped[0]
    );
}

#[test]
fn a_walk_stops_at_its_depth_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = dir.path().to_path_buf();
    for level in 1..=6 {
        d = d.join(format!("d{level}"));
        write(
            &d.join(format!("p{level}.yaml")),
            &set(&format!("s{level}"), ""),
        );
    }
    let w = walk(dir.path(), Limits::POLICY_DIR).unwrap();
    // Depth first: a directory's entries in name order (d1/d2 before d1/p1.yaml).
    let names: Vec<_> = w
        .files
        .iter()
        .rev()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["p1.yaml", "p2.yaml", "p3.yaml", "p4.yaml"]);
    assert_eq!(
        reasons(&w.skipped),
        vec![("d5".into(), Skip::TooDeep { max_depth: 4 })]
    );
    // Depth 0: the root alone.
    let limits = Limits {
        max_depth: 0,
        max_entries: 100,
    };
    let w = walk(dir.path(), limits).unwrap();
    assert!(w.files.is_empty());
    assert_eq!(
        reasons(&w.skipped),
        vec![("d1".into(), Skip::TooDeep { max_depth: 0 })]
    );
}

#[test]
fn a_walk_of_a_huge_tree_stops_and_that_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        write(&dir.path().join(format!("sub/f{i:02}.yaml")), "");
    }
    let limits = Limits {
        max_depth: 4,
        max_entries: 20,
    };
    let w = walk(dir.path(), limits).unwrap();
    // `sub` itself is the first entry.
    assert_eq!(w.files.len(), 19);
    assert_eq!(w.skipped.len(), 1);
    assert_eq!(w.skipped[0].path, dir.path().join("sub"));
    assert!(w.skipped[0].reason.is_error());
    assert!(
        w.skipped[0].to_string().contains("more than 20 entries"),
        "{}",
        w.skipped[0]
    );
}

#[test]
fn a_walk_reports_what_is_not_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("a.yaml"), "");
    write(&root.join("README.md"), "");
    symlink("a.yaml", root.join("b.yml")).unwrap();
    symlink("missing.yaml", root.join("c.yaml")).unwrap();
    symlink("d.yaml", root.join("d.yaml")).unwrap();
    let fifo =
        std::ffi::CString::new(root.join("e.yaml").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: plain libc call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    fs::create_dir(root.join("real")).unwrap();
    write(&root.join("real/r.yaml"), "");
    symlink("real", root.join("s")).unwrap();
    write(&root.join(".hidden.yaml"), "");
    let w = walk(root, Limits::POLICY_DIR).unwrap();
    assert_eq!(w.files, vec![root.join("a.yaml"), root.join("real/r.yaml")]);
    assert_eq!(
        reasons(&w.skipped),
        vec![
            (
                "README.md".into(),
                Skip::NotPolicy("not a *.yaml or *.yml file".into())
            ),
            (
                "b.yml".into(),
                Skip::FileAlreadyRead {
                    first: root.join("a.yaml")
                }
            ),
            ("c.yaml".into(), Skip::Dangling),
            ("d.yaml".into(), Skip::SymlinkLoop),
            (
                "e.yaml".into(),
                Skip::NotPolicy("not a regular file".into())
            ),
            (
                "s".into(),
                Skip::DirAlreadyRead {
                    first: root.join("real")
                }
            ),
        ]
    );
}

#[test]
fn a_walk_does_not_leave_its_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    // /proc is another filesystem than any directory a test can create, and a walk
    // into it would meet /proc/N/root (back to /): it must not be entered.
    symlink("/proc", dir.path().join("proc")).unwrap();
    let w = walk(dir.path(), Limits::POLICY_DIR).unwrap();
    assert_eq!(w.dirs, vec![dir.path().to_path_buf()]);
    assert_eq!(
        reasons(&w.skipped),
        vec![("proc".into(), Skip::OtherFilesystem)]
    );
}

#[test]
fn a_walk_reads_a_kubelet_configmap_through_its_key_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let stamp = root.join("..2026_01_01_00_00_00.000000001");
    write(&stamp.join("web.yaml"), &policy("web", "  allow: [read]\n"));
    write(&stamp.join("sets.base.yaml"), &set("base", "getpid"));
    symlink(stamp.file_name().unwrap(), root.join("..data")).unwrap();
    symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
    symlink("..data/sets.base.yaml", root.join("sets.base.yaml")).unwrap();
    let w = walk(root, Limits::POLICY_DIR).unwrap();
    assert_eq!(
        w.files,
        vec![root.join("sets.base.yaml"), root.join("web.yaml")]
    );
    assert_eq!(w.dirs, vec![root.to_path_buf()]);
    assert!(w.skipped.is_empty(), "{:?}", w.skipped);
}

#[test]
fn a_walk_reports_an_unreadable_directory() {
    if is_root() {
        eprintln!("skipping: root reads a directory without read permission");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let w = walk(dir.path(), Limits::POLICY_DIR);
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let w = w.unwrap();
    assert_eq!(w.skipped.len(), 1, "{:?}", w.skipped);
    assert!(matches!(w.skipped[0].reason, Skip::Unreadable(_)));
    assert!(w.skipped[0].reason.is_error());
}

#[test]
fn a_walk_of_a_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir.path().join("p.yaml"), "");
    assert!(walk(&f, Limits::POLICY_DIR).is_err());
    assert!(walk(&dir.path().join("missing"), Limits::POLICY_DIR).is_err());
}

#[test]
fn sets_are_searched_beside_the_file_then_in_sets_dir() {
    let places = search_dirs(Path::new("/etc/p/web.yaml"), Some(Path::new("/s")));
    assert_eq!(
        places,
        vec![
            Place {
                dir: "/etc/p".into(),
                origin: Origin::Beside
            },
            Place {
                dir: "/etc/p/sets".into(),
                origin: Origin::BesideSets
            },
            Place {
                dir: "/s".into(),
                origin: Origin::SetsDir
            },
        ]
    );
    assert_eq!(
        search_dirs(Path::new("web.yaml"), None)[0].dir,
        Path::new(".")
    );
    assert!(search_dirs(Path::new("<shipped>/sets/x.yaml"), Some(Path::new("/s"))).is_empty());
    assert_eq!(candidate_names("base"), ["base.yaml", "base.yml"]);
    for bad in ["../etc/passwd", ".hidden", "", "a/b"] {
        assert!(candidate_names(bad).is_empty(), "{bad}");
    }
}

#[test]
fn a_policy_file_is_read_alone_with_its_includes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = write(
        &root.join("p.yaml"),
        &policy("p", "  include: [base]\n  allow: [read]\n"),
    );
    write(&root.join("base.yaml"), &set("base", "getpid"));
    // Beside it: what must not be read.
    write(&root.join("bad.yaml"), "kind: [");
    write(&root.join("other.yaml"), &policy("p", "  allow: [write]\n"));
    write(&root.join("tree/deep/bad.yaml"), "kind: [");
    symlink(".", root.join("a")).unwrap();
    symlink(".", root.join("b")).unwrap();
    let loaded = load(std::slice::from_ref(&p), None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let read: Vec<_> = loaded.read.iter().map(|r| r.path.clone()).collect();
    assert_eq!(read, vec![p.clone(), root.join("base.yaml")]);
    assert_eq!(loaded.included.len(), 1);
    assert_eq!(loaded.included[0].origin, Origin::Beside);
    assert_eq!(loaded.included[0].included_at, (p.clone(), 6));
    assert!(loaded.policies[0].allowed_names.contains("getpid"));
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
}

#[test]
fn includes_resolve_in_order_and_say_from_where() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sets = root.join("extra");
    let p = write(
        &root.join("pol/p.yaml"),
        &policy(
            "p",
            "  include: [a, b, c, runtime-default, ia32-multiplexers]\n",
        ),
    );
    // `a` beside beats sets/ and --sets; `b` in sets/ beats --sets; `c` only in --sets;
    // `runtime-default` beside overrides the shipped one.
    write(&root.join("pol/a.yaml"), &set("a", "getpid"));
    write(&root.join("pol/sets/a.yaml"), &set("a", "gettid"));
    write(&sets.join("a.yaml"), &set("a", "gettid"));
    write(&root.join("pol/sets/b.yml"), &set("b", "getppid"));
    write(&sets.join("b.yaml"), &set("b", "gettid"));
    write(&sets.join("c.yaml"), &set("c", "getuid"));
    write(
        &root.join("pol/runtime-default.yaml"),
        &set("runtime-default", "read"),
    );
    let loaded = load(std::slice::from_ref(&p), Some(&sets));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let origins: Vec<_> = loaded
        .included
        .iter()
        .map(|u| (u.name.as_str(), u.origin))
        .collect();
    assert_eq!(
        origins,
        [
            ("a", Origin::Beside),
            ("b", Origin::BesideSets),
            ("c", Origin::SetsDir),
            ("runtime-default", Origin::Beside),
            ("ia32-multiplexers", Origin::Shipped),
        ]
    );
    let names = &loaded.policies[0].allowed_names;
    for n in ["getpid", "getppid", "getuid", "read", "socketcall"] {
        assert!(names.contains(n), "{n}: {names:?}");
    }
    assert!(!names.contains("gettid"), "{names:?}");
    assert!(
        !names.contains("write"),
        "the shipped runtime-default is overridden"
    );
    let c = &loaded.included[2];
    assert_eq!(c.searched, vec![root.join("pol"), root.join("pol/sets")]);
    assert!(c.to_string().contains("(in --sets)"), "{c}");
    let shipped = &loaded.included[4];
    assert!(
        shipped
            .to_string()
            .starts_with("`ia32-multiplexers`: shipped with sysfence"),
        "{shipped}"
    );
}

#[test]
fn an_unresolved_include_names_its_line_and_the_directories_searched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sets = root.join("extra");
    fs::create_dir(&sets).unwrap();
    let p = write(
        &root.join("p.yaml"),
        &policy("p", "  allow: [read]\n  include: [nowhere]\n"),
    );
    let loaded = load(std::slice::from_ref(&p), Some(&sets));
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0];
    assert_eq!((e.file.as_str(), e.line), (p.to_str().unwrap(), 7));
    assert_eq!(e.message, "unknown set `nowhere`");
    let help = e.help.as_deref().unwrap();
    for d in [root.to_path_buf(), root.join("sets"), sets.clone()] {
        assert!(help.contains(&format!("{}/", d.display())), "{help}");
    }
    assert!(help.contains("nowhere.yaml or nowhere.yml"), "{help}");
    assert!(
        help.contains("the shipped sets (ia32-multiplexers, runtime-default)"),
        "{help}"
    );

    // A set that includes what does not exist: the error is at the set's line.
    write(
        &root.join("base.yaml"),
        "apiVersion: sysfence.dev/v1\nkind: SyscallSet\nmetadata: {name: base}\nspec:\n  include: [gone]\n",
    );
    let q = write(&root.join("q.yaml"), &policy("q", "  include: [base]\n"));
    let loaded = load(std::slice::from_ref(&q), None);
    let e: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].file, root.join("base.yaml").display().to_string());
    assert_eq!(e[0].line, 5);
    assert!(
        e[0].help.as_deref().unwrap().contains("--sets DIR"),
        "{e:?}"
    );
}

#[test]
fn a_candidate_that_is_no_set_of_that_name_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sets = root.join("extra");
    // The policy `web` includes the set `web` of --sets: web.yaml beside it is itself.
    let p = write(&root.join("web.yaml"), &policy("web", "  include: [web]\n"));
    write(&sets.join("web.yaml"), &set("web", "getpid"));
    let loaded = load(std::slice::from_ref(&p), Some(&sets));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.included[0].origin, Origin::SetsDir);
    assert_eq!(
        reasons(&loaded.skipped),
        vec![(
            "web.yaml".into(),
            Skip::NotPolicy("it holds policy `web`, not set `web`".into())
        )]
    );
}

#[test]
fn a_broken_candidate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = write(&root.join("p.yaml"), &policy("p", "  include: [base]\n"));
    write(&root.join("base.yaml"), "kind: [");
    let loaded = load(std::slice::from_ref(&p), None);
    let files: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.file.clone(), d.message.clone()))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0].0, root.join("base.yaml").display().to_string());
    assert_eq!(files[1].0, p.display().to_string());
    assert!(files[1].1.contains("does not parse"), "{files:?}");
}

#[test]
fn a_symlinked_sets_dir_is_not_searched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("elsewhere/base.yaml"), &set("base", "getpid"));
    fs::create_dir(root.join("pol")).unwrap();
    symlink("../elsewhere", root.join("pol/sets")).unwrap();
    let p = write(
        &root.join("pol/p.yaml"),
        &policy("p", "  include: [base]\n"),
    );
    let loaded = load(std::slice::from_ref(&p), None);
    assert!(loaded.has_errors());
    assert_eq!(
        reasons(&loaded.skipped),
        vec![("sets".into(), Skip::SymlinkedSetsDir)]
    );
    let loaded = load(std::slice::from_ref(&p), Some(&root.join("elsewhere")));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    // A --sets that is no directory is an error, not an empty search.
    let loaded = load(std::slice::from_ref(&p), Some(&root.join("elsewher")));
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.message == "--sets: not a directory"),
        "{:?}",
        loaded.diagnostics
    );
}

#[test]
fn each_policy_resolves_its_includes_from_its_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let a = write(
        &root.join("a/p.yaml"),
        &policy("pa", "  include: [base]\n  selector: {cgroupPath: a}\n"),
    );
    let b = write(
        &root.join("b/p.yaml"),
        &policy("pb", "  include: [base]\n  selector: {cgroupPath: b}\n"),
    );
    write(&root.join("a/base.yaml"), &set("base", "getpid"));
    write(&root.join("b/base.yaml"), &set("base", "gettid"));
    let loaded = load(&[a, b], None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let pa = &loaded.policies[0].allowed_names;
    let pb = &loaded.policies[1].allowed_names;
    assert!(pa.contains("getpid") && !pa.contains("gettid"), "{pa:?}");
    assert!(pb.contains("gettid") && !pb.contains("getpid"), "{pb:?}");
}

#[test]
fn a_policy_directory_with_a_loop_loads_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("web.yaml"),
        &policy("web", "  include: [base]\n"),
    );
    write(&root.join("sets/base.yaml"), &set("base", "getpid"));
    symlink("..", root.join("sets/loop")).unwrap();
    let loaded = load_paths(&[root.to_path_buf()], None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.policies.len(), 1);
    assert_eq!(loaded.sets, 1);
    assert_eq!(loaded.included[0].origin, Origin::Given);
    assert_eq!(
        reasons(&loaded.skipped),
        vec![(
            "loop".into(),
            Skip::Loop {
                back_to: root.to_path_buf()
            }
        )]
    );
    // A missing path is an error naming it.
    let loaded = load_paths(&[root.join("missing")], None);
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].file,
        root.join("missing").display().to_string()
    );
    assert!(loaded.diagnostics[0].message.starts_with("cannot read"));
}

#[test]
fn set_names_resolves_as_an_include_would() {
    let dir = tempfile::tempdir().unwrap();
    let sets = dir.path().join("extra");
    write(&sets.join("mine.yaml"), &set("mine", "getpid, gettid"));
    let from = dir.path().join("out/policy.yaml");
    let names = set_names("mine", Some(&from), Some(&sets)).unwrap();
    assert_eq!(names.len(), 2);
    let e = set_names("mine", Some(&from), None).unwrap_err();
    assert!(e.to_string().contains("unknown set `mine`"), "{e}");
    assert!(set_names("runtime-default", None, None).unwrap().len() > 300);
}
