//! The probe's `bpf_rdonly_cast` call (see [`probe_common::task_cast`]): aya does not
//! resolve kfunc calls, so the agent writes the running kernel's BTF ids into the
//! object's two placeholder instructions before loading it. A kernel without the kfunc
//! (before 6.2) gets `r0 = 0` in place of the call, and `TASK_CAST = 0` tells the probe
//! to take the helper instead; the verifier never walks the dead branch, but it does
//! resolve every kfunc call in the program first, so the call must go.

use anyhow::bail;
use aya::Btf;
use aya_obj::btf::BtfKind;
use probe_common::task_cast::{CALL_PLACEHOLDER, TYPE_PLACEHOLDER, kfunc_call, mov_imm};

/// The running kernel's BTF ids the call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelIds {
    /// `bpf_rdonly_cast` (a `FUNC`).
    pub rdonly_cast: u32,
    /// `struct task_struct`.
    pub task_struct: u32,
}

/// The ids, or `None` when this kernel has no `bpf_rdonly_cast` (before 6.2).
pub fn kernel_ids(btf: &Btf) -> Option<KernelIds> {
    Some(KernelIds {
        rdonly_cast: btf
            .id_by_type_name_kind("bpf_rdonly_cast", BtfKind::Func)
            .ok()?,
        task_struct: btf
            .id_by_type_name_kind("task_struct", BtfKind::Struct)
            .ok()?,
    })
}

/// An ELF object copied to 8-byte aligned memory, as the object parser wants it.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn new(bytes: &[u8]) -> AlignedObject {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        AlignedObject {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes, and u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with the placeholders filled: the call and its type id from `ids`, or, with
/// none, the call made `r0 = 0`. An object without the placeholders (or with a call but
/// not its type) is refused: the probe and this code would disagree.
pub fn patch(object: &[u8], ids: Option<KernelIds>) -> anyhow::Result<AlignedObject> {
    let call = kfunc_call(CALL_PLACEHOLDER).to_le_bytes();
    let ty = mov_imm(2, TYPE_PLACEHOLDER).to_le_bytes();
    let (new_call, new_ty) = match ids {
        Some(ids) => (kfunc_call(ids.rdonly_cast), mov_imm(2, ids.task_struct)),
        None => (mov_imm(0, 0), mov_imm(2, 0)),
    };
    let mut aligned = AlignedObject::new(object);
    let bytes = aligned.bytes_mut();
    let (mut calls, mut types) = (0, 0);
    // Instructions are 8-byte aligned within their section, and sections within the
    // file; the placeholders are 8 bytes no compiler output would hold by chance.
    for at in (0..bytes.len().saturating_sub(7)).step_by(8) {
        let insn = &mut bytes[at..at + 8];
        if insn == call {
            insn.copy_from_slice(&new_call.to_le_bytes());
            calls += 1;
        } else if insn == ty {
            insn.copy_from_slice(&new_ty.to_le_bytes());
            types += 1;
        }
    }
    if calls == 0 || calls != types {
        bail!(
            "the probe object has {calls} bpf_rdonly_cast call(s) and {types} type operand(s) \
             to patch (one of each per use is expected): the probe and the agent were built \
             from different sources; rebuild both (cargo xtask build)"
        );
    }
    Ok(aligned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<u64> {
        bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn object() -> Vec<u8> {
        [
            0x1122_3344_5566_7788u64,
            mov_imm(2, TYPE_PLACEHOLDER),
            kfunc_call(CALL_PLACEHOLDER),
            0x95, // exit
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
    }

    #[test]
    fn the_kernels_ids_go_into_the_call_and_its_type_operand() {
        let ids = KernelIds {
            rdonly_cast: 51_234,
            task_struct: 143,
        };
        let patched = patch(&object(), Some(ids)).unwrap();
        assert_eq!(
            words(patched.bytes()),
            [
                0x1122_3344_5566_7788,
                mov_imm(2, 143),
                kfunc_call(51_234),
                0x95
            ]
        );
        // The encodings the verifier reads: r2 = 143; call kfunc (src_reg 2) 51234.
        assert_eq!(
            mov_imm(2, 143).to_le_bytes(),
            [0xb7, 0x02, 0, 0, 143, 0, 0, 0]
        );
        assert_eq!(
            kfunc_call(51_234).to_le_bytes(),
            [0x85, 0x20, 0, 0, 0x22, 0xc8, 0, 0]
        );
    }

    #[test]
    fn without_the_kfunc_the_call_becomes_a_move_of_zero() {
        let patched = patch(&object(), None).unwrap();
        assert_eq!(
            words(patched.bytes()),
            [0x1122_3344_5566_7788, mov_imm(2, 0), mov_imm(0, 0), 0x95]
        );
    }

    #[test]
    fn an_object_without_the_placeholders_is_refused() {
        let mut o = object();
        o.truncate(16); // the type operand stays, the call is gone
        let e = patch(&o, None).err().unwrap().to_string();
        assert!(e.contains("0 bpf_rdonly_cast call(s) and 1 type"), "{e}");
    }

    #[test]
    fn the_shipped_probe_holds_one_placeholder_call_and_its_type() {
        let patched = patch(super::super::PROBE_OBJECT, None).unwrap();
        let call = kfunc_call(CALL_PLACEHOLDER).to_le_bytes();
        assert!(!patched.bytes().windows(8).any(|w| w == call));
        // And the object still parses as the probe.
        aya_obj::Object::parse(patched.bytes()).unwrap();
    }
}
