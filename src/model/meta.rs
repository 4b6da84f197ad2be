//! The light `ObjectMeta` shared by the BareMetalHost and DataImage views.

use serde::Deserialize;

/// The few metadata fields the rules read. Annotations, labels and
/// managedFields are deliberately absent: serde skips them without allocating,
/// which keeps the admission hot path cheap (a client-side-applied host carries
/// its whole manifest again in an annotation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub generation: Option<i64>,
    pub deletion_timestamp: Option<String>,
}

impl ObjectMeta {
    /// `name`, else `generateName` (a generateName create has no name yet).
    pub fn name_or_generate_name(&self) -> Option<&str> {
        self.name.as_deref().or(self.generate_name.as_deref())
    }
}
