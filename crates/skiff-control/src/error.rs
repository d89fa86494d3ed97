//! What can go wrong with a command, in the control plane's own words. It knows nothing
//! of HTTP: the API maps each kind to a status in one place.

/// A command's failure. Messages name the service, revision or field involved.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is malformed (a field that does not go with another, a bad
    /// parameter); `field` names the field at fault when there is one.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        field: Option<String>,
    },
    /// The spec (or traffic) is not valid; `field` names the field at fault.
    #[error("{message}")]
    InvalidSpec {
        message: String,
        field: Option<String>,
    },
    /// No such service (or endpoint).
    #[error("{0}")]
    NotFound(String),
    /// The command does not fit the current state (a host taken by another service, no
    /// revision to roll back to, a stale version).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (a token's grant does not cover what it names).
    #[error("{0}")]
    Forbidden(String),
    /// A revision's instance failed to start; `log_tail` holds its last log lines.
    #[error("{reason}")]
    StartFailed {
        reason: String,
        log_tail: Option<String>,
    },
    /// The request is larger than the control plane takes.
    #[error("{0}")]
    TooLarge(String),
    /// Something beyond the host failed: a registry an image is pulled from.
    #[error("{0}")]
    Upstream(String),
    /// Something on the host failed (the database, a runtime thread).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// A malformed request, with no particular field.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ControlError::InvalidRequest {
            message: message.into(),
            field: None,
        }
    }

    /// A malformed request about `field`.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        ControlError::InvalidRequest {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// An invalid spec about `field`.
    pub fn invalid_spec(field: &str, message: impl Into<String>) -> Self {
        ControlError::InvalidSpec {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ControlError::Internal(e.to_string())
    }

    /// `no such service: NAME`.
    pub fn no_service(service: &str) -> Self {
        ControlError::NotFound(format!("no such service: {service}"))
    }

    /// The field at fault, if the error names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ControlError::InvalidRequest { field, .. }
            | ControlError::InvalidSpec { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The failed instance's last log lines, for a start failure.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            ControlError::StartFailed { log_tail, .. } => log_tail.as_deref(),
            _ => None,
        }
    }

    /// The error's kind as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlError::InvalidRequest { .. } => "invalid_request",
            ControlError::InvalidSpec { .. } => "invalid_spec",
            ControlError::NotFound(_) => "not_found",
            ControlError::Conflict(_) => "conflict",
            ControlError::Forbidden(_) => "forbidden",
            ControlError::StartFailed { .. } => "start_failed",
            ControlError::TooLarge(_) => "too_large",
            ControlError::Upstream(_) => "upstream",
            ControlError::Internal(_) => "internal",
        }
    }
}

impl From<skiff_core::SpecError> for ControlError {
    fn from(e: skiff_core::SpecError) -> Self {
        ControlError::invalid_spec(e.field, e.to_string())
    }
}

impl From<skiff_scaler::SettingsError> for ControlError {
    fn from(e: skiff_scaler::SettingsError) -> Self {
        ControlError::invalid_spec(e.knob, e.to_string())
    }
}

impl From<skiff_store::StoreError> for ControlError {
    fn from(e: skiff_store::StoreError) -> Self {
        match e {
            skiff_store::StoreError::RevisionNameTaken { .. } => {
                ControlError::Conflict(format!("{e}: choose another revision name"))
            }
            e => ControlError::internal(e),
        }
    }
}
