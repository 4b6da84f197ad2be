//! Kubernetes-style field errors (`field: Invalid value: "x": why`).

/// The `reason` of a `metav1.StatusCause`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseReason {
    FieldValueInvalid,
    FieldValueRequired,
    FieldValueNotSupported,
    FieldValueForbidden,
}

/// One violation, rendered by kubectl as `* field: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub reason: CauseReason,
    pub field: String,
    /// The message without the field path.
    pub message: String,
}
