//! `BPF_MAP_TYPE_TASK_STORAGE`: a value per task, created on demand, freed with the task.
//! aya-ebpf has inode, socket and cgroup storage but not this one; it is defined as
//! theirs are, as a BTF map (`.maps`), whose key and value types the kernel checks.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_task_storage_delete, bpf_task_storage_get},
};
use core::ptr;

/// A task storage map of `T`. The fields are the BTF description the loader reads
/// (`libbpf`'s `__uint`/`__type` convention); they are never dereferenced.
#[repr(C)]
pub(crate) struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers patched by the loader, never dereferenced; the kernel
// serialises access to each task's value.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub(crate) const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// `task`'s value, if it has one.
    ///
    /// `task` must be a BTF `task_struct` pointer the verifier trusts (the current task,
    /// or a tracepoint's task argument).
    #[inline(always)]
    pub(crate) fn get(&self, task: *const u8) -> Option<*mut T> {
        // SAFETY: a helper call; the verifier checks `task`'s type.
        let p = unsafe { bpf_task_storage_get(self.as_ptr(), task as *mut _, ptr::null_mut(), 0) };
        (!p.is_null()).then_some(p.cast())
    }

    /// Give `task` the value `init` unless it has one; its value either way. `None`: the
    /// kernel could not allocate one.
    #[inline(always)]
    pub(crate) fn get_or_insert(&self, task: *const u8, init: &T) -> Option<*mut T> {
        // SAFETY: a helper call; `init` is read (copied) by the kernel, not kept.
        let p = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task as *mut _,
                ptr::from_ref(init).cast_mut().cast(),
                BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
            )
        };
        (!p.is_null()).then_some(p.cast())
    }

    /// Delete `task`'s value. Whether it had one.
    #[inline(always)]
    pub(crate) fn delete(&self, task: *const u8) -> bool {
        // SAFETY: a helper call.
        unsafe { bpf_task_storage_delete(self.as_ptr(), task as *mut _) == 0 }
    }
}
