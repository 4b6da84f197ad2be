//! Kubernetes-style field errors (`field: Invalid value: "x": why`), rendered
//! exactly like `k8s.io/apimachinery/pkg/util/validation/field` and
//! `apierrors.NewInvalid` so that kubectl shows them as the API server's own.

use std::fmt::{self, Write as _};

/// The `reason` of a `metav1.StatusCause`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseReason {
    FieldValueInvalid,
    FieldValueRequired,
    FieldValueNotSupported,
    FieldValueForbidden,
}

impl CauseReason {
    /// The JSON spelling (`metav1.CauseType`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FieldValueInvalid => "FieldValueInvalid",
            Self::FieldValueRequired => "FieldValueRequired",
            Self::FieldValueNotSupported => "FieldValueNotSupported",
            Self::FieldValueForbidden => "FieldValueForbidden",
        }
    }
}

/// One violation, rendered by kubectl as `* field: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub reason: CauseReason,
    pub field: String,
    /// The message without the field path (Go's `ErrorBody()`).
    pub message: String,
}

impl FieldError {
    fn new(reason: CauseReason, field: &str, message: String) -> Self {
        let field = field.to_string();
        Self {
            reason,
            field,
            message,
        }
    }

    /// `Invalid value: "<value>": <detail>`; `value` must already be redacted.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        let message = format!("Invalid value: {}: {detail}", go_quote(value));
        Self::new(CauseReason::FieldValueInvalid, field, message)
    }

    /// `Required value` or `Required value: <detail>`.
    pub fn required(field: &str, detail: &str) -> Self {
        let message = with_detail("Required value", detail);
        Self::new(CauseReason::FieldValueRequired, field, message)
    }

    /// `Unsupported value: "<value>": supported values: "a", "b"` plus an
    /// optional detail.
    pub fn not_supported(field: &str, value: &str, supported: &[&str], detail: &str) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let head = format!(
            "Unsupported value: {}: supported values: {}",
            go_quote(value),
            supported.join(", ")
        );
        Self::new(
            CauseReason::FieldValueNotSupported,
            field,
            with_detail(&head, detail),
        )
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        let message = with_detail("Forbidden", detail);
        Self::new(CauseReason::FieldValueForbidden, field, message)
    }
}

impl fmt::Display for FieldError {
    /// `field: message`, Go's `field.Error.Error()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

/// The message of `apierrors.NewInvalid(kind.group, name, errs)`:
/// `BareMetalHost.metal3.io "h" is invalid: <aggregate>`, where the aggregate
/// is the one error, or `[e1, e2]` for several, de-duplicated by text like
/// Go's `utilerrors.NewAggregate`.
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let mut texts: Vec<String> = Vec::with_capacity(errors.len());
    for e in errors {
        let text = e.to_string();
        if !texts.contains(&text) {
            texts.push(text);
        }
    }
    let aggregate = match texts.as_slice() {
        [] => String::new(),
        [one] => format!(": {one}"),
        many => format!(": [{}]", many.join(", ")),
    };
    format!("{kind}.{group} {} is invalid{aggregate}", go_quote(name))
}

/// Quotes like Go's `%q` (`strconv.Quote`): printable characters as they
/// are, `"` and `\` escaped, control characters as `\n`, `\x01`, `\u0085`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Both sets lie in the Basic Multilingual Plane: four hex digits.
            c if c.is_control() || is_format_or_separator(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Invisible characters Go's `strconv.IsPrint` rejects that are not
/// `char::is_control` (bidi controls, zero-width and line/paragraph
/// separators): echoing them raw would hide what is wrong with a value.
fn is_format_or_separator(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("ftp://h/a.iso"), r#""ftp://h/a.iso""#);
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("a\tb\nc\u{1}\u{7f}"), r#""a\tb\nc\x01\x7f""#);
        assert_eq!(go_quote("bücher\u{200b}"), "\"bücher\\u200b\"");
        assert_eq!(go_quote(""), r#""""#);
    }

    #[test]
    fn error_bodies_match_kubernetes() {
        let e = FieldError::invalid(
            "spec.dataImage.url",
            "ftp://h/a.iso",
            "scheme must be http or https",
        );
        assert_eq!(
            e.to_string(),
            r#"spec.dataImage.url: Invalid value: "ftp://h/a.iso": scheme must be http or https"#
        );
        assert_eq!(
            FieldError::required("spec.dataImage.url", "").to_string(),
            "spec.dataImage.url: Required value"
        );
        assert_eq!(
            FieldError::not_supported(
                "spec.bmc.address",
                "ipmi",
                &["redfish", "idrac-redfish"],
                ""
            )
            .message,
            r#"Unsupported value: "ipmi": supported values: "redfish", "idrac-redfish""#
        );
        assert_eq!(
            FieldError::forbidden("spec.dataImage", "no").message,
            "Forbidden: no"
        );
    }

    #[test]
    fn invalid_message_uses_brackets_only_for_several_distinct_errors() {
        let a = FieldError::required("spec.dataImage.url", "");
        let b = FieldError::forbidden("spec.dataImage", "x");
        assert_eq!(
            invalid_message("BareMetalHost", "metal3.io", "h", std::slice::from_ref(&a)),
            r#"BareMetalHost.metal3.io "h" is invalid: spec.dataImage.url: Required value"#
        );
        assert_eq!(
            invalid_message(
                "BareMetalHost",
                "metal3.io",
                "h",
                &[a.clone(), b.clone(), a.clone()]
            ),
            r#"BareMetalHost.metal3.io "h" is invalid: [spec.dataImage.url: Required value, spec.dataImage: Forbidden: x]"#
        );
    }
}
