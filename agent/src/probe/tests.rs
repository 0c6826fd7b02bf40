//! The embedded probe object against the names the agent opens its maps and programs
//! by (`probe_common::maps`, `probe_common::programs`): parsed, not loaded, so no root.

use std::collections::BTreeSet;

use probe_common::{LSM_PROGRAM_NAMES, maps, programs};

use super::PROBE_OBJECT;

fn object() -> aya_obj::Object {
    aya_obj::Object::parse(PROBE_OBJECT).expect("the embedded probe object parses")
}

/// Maps every load has that are not shared with the agent: the programs' `.rodata`
/// (and any other data section) and aya-log's channel.
fn per_load(name: &str) -> bool {
    name.starts_with('.') || name == "AYA_LOGS"
}

#[test]
fn map_names_are_the_maps_of_the_probe() {
    let object = object();
    let in_object: BTreeSet<&str> = object
        .maps
        .keys()
        .map(String::as_str)
        .filter(|n| !per_load(n))
        .collect();
    let named: BTreeSet<&str> = maps::ALL.iter().copied().collect();
    assert_eq!(named.len(), maps::ALL.len(), "a name twice in maps::ALL");
    let unknown: Vec<&&str> = named.difference(&in_object).collect();
    assert!(
        unknown.is_empty(),
        "probe_common::maps names {unknown:?}, which the probe object does not have \
         (its maps: {in_object:?}): rename the constant or the #[map] static"
    );
    let unnamed: Vec<&&str> = in_object.difference(&named).collect();
    assert!(
        unnamed.is_empty(),
        "the probe object has maps {unnamed:?} that probe_common::maps does not name: add \
         a constant (with who writes and who reads it) and list it in maps::ALL"
    );
}

#[test]
fn program_names_are_the_programs_of_the_probe() {
    let object = object();
    let in_object: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
    let named: BTreeSet<&str> = [
        programs::SYS_ENTER,
        programs::SYS_ENTER_FLOOR,
        programs::SYS_EXIT,
        programs::SCHED_PROCESS_EXIT,
        programs::CLONE_GUARD,
        programs::FOLLOW_CGROUP_MOVE,
        programs::LIFT_DOOM,
        programs::EXEC_BOUNDARY,
        programs::MEMO_CGROUP_ATTACH,
        programs::MEMO_TASK_EXIT,
    ]
    .into_iter()
    .chain(programs::GUARDS.iter().map(|(program, _)| *program))
    .chain(LSM_PROGRAM_NAMES.iter().copied())
    .collect();
    let unknown: Vec<&&str> = named.difference(&in_object).collect();
    assert!(
        unknown.is_empty(),
        "probe_common names programs {unknown:?}, which the probe object does not have: \
         rename the constant or the probe's function"
    );
    let unnamed: Vec<&&str> = in_object.difference(&named).collect();
    assert!(
        unnamed.is_empty(),
        "the probe object has programs {unnamed:?} that probe_common::programs does not \
         name: add a constant for each"
    );
}
