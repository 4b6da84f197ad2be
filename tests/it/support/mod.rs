//! Fixtures shared by the suites.

pub(crate) mod fake_kube;
pub(crate) mod ironic;
pub(crate) mod iso;
pub(crate) mod observe;
pub(crate) mod rbac;
pub(crate) mod server;
pub(crate) mod staging;
