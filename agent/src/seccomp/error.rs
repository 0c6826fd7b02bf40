//! Why a profile could not be imported.

/// Why a profile could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "invalid JSON at line {line}, column {column}: {message}\n  help: fix the JSON syntax \
         at that position; a seccomp profile is an object such as \
         {{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}}"
    )]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "not a seccomp profile: {}{message} (line {line}, column {column})\n  help: fields \
         are `defaultAction` (string), `architectures` (list of strings), `archMap` (list of \
         {{architecture, subArchitectures}}), `syscalls` (list of {{names, action, errnoRet, \
         args, includes, excludes, comment}}); fix the value at that position",
        .field.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default()
    )]
    Shape {
        /// Where in the profile, as a path such as `syscalls[3].names`, when known.
        field: Option<String>,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the profile has no `defaultAction`\n  help: add `\"defaultAction\": \"SCMP_ACT_ERRNO\"` \
         (deny what the rules do not allow)"
    )]
    MissingDefaultAction,
    #[error(
        "{at}: unknown action `{action}`\n  help: use one of SCMP_ACT_ALLOW, SCMP_ACT_LOG, \
         SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, \
         SCMP_ACT_TRAP, SCMP_ACT_TRACE, SCMP_ACT_NOTIFY"
    )]
    UnknownAction { at: String, action: String },
    #[error("{at}: no `action`\n  help: add `\"action\": \"SCMP_ACT_ALLOW\"` or another action")]
    MissingAction { at: String },
    #[error(
        "the profile has both `architectures` and `archMap`\n  help: keep one of them, as \
         Docker requires"
    )]
    ArchitecturesAndArchMap,
    #[error(
        "{at}: has both `name` and `names`\n  help: keep one of them: `names` is the current \
         form, as Docker requires"
    )]
    NameAndNames { at: String },
    #[error(
        "{at}: invalid minKernel `{value}`\n  help: write it as \"<major>.<minor>\", e.g. \"4.8\""
    )]
    InvalidMinKernel { at: String, value: String },
    #[error(
        "the profile is for other architectures ({found}), not amd64\n  help: sysfence \
         enforces x86_64, i386 and x32 syscalls only: use a profile that lists \
         SCMP_ARCH_X86_64 (in `architectures`, or as an `archMap` architecture)"
    )]
    NoAmd64 { found: String },
    #[error(
        "invalid policy name `{name}`\n  help: use lowercase letters, digits, `-` and `.`, \
         starting and ending with a letter or digit, as Kubernetes names"
    )]
    InvalidName { name: String },
    #[error(
        "the generated policy does not pass sysfence's loader (a sysfence bug):\n{0}\n  help: \
         please report it with the profile"
    )]
    Generated(String),
}

impl ImportError {
    pub(super) fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        // serde_json appends " at line L column C"; the position is reported separately.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        match e.classify() {
            Category::Data => ImportError::Shape {
                field: None,
                line,
                column,
                message,
            },
            Category::Syntax | Category::Eof | Category::Io => ImportError::Syntax {
                line,
                column,
                message,
            },
        }
    }
}
