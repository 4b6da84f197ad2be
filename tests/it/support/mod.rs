//! Fixtures shared by the suites.

pub mod fake_kube;
pub mod ironic;
pub mod iso;
pub mod observe;
pub mod rbac;
pub mod server;
pub mod staging;
