//! Config maps: plain settings beside secrets (Kubernetes' ConfigMap), made, replaced,
//! listed and removed through typed [`ConfigMapCommand`]s, and given to instances as
//! secrets are (`TARGET=configmap:NAME[/KEY]`), always as they are now: a replaced one
//! reaches new instances, and the files of running ones.
//!
//! Their values are not secret: answers show them.

use crate::documents::ConfigMapDetail;
use crate::{Control, ControlError};
use skiff_core::{
    validate_data_key, validate_data_name, UseSource, MAX_SECRET_BYTES, MAX_SECRET_KEYS,
};
use skiff_secrets::SecretData;
use skiff_store::ConfigMapRecord;
use std::collections::BTreeMap;

/// What is asked of config maps.
#[derive(Debug)]
pub enum ConfigMapCommand {
    List,
    Describe {
        name: String,
    },
    /// Made (refused if it exists, when `create_only`) or replaced whole.
    Put {
        name: String,
        data: BTreeMap<String, String>,
        create_only: bool,
    },
    Remove {
        name: String,
    },
}

/// What a config map command answers.
#[derive(Debug)]
pub enum ConfigMapAnswer {
    ConfigMaps(Vec<ConfigMapDetail>),
    ConfigMap(ConfigMapDetail),
    Removed(String),
}

fn no_config_map(name: &str) -> ControlError {
    ControlError::NotFound(format!("no such config map: {name}"))
}

fn detail(r: ConfigMapRecord) -> ConfigMapDetail {
    ConfigMapDetail {
        name: r.name,
        data: r.data,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn check(name: &str, data: &BTreeMap<String, String>) -> Result<(), ControlError> {
    validate_data_name("config map", name)
        .map_err(|e| ControlError::bad_field("name", e.to_string()))?;
    if data.len() > MAX_SECRET_KEYS {
        return Err(ControlError::bad_field(
            "data",
            format!(
                "{} keys: a config map holds at most {MAX_SECRET_KEYS}",
                data.len()
            ),
        ));
    }
    for key in data.keys() {
        validate_data_key("config map", key)
            .map_err(|e| ControlError::bad_field("data", e.to_string()))?;
    }
    let bytes: usize = data.values().map(String::len).sum();
    if bytes > MAX_SECRET_BYTES {
        return Err(ControlError::TooLarge(format!(
            "the values hold {bytes} bytes: a config map holds at most {MAX_SECRET_BYTES}"
        )));
    }
    Ok(())
}

impl Control {
    /// Carries out a config map command; writes run one at a time with the other writes.
    pub async fn execute_config_map(
        &self,
        command: ConfigMapCommand,
    ) -> Result<ConfigMapAnswer, ControlError> {
        let _serial = match command {
            ConfigMapCommand::List | ConfigMapCommand::Describe { .. } => None,
            _ => Some(self.write_lock.lock().await),
        };
        match command {
            ConfigMapCommand::List => Ok(ConfigMapAnswer::ConfigMaps(
                self.db().config_maps()?.into_iter().map(detail).collect(),
            )),
            ConfigMapCommand::Describe { name } => self.config_map_detail(&name),
            ConfigMapCommand::Put {
                name,
                data,
                create_only,
            } => {
                check(&name, &data)?;
                if !self.db().put_config_map(&name, &data, create_only)? {
                    return Err(ControlError::Conflict(format!(
                        "config map {name} exists already: update it instead"
                    )));
                }
                tracing::info!(config_map = %name, "config map written");
                self.refresh_prepared(UseSource::ConfigMap, &name).await;
                self.config_map_detail(&name)
            }
            ConfigMapCommand::Remove { name } => {
                self.refuse_if_used(UseSource::ConfigMap, &name)?;
                if !self.db().delete_config_map(&name)? {
                    return Err(no_config_map(&name));
                }
                tracing::info!(config_map = %name, "config map removed");
                Ok(ConfigMapAnswer::Removed(name))
            }
        }
    }

    fn config_map_detail(&self, name: &str) -> Result<ConfigMapAnswer, ControlError> {
        let record = self
            .db()
            .config_map(name)?
            .ok_or_else(|| no_config_map(name))?;
        Ok(ConfigMapAnswer::ConfigMap(detail(record)))
    }

    /// Config map `name`'s data, now.
    pub(crate) fn open_config_map(&self, name: &str) -> Result<SecretData, ControlError> {
        let record = self
            .db()
            .config_map(name)?
            .ok_or_else(|| no_config_map(name))?;
        let mut data = SecretData::new();
        for (key, value) in record.data {
            data.insert(&key, value.into_bytes());
        }
        Ok(data)
    }
}
