//! metal3-dataimage: attach a non-bootable data ISO to Metal3 BareMetalHosts.
//!
//! Layout (pure logic separated from I/O):
//! - [`model`]: typed BareMetalHost / DataImage / Secret views (pure)
//! - [`rules`]: validation, defaulting, field preservation, field errors (pure)
//! - [`check`]: the offline `check` CLI over manifest files
//! - [`admission`]: the HTTPS webhook server (envelope, responses, TLS, metrics)
//! - [`reconcile`]: decision (pure) + controller + status for Ironic attach
//! - [`ironic`]: Ironic vmedia API client
//! - [`staging`]: fetch/verify/serve credentialed images for Ironic
//! - [`crd`], [`certs`]: manifests support
//! - [`telemetry`]: logging setup and redaction helpers; `text`: truncation
//! - `listener`, [`probes`], `signals`: the one way to serve HTTP, the
//!   `/healthz` `/readyz` `/metrics` listener, the shutdown signals

pub mod admission;
pub mod certs;
pub mod check;
pub mod cli;
pub mod crd;
pub mod duration;
pub mod ironic;
mod listener;
pub mod model;
pub mod probes;
pub mod reconcile;
pub mod rules;
mod signals;
pub mod staging;
pub mod telemetry;
mod text;
