//! Empty on the host: lets the agent's build.rs depend on this crate so cargo reruns it
//! when the probe's sources change. The probe itself is the `sysfence-probe` binary.
#![no_std]
