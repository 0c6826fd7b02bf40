//! `sysfence policy import-seccomp` and `export-seccomp`: the commands around the
//! importer and the exporter.

use std::path::{Path, PathBuf};

use crate::policy;

/// What `policy import-seccomp` was asked.
#[derive(Debug, clap::Args)]
pub struct ImportCommand {
    /// The seccomp profile (JSON).
    pub file: PathBuf,
    /// Write the policy here instead of stdout.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// metadata.name of the policy.
    #[arg(long, default_value = "imported-seccomp")]
    pub name: String,
    /// Capabilities the container holds, for the profile's `includes.caps`
    /// (repeatable; default: Docker's default set).
    #[arg(long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// Kernel version for `minKernel` rules.
    #[arg(long, default_value = "6.1", value_name = "MAJOR.MINOR")]
    pub kernel: String,
    /// Leave out syscalls the profile allows only for some argument values.
    #[arg(long)]
    pub strict_args: bool,
}

/// What `policy export-seccomp` was asked.
#[derive(Debug, clap::Args)]
pub struct ExportCommand {
    /// The policy file (one SyscallPolicy).
    pub policy: PathBuf,
    /// Write the profile here instead of stdout.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Default action for audit/monitor policies: SCMP_ACT_LOG instead of ERRNO.
    #[arg(long)]
    pub log_for_audit: bool,
}

fn write_out(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Read a seccomp profile, write the equivalent policy, warn about what it cannot say.
pub fn import_command(c: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand {
        file,
        output,
        name,
        caps,
        kernel,
        strict_args,
    } = c;
    let json = std::fs::read_to_string(&file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let mut options = super::ImportOptions {
        name,
        strict_args,
        ..Default::default()
    };
    if !caps.is_empty() {
        options.capabilities = caps.into_iter().collect();
    }
    options.kernel = super::KernelVersion::parse(&kernel)
        .ok_or_else(|| anyhow::anyhow!("--kernel {kernel}: expected MAJOR.MINOR, e.g. 6.1"))?;
    let imported =
        super::import(&json, &options).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    for w in &imported.warnings {
        eprintln!("{}: warning: {w}", file.display());
    }
    write_out(output.as_deref(), &imported.policy_yaml)?;
    eprintln!(
        "imported {} syscalls from {}",
        imported.allowed.len(),
        file.display()
    );
    Ok(())
}

/// Write a policy as a seccomp profile.
pub fn export_command(c: ExportCommand) -> anyhow::Result<()> {
    let file = c.policy;
    let (mut policies, warnings) = policy::load_files(std::slice::from_ref(&file)).into_result()?;
    for w in &warnings {
        eprintln!("{w}");
    }
    let Some(p) = policies.pop() else {
        anyhow::bail!("{}: holds no SyscallPolicy", file.display());
    };
    let options = if c.log_for_audit {
        super::ExportOptions::for_mode(p.mode)
    } else {
        super::ExportOptions::default()
    };
    let exported = super::export_with(&p, &options);
    for w in &exported.warnings {
        eprintln!("{}: warning: {w}", file.display());
    }
    write_out(c.output.as_deref(), &exported.json)
}
