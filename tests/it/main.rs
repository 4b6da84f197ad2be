//! The integration tests: one crate, one binary. Each test binary links the
//! whole dependency tree again (minutes on two cores), so every suite is a
//! module here and the shared fixtures live in `support`.
//!
//! Run one suite with `cargo test --test it <module>::`, for example
//! `cargo test --test it reconcile_ironic::`.
//!
//! The suites that need the real Ironic environment (`tests/ironic/up.sh`)
//! read its `IRONIC_*` variables; `tests/run.sh` exports them. Now that the
//! suites share one process, they also share that environment at the same
//! time: each test owns its own nodes (see `support::ironic`), and the tests
//! that stop an Ironic API hold that instance's lock.

mod support;

mod certs_cli;
mod check_cli;
mod config_iso;
mod crd;
mod ironic_client;
mod manifests;
mod reconcile_ironic;
mod reconcile_kube;
mod rules_admission;
mod rules_proptest;
mod rules_urls;
mod server_admission;
mod server_logs;
mod server_shutdown;
mod server_tls;
mod staging;
mod staging_ironic;
mod staging_secrets;
