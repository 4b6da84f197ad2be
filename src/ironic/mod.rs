//! Client for Ironic's virtual media API (attach/detach/list a node's CD).
//!
//! Contract used by the reconciler; the implementation lives in `client.rs`.

pub mod client;
pub mod ours;

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::telemetry::redact_url;

pub use client::{IronicClient, IronicConfig, Microversion};

/// What the reconciler needs of Ironic (a trait so the Kubernetes side can
/// be tested without Ironic).
pub trait IronicApi: Send + Sync + 'static {
    fn get_node(&self, node: &str) -> impl Future<Output = Result<Node, IronicError>> + Send;
    fn list_vmedia(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<VirtualMedia>, IronicError>> + Send;
    /// `POST /v1/nodes/{node}/vmedia` with `device_type: cdrom`. A 204 only
    /// means accepted: confirm with [`Self::list_vmedia`] and `last_error`.
    fn attach_cdrom(
        &self,
        node: &str,
        image_url: &str,
    ) -> impl Future<Output = Result<(), IronicError>> + Send;
    /// `DELETE /v1/nodes/{node}/vmedia?device_types=cdrom` (204 also when empty).
    fn detach_cdrom(&self, node: &str) -> impl Future<Output = Result<(), IronicError>> + Send;
    /// `GET /` (the API root, no version header): does Ironic answer at
    /// all? Used to tell an outage from a host-specific failure.
    fn ping(&self) -> impl Future<Output = Result<(), IronicError>> + Send;
}

/// The microversion that introduced `GET /v1/nodes/{node}/vmedia`: without it
/// an attach cannot be confirmed, so older servers are refused.
pub const MIN_MICROVERSION: Microversion = Microversion::new(1, 93);

/// What the reconciler needs to know about a node (`GET /v1/nodes/{node}`).
/// Empty strings count as absent; `last_error` is redacted (it ends up in
/// statuses and events).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Node {
    pub uuid: String,
    #[serde(default, deserialize_with = "or_default")]
    pub provision_state: ProvisionState,
    #[serde(default, deserialize_with = "non_empty")]
    pub power_state: Option<PowerState>,
    #[serde(default, deserialize_with = "non_empty")]
    pub target_power_state: Option<PowerState>,
    /// Conductor holding the node lock, if any (the node is busy).
    #[serde(default, deserialize_with = "non_empty")]
    pub reservation: Option<String>,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default, deserialize_with = "redacted")]
    pub last_error: Option<String>,
}

/// Ironic's provision state: only `active` lets an image be attached.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum ProvisionState {
    Active,
    /// Any other state (`deploying`, `service wait` ...), as Ironic names it.
    Other(String),
}

impl Default for ProvisionState {
    fn default() -> Self {
        Self::Other(String::new())
    }
}

impl From<String> for ProvisionState {
    fn from(state: String) -> Self {
        if state == "active" {
            Self::Active
        } else {
            Self::Other(state)
        }
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::Other(state) => f.write_str(state),
        }
    }
}

/// Ironic's `power_state` or `target_power_state`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum PowerState {
    /// `power on`.
    On,
    /// `power off`, `soft power off`.
    Off,
    /// `rebooting`, `soft rebooting`: the host runs afterwards.
    Rebooting,
    Other(String),
}

impl From<String> for PowerState {
    fn from(state: String) -> Self {
        match state.as_str() {
            "power on" => Self::On,
            "power off" | "soft power off" => Self::Off,
            "rebooting" | "soft rebooting" => Self::Rebooting,
            _ => Self::Other(state),
        }
    }
}

fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn non_empty<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(T::from))
}

fn redacted<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(non_empty::<D, String>(d)?.map(|text| redact_url(&text).into_owned()))
}

/// One virtual media slot (`GET /v1/nodes/{node}/vmedia`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct VirtualMedia {
    #[serde(default)]
    pub media_types: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub inserted: bool,
    /// Ironic's own republished URL (`.../redfish/cdrom-<node>.iso` for media
    /// inserted through the vmedia API, `boot-<node>.iso` for Ironic's boot
    /// media), not the URL we asked for.
    #[serde(default, deserialize_with = "redacted")]
    pub image: Option<String>,
}

/// Ironic errors, classified for retry decisions. Messages are Ironic's
/// `faultstring` with any URL credentials redacted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IronicError {
    #[error("ironic node not found: {0}")]
    NotFound(String),
    /// 409 NodeLocked: transient.
    #[error("ironic node is locked: {0}")]
    Locked(String),
    /// 503 or a connection failure: transient.
    #[error("ironic unavailable: {0}")]
    Unavailable(String),
    /// 400: may come from the node's driver/driver_info; retry with a long backoff.
    #[error("ironic rejected the request: {0}")]
    BadRequest(String),
    #[error("ironic API version {found} is too old: need {needed} or newer (Ironic 26.1+)")]
    VersionTooOld { found: String, needed: String },
    #[error("ironic answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("ironic client configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use crate::telemetry::redact_url;

    /// Ironic messages may quote URLs anywhere: all of them are redacted.
    #[test]
    fn redacts_every_url_in_text() {
        assert_eq!(
            redact_url("href http://u:p@h/a.iso failed; see https://x:y@z:1?q and ftp://plain/"),
            "href http://***@h/a.iso failed; see https://***@z:1?q and ftp://plain/"
        );
        assert_eq!(redact_url("'http://a:b@c' x"), "'http://***@c' x");
        assert_eq!(redact_url("http://h/a@b.iso"), "http://h/a@b.iso");
        assert_eq!(redact_url("no urls here"), "no urls here");
        assert_eq!(redact_url("trailing ://"), "trailing ://");
        assert_eq!(
            redact_url("ünïcode http://ü:ö@h/ é"),
            "ünïcode http://***@h/ é"
        );
    }
}
