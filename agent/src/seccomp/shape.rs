//! Where a profile that does not deserialize has the wrong shape: the path of the first
//! value of the wrong type, e.g. `syscalls[3].names[0]`.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::profile::{ArchMapEntry, Arg, Filter, Rule};

type Check = fn(&Value, &str) -> Option<String>;

fn fails<T: DeserializeOwned>(v: &Value) -> bool {
    T::deserialize(v).is_err()
}

/// An optional value of type `T` (null or missing is fine).
fn optional<T: DeserializeOwned>(v: &Value, at: &str) -> Option<String> {
    fails::<Option<T>>(v).then(|| at.to_string())
}

fn required<T: DeserializeOwned>(v: &Value, at: &str) -> Option<String> {
    fails::<T>(v).then(|| at.to_string())
}

fn string(v: &Value, at: &str) -> Option<String> {
    required::<String>(v, at)
}

/// An optional list whose elements pass `elem`.
fn list(v: &Value, at: &str, elem: Check) -> Option<String> {
    if v.is_null() {
        return None;
    }
    let Some(items) = v.as_array() else {
        return Some(at.to_string());
    };
    items
        .iter()
        .enumerate()
        .find_map(|(i, e)| elem(e, &format!("{at}[{i}]")))
}

/// An object whose fields pass their checks; the object itself when they all do but
/// the whole does not (a missing required field).
fn object<T: DeserializeOwned>(v: &Value, at: &str, fields: &[(&str, Check)]) -> Option<String> {
    if !v.is_object() {
        return Some(at.to_string());
    }
    fields
        .iter()
        .find_map(|(k, check)| check(&v[*k], &format!("{at}.{k}")))
        .or_else(|| required::<T>(v, at))
}

fn arch_entry(v: &Value, at: &str) -> Option<String> {
    object::<ArchMapEntry>(
        v,
        at,
        &[
            ("architecture", string),
            ("subArchitectures", |v, at| list(v, at, string)),
        ],
    )
}

fn arg(v: &Value, at: &str) -> Option<String> {
    object::<Arg>(
        v,
        at,
        &[
            ("index", required::<u32>),
            ("value", optional::<u64>),
            ("valueTwo", optional::<u64>),
            ("op", string),
        ],
    )
}

fn filter(v: &Value, at: &str) -> Option<String> {
    if v.is_null() {
        return None;
    }
    object::<Filter>(
        v,
        at,
        &[
            ("caps", |v, at| list(v, at, string)),
            ("arches", |v, at| list(v, at, string)),
            ("minKernel", optional::<String>),
        ],
    )
}

fn rule(v: &Value, at: &str) -> Option<String> {
    object::<Rule>(
        v,
        at,
        &[
            ("names", |v, at| list(v, at, string)),
            ("name", optional::<String>),
            ("action", optional::<String>),
            ("errnoRet", optional::<u32>),
            ("args", |v, at| list(v, at, arg)),
            ("includes", filter),
            ("excludes", filter),
            ("comment", optional::<String>),
        ],
    )
}

pub(super) fn locate(profile: &Value) -> Option<String> {
    optional::<String>(&profile["defaultAction"], "defaultAction")
        .or_else(|| optional::<u32>(&profile["defaultErrnoRet"], "defaultErrnoRet"))
        .or_else(|| list(&profile["architectures"], "architectures", string))
        .or_else(|| list(&profile["archMap"], "archMap", arch_entry))
        .or_else(|| list(&profile["syscalls"], "syscalls", rule))
}
