//! The Kubernetes API access each component needs: the single source for the
//! RBAC rules shipped in `manifests/base/rbac/` (tests/it/manifests.rs renders the
//! manifests and checks the rules equal these lists, nothing more, nothing less).
//!
//! These lists must match the API calls made in `admission/` (webhook) and
//! `reconcile/` (reconciler and `cleanup`): add a call there, add it here and
//! to the manifests in the same change.

/// One API resource and the verbs used on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ApiAccess {
    /// API group; `""` is the core group.
    pub(crate) group: &'static str,
    /// Plural resource, with `/subresource` where one is used.
    pub(crate) resource: &'static str,
    pub(crate) verbs: &'static [&'static str],
    /// Restrict to these object names (`resourceNames`); empty means all.
    pub(crate) resource_names: &'static [&'static str],
}

/// The admission webhook: reads the Secret a host's `credentialsName` names
/// (targeted `get`s only, never list/watch: no cluster-wide Secret cache).
pub(crate) const WEBHOOK: &[ApiAccess] = &[ApiAccess {
    group: "",
    resource: "secrets",
    verbs: &["get"],
    resource_names: &[],
}];

/// The reconciler (and `cleanup`, which runs with the same ServiceAccount).
pub(crate) const RECONCILER: &[ApiAccess] = &[
    // Watch hosts; patch finalizer and the attached/hold annotations.
    ApiAccess {
        group: "metal3.io",
        resource: "baremetalhosts",
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
    },
    // status.dataImage, written with server-side apply on the status subresource.
    ApiAccess {
        group: "metal3.io",
        resource: "baremetalhosts/status",
        verbs: &["get", "patch"],
        resource_names: &[],
    },
    // Upstream DataImage objects with a host's name: detect the drive conflict.
    ApiAccess {
        group: "metal3.io",
        resource: "dataimages",
        verbs: &["get", "list", "watch"],
        resource_names: &[],
    },
    // Image credentials named by credentialsName (targeted gets).
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        resource_names: &[],
    },
    // Events on hosts (reconcile::events: create, then patch a repeat's series).
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        resource_names: &[],
    },
    // Leader election Lease (namespaced Role in the reconciler's namespace).
    // reconcile::leader reads, creates and patches it (merge patches guarded by
    // resourceVersion); it never calls update.
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        resource_names: &[],
    },
    // Start-up check that the BareMetalHost CRD still carries spec.dataImage.
    ApiAccess {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get"],
        resource_names: &[metal3_dataimage::crd::BMH_CRD_NAME],
    },
];

/// Resources granted only in the component's own namespace (a Role, not a ClusterRole).
pub(crate) const NAMESPACED_RESOURCES: &[&str] = &["leases"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_only_ever_read_one_by_one() {
        for access in WEBHOOK.iter().chain(RECONCILER) {
            if access.resource == "secrets" {
                assert_eq!(access.verbs, ["get"], "Secrets: get only, never list/watch");
            }
        }
    }

    /// docs/install.md's RBAC table is the one place the docs list the
    /// access (docs/reconciler.md links to it): it must say what these
    /// lists say.
    #[test]
    fn the_install_docs_table_matches() {
        let docs = include_str!("../../../docs/install.md");
        let section = docs.split("\n## RBAC\n").nth(1).expect("an RBAC section");
        let section = section.split("\n## ").next().unwrap_or_default();
        let mut rows: Vec<(String, String, String, Vec<String>)> = section
            .lines()
            .filter(|l| l.starts_with("| webhook |") || l.starts_with("| reconciler |"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let group = if cells[2] == "core" { "" } else { cells[2] };
                let verbs = cells[4].split(", only").next().unwrap_or_default();
                (
                    cells[1].to_string(),
                    group.to_string(),
                    cells[3].to_string(),
                    verbs.split(", ").map(str::to_string).collect(),
                )
            })
            .collect();
        let mut want: Vec<(String, String, String, Vec<String>)> =
            [("webhook", WEBHOOK), ("reconciler", RECONCILER)]
                .iter()
                .flat_map(|(who, list)| {
                    list.iter().map(move |a| {
                        (
                            who.to_string(),
                            a.group.to_string(),
                            a.resource.to_string(),
                            a.verbs.iter().map(ToString::to_string).collect(),
                        )
                    })
                })
                .collect();
        rows.sort();
        want.sort();
        assert_eq!(rows, want);
    }

    #[test]
    fn no_resource_is_listed_twice() {
        for list in [WEBHOOK, RECONCILER] {
            for (index, access) in list.iter().enumerate() {
                assert!(
                    !list[index + 1..]
                        .iter()
                        .any(|other| other.group == access.group
                            && other.resource == access.resource),
                    "{}/{} listed twice",
                    access.group,
                    access.resource
                );
            }
        }
    }
}
