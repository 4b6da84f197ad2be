//! Typed views of the Kubernetes objects this project reads.
//!
//! Only the fields the rules and the reconciler read are modelled; serde skips
//! every other field, so a BareMetalHost written by a newer baremetal-operator
//! still decodes and is judged on the fields we know. Nothing here is ever
//! serialised back as a whole object: writes are patches.

pub mod bmh;
pub mod dataimage;
mod meta;
pub mod secret;

pub use bmh::{BareMetalHost, BareMetalHostSpec, BareMetalHostStatus};
pub use dataimage::{
    ContentFrom, ContentFromInput, DataImageInput, DataImageSpec, DataImageState, DataImageStatus,
    UpstreamDataImage,
};
pub use meta::ObjectMeta;
pub use secret::SecretCredentials;

/// API group and version shared by every kind handled here.
pub const GROUP: &str = "metal3.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "metal3.io/v1alpha1";
