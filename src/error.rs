//! The error type of a command: a kind that fixes the exit code, and the message
//! `main` prints (once, on stderr). The kinds map to the exit codes here and nowhere
//! else; `exit_code` holds the numbers themselves (the contract with shells and CI).

use std::fmt;

use crate::exit_code;

/// What kind of failure ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Usage or configuration error; nothing ran (exit 2).
    Usage,
    /// Infrastructure: a service, discovery, the run directory, an internal fault (exit 3).
    Infrastructure,
    /// Interrupted by Ctrl-C or SIGTERM (exit 130).
    Interrupted,
}

impl Kind {
    /// The process exit code of this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => exit_code::USAGE,
            Kind::Infrastructure => exit_code::INFRASTRUCTURE,
            Kind::Interrupted => exit_code::INTERRUPTED,
        }
    }
}

/// A command's failure: its kind and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind (and so the exit code).
    pub kind: Kind,
    /// The message, complete (`main` prints it as is).
    pub message: String,
}

impl Error {
    /// A usage or configuration error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Usage,
            message: message.into(),
        }
    }

    /// An infrastructure error.
    pub fn infrastructure(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Infrastructure,
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// Print the error on stderr and return its exit code: for commands that report an
    /// error and go on to their own exit (a background worker records it first).
    pub fn report(&self) -> i32 {
        eprintln!("{self}");
        self.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::usage(e.to_string())
    }
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        let kind = match e.kind {
            crate::plan::PlanErrorKind::Usage => Kind::Usage,
            crate::plan::PlanErrorKind::Infrastructure => Kind::Infrastructure,
        };
        Self {
            kind,
            message: format!("error: {}", e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_exit_codes() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::infrastructure("x").exit_code(), 3);
        assert_eq!(Kind::Interrupted.exit_code(), 130);
    }
}
