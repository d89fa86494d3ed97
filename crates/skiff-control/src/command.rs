//! The control plane's edge: every change or question is a [`Command`], parsed once from
//! whatever asked (the REST API, later events), and answered with an [`Answer`] or a
//! [`ControlError`]. Commands that write are serialised and may carry a [`Precondition`]
//! on the service's version, so a writer that read an older state is refused instead of
//! undoing what happened since (a removal, another deploy).

use crate::documents::{DeployRequest, Deployed, ServiceDetail, ServiceSummary, UpdateRequest};
use crate::{Control, ControlError};
use skiff_core::TrafficTarget;
use std::sync::Arc;

/// What the control plane is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Every service with its load.
    List,
    /// One service in detail.
    Describe { service: String },
    /// A new revision from a whole spec.
    Deploy {
        service: String,
        request: DeployRequest,
        precondition: Precondition,
    },
    /// A new revision from the latest one's spec with some fields changed.
    Update {
        service: String,
        request: UpdateRequest,
        precondition: Precondition,
    },
    /// A new traffic split.
    SetTraffic {
        service: String,
        traffic: Vec<TrafficTarget>,
        precondition: Precondition,
    },
    /// All traffic back to `revision`, or the one before.
    Rollback {
        service: String,
        revision: Option<String>,
        precondition: Precondition,
    },
    /// The service goes.
    Remove {
        service: String,
        precondition: Precondition,
    },
}

/// What a command answers.
#[derive(Debug)]
pub enum Answer {
    Services(Vec<ServiceSummary>),
    Service(Box<ServiceDetail>),
    Deployed(Deployed),
    Removed(String),
}

/// A condition on the service's state for a write to go ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The service must be at this version (as `describe` showed it).
    pub version: Option<u64>,
}

impl Precondition {
    /// No condition: the write goes ahead whatever the state.
    pub const NONE: Precondition = Precondition { version: None };

    /// Refuses the write when the service is not at the version asked for. The caller
    /// holds the write lock, so nothing changes between this check and the write.
    pub(crate) fn check(&self, ctl: &Control, service: &str) -> Result<(), ControlError> {
        let Some(expected) = self.version else {
            return Ok(());
        };
        match ctl.db().service(service)? {
            None => Err(ControlError::Conflict(format!(
                "service {service} no longer exists (the change was made against its \
                 version {expected}); nothing was changed"
            ))),
            Some(s) if s.version != expected => Err(ControlError::Conflict(format!(
                "service {service} changed since version {expected} (it is at version {}); \
                 read it again and retry",
                s.version
            ))),
            Some(_) => Ok(()),
        }
    }
}

impl Command {
    /// The service a writing command changes and its precondition; `None` for questions.
    fn write_target(&self) -> Option<(&str, Precondition)> {
        match self {
            Command::List | Command::Describe { .. } => None,
            Command::Deploy {
                service,
                precondition,
                ..
            }
            | Command::Update {
                service,
                precondition,
                ..
            }
            | Command::SetTraffic {
                service,
                precondition,
                ..
            }
            | Command::Rollback {
                service,
                precondition,
                ..
            }
            | Command::Remove {
                service,
                precondition,
            } => Some((service, *precondition)),
        }
    }
}

impl Control {
    /// Carries out `command`. Commands that write run one at a time, each after its
    /// precondition was checked under the same lock.
    pub async fn execute(self: &Arc<Self>, command: Command) -> Result<Answer, ControlError> {
        let _serial = match command.write_target() {
            Some((service, precondition)) => {
                let serial = self.write_lock.lock().await;
                precondition.check(self, service)?;
                Some(serial)
            }
            None => None,
        };
        match command {
            Command::List => self.list().map(Answer::Services),
            Command::Describe { service } => self.answer_service(&service),
            Command::Deploy {
                service, request, ..
            } => self.deploy(&service, request).await.map(Answer::Deployed),
            Command::Update {
                service, request, ..
            } => {
                let request = self.merged(&service, request)?;
                self.deploy(&service, request).await.map(Answer::Deployed)
            }
            Command::SetTraffic {
                service, traffic, ..
            } => {
                self.apply_traffic(&service, traffic).await?;
                self.answer_service(&service)
            }
            Command::Rollback {
                service, revision, ..
            } => {
                self.rollback(&service, revision).await?;
                self.answer_service(&service)
            }
            Command::Remove { service, .. } => {
                self.remove(&service)?;
                Ok(Answer::Removed(service))
            }
        }
    }

    fn answer_service(&self, service: &str) -> Result<Answer, ControlError> {
        self.describe(service).map(|d| Answer::Service(Box::new(d)))
    }
}
