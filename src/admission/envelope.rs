//! The AdmissionReview envelope: parsing the request and writing the answer.
//!
//! The envelope is parsed with borrowed strings. [`parse_review_for`] decodes
//! `object` straight into the rules' types in the same pass (the endpoint
//! says which kind to expect); `oldObject` stays raw JSON, decoded later only
//! when the rules need it. Anything unexpected (an object that does not
//! decode, another kind) falls back to [`parse_review`], which keeps both
//! objects raw so that the rules can name the offending field. A body whose
//! envelope is damaged still yields its `uid` when one can be read (so the API server gets
//! an in-band answer it can show the user); only a body that is not an
//! AdmissionReview at all, or has no `request.uid`, is an HTTP-level error.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::rules::{
    DenyStatus, OldDataImages, Operation, ResourceKind, ReviewInput, TypedObject, Verdict,
};

pub const ADMISSION_V1: &str = "admission.k8s.io/v1";
pub const ADMISSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
const REVIEW_KIND: &str = "AdmissionReview";

/// A parsed AdmissionReview request (borrowing from the body).
#[derive(Debug)]
pub struct Review<'a> {
    /// The request's apiVersion, echoed in the answer.
    pub api_version: &'static str,
    pub uid: Cow<'a, str>,
    /// `request.kind.kind` as sent (for logs).
    pub kind_name: Cow<'a, str>,
    /// `None` when the kind is not one this webhook judges.
    pub kind: Option<ResourceKind>,
    pub operation: Operation,
    pub sub_resource: Option<Cow<'a, str>>,
    pub username: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub namespace: Cow<'a, str>,
    pub dry_run: bool,
    /// `request.options.fieldManager`: the field manager the writer named
    /// (absent when it named none, e.g. a controller-runtime `Update` without
    /// a field owner; the API server then derives the managedFields manager
    /// from the user agent but leaves the options as sent).
    pub field_manager: Option<Cow<'a, str>>,
    /// Raw `object` ([`parse_review`]); `None` when [`parse_review_for`]
    /// decoded it already.
    pub object: Option<&'a RawValue>,
    /// Raw `oldObject`; `None` when [`parse_review_for`] read it as
    /// [`Self::old_data_images`] already.
    pub old_object: Option<&'a RawValue>,
    /// What the mutating path restores from `oldObject`, read in the same
    /// pass by [`parse_review_for`] for the mutating endpoint.
    pub old_data_images: Option<OldDataImages>,
}

impl<'a> Review<'a> {
    /// `spec.dataImage` and `status.dataImage` of `oldObject`, from the same
    /// pass or else read from the raw `oldObject`.
    pub fn old_data_images(&self) -> Cow<'_, OldDataImages> {
        match &self.old_data_images {
            Some(old) => Cow::Borrowed(old),
            None => Cow::Owned(OldDataImages::from_raw(self.old_object)),
        }
    }

    /// The rules' view of this request (`None` for kinds we do not judge).
    pub fn input(&self) -> Option<ReviewInput<'_>> {
        Some(ReviewInput {
            kind: self.kind?,
            operation: self.operation,
            sub_resource: self.sub_resource.as_deref(),
            user: &self.username,
            name: &self.name,
            namespace: &self.namespace,
            object: self.object,
            old_object: self.old_object,
        })
    }
}

/// Why a body could not be turned into a [`Review`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The uid is known: answer HTTP 200 with `allowed: false`, code 400.
    InBand {
        api_version: &'static str,
        uid: String,
        message: String,
    },
    /// Not an AdmissionReview, or no `request.uid`: answer HTTP 400 plain text.
    NotAReview(String),
}

/// The envelope, with `object` read as `O`: `&RawValue` (kept raw) or
/// [`JsonObject`] of a rules type (decoded in the same pass).
#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>, P: Deserialize<'de>"))]
struct WireReview<'a, O, P = &'a RawValue> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<WireRequest<'a, O, P>>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>, P: Deserialize<'de>")
)]
struct WireRequest<'a, O, P> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<WireKind<'a>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_info: Option<WireUserInfo<'a>>,
    #[serde(default)]
    object: Option<O>,
    #[serde(default)]
    old_object: Option<P>,
    #[serde(default)]
    dry_run: Option<bool>,
    /// Kept raw: only `fieldManager` is read, and an odd `options` never
    /// makes the envelope unreadable.
    #[serde(borrow, default)]
    options: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireOptions<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    field_manager: Option<Cow<'a, str>>,
}

/// A `T` read only from a JSON object, as `rules::decode_json_text` does
/// (a derived struct would also accept an array).
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(JsonObject)
    }
}

#[derive(Deserialize)]
struct WireKind<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireUserInfo<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    username: Option<Cow<'a, str>>,
}

/// `Option<Cow<str>>` that borrows from the input when the string has no
/// escapes (serde's `borrow` alone does not reach inside an `Option`).
fn borrowed_str<'de: 'a, 'a, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(deserializer)?.map(|b| b.0))
}

fn known_api_version(api_version: &str) -> Option<&'static str> {
    [ADMISSION_V1, ADMISSION_V1BETA1]
        .into_iter()
        .find(|known| *known == api_version)
}

/// Parses an AdmissionReview request body, keeping `object` and `oldObject`
/// raw.
pub fn parse_review(body: &[u8]) -> Result<Review<'_>, EnvelopeError> {
    // Fast path without path tracking; on failure parse again to name the field.
    let parsed = match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str::<WireReview<'_, &RawValue>>(text),
        Err(_) => serde_json::from_slice(body),
    };
    let (mut review, object) = check_envelope(parsed.map_err(|_| damaged(body))?)?;
    review.object = object;
    Ok(review)
}

/// Parses an AdmissionReview request body for an endpoint that judges
/// `expected`, decoding `object` into the rules' type in the same pass.
///
/// Returns the typed object (`None` when there is none) with a [`Review`]
/// whose `object` is `None`, or falls back to [`parse_review`] (typed object
/// `None`, raw `object`) when the body does not parse this way (a damaged
/// envelope, an object the rules would reject as undecodable) or the review
/// is about another kind. Either way the rules decide the same.
///
/// With `mutating`, `oldObject` is read as [`OldDataImages`] in the same pass
/// (all the mutating path needs of it), else it is kept raw.
pub fn parse_review_for(
    body: &[u8],
    expected: ResourceKind,
    mutating: bool,
) -> Result<(Review<'_>, Option<TypedObject>), EnvelopeError> {
    let host = TypedObject::Host;
    let typed = match (expected, mutating) {
        (ResourceKind::BareMetalHost, false) => parse_typed::<_, &RawValue>(body, expected, host),
        (ResourceKind::BareMetalHost, true) => {
            parse_typed::<_, JsonObject<OldDataImages>>(body, expected, host)
        }
        (ResourceKind::DataImage, _) => {
            parse_typed::<_, &RawValue>(body, expected, TypedObject::DataImage)
        }
    };
    match typed {
        Some(parsed) => Ok(parsed),
        None => parse_review(body).map(|review| (review, None)),
    }
}

/// The single-pass parse; `None` whenever [`parse_review`] must decide.
fn parse_typed<'a, T: Deserialize<'a>, P: Deserialize<'a> + OldObject<'a>>(
    body: &'a [u8],
    expected: ResourceKind,
    typed: impl FnOnce(Box<T>) -> TypedObject,
) -> Option<(Review<'a>, Option<TypedObject>)> {
    // Checking UTF-8 once (SIMD) is cheaper than serde_json checking every
    // string and every raw value of a slice (about 5% of a review's CPU).
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let wire = serde_json::from_str::<WireReview<'a, JsonObject<T>, P>>(text).ok()?;
    let (review, object) = check_envelope(wire).ok()?;
    (review.kind == Some(expected)).then(|| (review, object.map(|o| typed(Box::new(o.0)))))
}

/// How `oldObject` was read: raw, or as [`OldDataImages`].
trait OldObject<'a> {
    fn store(self, review: &mut Review<'a>);
}

impl<'a> OldObject<'a> for &'a RawValue {
    fn store(self, review: &mut Review<'a>) {
        review.old_object = Some(self);
    }
}

impl<'a> OldObject<'a> for JsonObject<OldDataImages> {
    fn store(self, review: &mut Review<'a>) {
        review.old_data_images = Some(self.0);
    }
}

/// Checks a parsed envelope; returns the review (`oldObject` stored as read,
/// without `object`) and `object` as read.
fn check_envelope<'a, O, P: OldObject<'a>>(
    wire: WireReview<'a, O, P>,
) -> Result<(Review<'a>, Option<O>), EnvelopeError> {
    if wire.kind.as_deref() != Some(REVIEW_KIND) {
        return Err(EnvelopeError::NotAReview(format!(
            "not an AdmissionReview (kind is {})",
            wire.kind
                .as_deref()
                .map_or_else(|| "missing".to_string(), |k| format!("{k:?}"))
        )));
    }
    let Some(api_version) = wire.api_version.as_deref().and_then(known_api_version) else {
        return Err(EnvelopeError::NotAReview(format!(
            "unsupported AdmissionReview apiVersion {:?} (expected {ADMISSION_V1} or {ADMISSION_V1BETA1})",
            wire.api_version.as_deref().unwrap_or("")
        )));
    };
    let Some(request) = wire.request else {
        return Err(EnvelopeError::NotAReview(
            "AdmissionReview has no request".to_string(),
        ));
    };
    let Some(uid) = request.uid.filter(|uid| !uid.is_empty()) else {
        return Err(EnvelopeError::NotAReview(
            "AdmissionReview has no request.uid".to_string(),
        ));
    };
    let in_band = |message: String| EnvelopeError::InBand {
        api_version,
        uid: uid.to_string(),
        message,
    };
    let operation = match request.operation.as_deref() {
        Some(op) => Operation::parse(op)
            .ok_or_else(|| in_band(format!("request.operation: unsupported value {op:?}")))?,
        None => return Err(in_band("request.operation: missing".to_string())),
    };
    let kind_name = request
        .kind
        .and_then(|k| k.kind)
        .unwrap_or(Cow::Borrowed(""));
    let kind = [ResourceKind::BareMetalHost, ResourceKind::DataImage]
        .into_iter()
        .find(|kind| kind.as_str() == kind_name);
    let mut review = Review {
        api_version,
        uid,
        kind_name,
        kind,
        operation,
        sub_resource: request.sub_resource.filter(|s| !s.is_empty()),
        username: request
            .user_info
            .and_then(|u| u.username)
            .unwrap_or(Cow::Borrowed("")),
        name: request.name.unwrap_or(Cow::Borrowed("")),
        namespace: request.namespace.unwrap_or(Cow::Borrowed("")),
        dry_run: request.dry_run.unwrap_or(false),
        field_manager: request
            .options
            .and_then(|raw| serde_json::from_str::<WireOptions<'_>>(raw.get()).ok())
            .and_then(|options| options.field_manager)
            .filter(|manager| !manager.is_empty()),
        object: None,
        old_object: None,
        old_data_images: None,
    };
    if let Some(old_object) = request.old_object {
        old_object.store(&mut review);
    }
    Ok((review, request.object))
}

/// The parse error of `body`, naming the JSON path of the offending value.
fn describe_parse_error(body: &[u8]) -> String {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, WireReview<'_, &RawValue>>(&mut deserializer) {
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if path.is_empty() || path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        }
        Ok(_) => match deserializer.end() {
            Err(err) => err.to_string(),
            Ok(()) => "invalid JSON".to_string(),
        },
    }
}

/// Builds the error for a body that did not parse: in-band when the uid can
/// still be read from it.
fn damaged(body: &[u8]) -> EnvelopeError {
    let message = format!("malformed AdmissionReview: {}", describe_parse_error(body));
    match in_band_target(body) {
        Some((api_version, uid)) => EnvelopeError::InBand {
            api_version,
            uid,
            message,
        },
        None => EnvelopeError::NotAReview(message),
    }
}

/// What could be read from the start of a body that is damaged or truncated.
#[derive(Default)]
struct RecoveredIds {
    api_version: Option<String>,
    kind: Option<String>,
    uid: Option<String>,
}

/// The apiVersion and uid to answer in-band with, from `apiVersion`, `kind`
/// and `request.uid` of a possibly damaged or truncated body (an oversized
/// one is cut at the limit), keeping whatever was read before the first
/// error: `None` unless it is an AdmissionReview with a uid.
pub fn in_band_target(body: &[u8]) -> Option<(&'static str, String)> {
    let mut ids = RecoveredIds::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Errors are expected (that is why we are here): keep what was read.
    let seed = Ids {
        ids: &mut ids,
        request: false,
    };
    let _ = seed.deserialize(&mut deserializer);
    if ids.kind.is_some_and(|k| k != REVIEW_KIND) {
        return None;
    }
    let api_version = known_api_version(ids.api_version.as_deref()?)?;
    Some((api_version, ids.uid.filter(|uid| !uid.is_empty())?))
}

/// Reads the AdmissionReview object (`request: false`) or its `request`.
struct Ids<'s> {
    ids: &'s mut RecoveredIds,
    request: bool,
}

impl<'de> DeserializeSeed<'de> for Ids<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Ids<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let ids = &mut *self.ids;
            match (self.request, key.as_ref()) {
                (false, "apiVersion") => ids.api_version = map.next_value()?,
                (false, "kind") => ids.kind = map.next_value()?,
                (false, "request") => map.next_value_seed(Ids { ids, request: true })?,
                (true, "uid") => ids.uid = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct WireAnswer<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a DenyStatus>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Serialises the answer: the request's apiVersion and uid, the verdict, and
/// the patch as base64 JSON Patch (omitted when it has no operations).
pub fn render_answer(api_version: &str, uid: &str, verdict: &Verdict) -> Vec<u8> {
    let patch = verdict
        .patch
        .as_ref()
        .filter(|patch| !patch.0.is_empty())
        .and_then(|patch| serde_json::to_vec(patch).ok())
        .map(|json| base64::engine::general_purpose::STANDARD.encode(json));
    let answer = WireAnswer {
        api_version,
        kind: REVIEW_KIND,
        response: WireResponse {
            uid,
            allowed: verdict.allowed,
            status: verdict.status.as_ref(),
            warnings: &verdict.warnings,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
        },
    };
    // Serialising these plain structs cannot fail; fall back to a minimal
    // denial rather than panicking if it ever did.
    serde_json::to_vec(&answer).unwrap_or_else(|_| {
        format!(
            r#"{{"apiVersion":{},"kind":"AdmissionReview","response":{{"uid":{},"allowed":false}}}}"#,
            serde_json::Value::from(api_version),
            serde_json::Value::from(uid)
        )
        .into_bytes()
    })
}

/// A denial for a request-level problem (bad envelope, oversized, panic).
pub fn error_verdict(code: u16, reason: &str, message: impl Into<String>) -> Verdict {
    Verdict {
        allowed: false,
        status: Some(DenyStatus {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }),
        ..Verdict::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_REVIEW: &str = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{
        "uid":"abc-123","kind":{"group":"metal3.io","version":"v1alpha1","kind":"BareMetalHost"},
        "name":"host-0","namespace":"metal3","operation":"UPDATE",
        "userInfo":{"username":"admin","groups":["system:masters"]},
        "object":{"metadata":{"name":"host-0"},"spec":{"online":true}},
        "oldObject":null,"dryRun":true,"options":{"kind":"UpdateOptions"}}}"#;

    #[test]
    fn parses_the_envelope_and_keeps_objects_raw() {
        let review = parse_review(V1_REVIEW.as_bytes()).unwrap();
        assert_eq!(review.api_version, ADMISSION_V1);
        assert_eq!(review.uid, "abc-123");
        assert_eq!(review.kind, Some(ResourceKind::BareMetalHost));
        assert_eq!(review.operation, Operation::Update);
        assert_eq!(review.username, "admin");
        assert_eq!(
            (review.namespace.as_ref(), review.name.as_ref()),
            ("metal3", "host-0")
        );
        assert!(review.dry_run);
        assert_eq!(
            review.object.unwrap().get(),
            r#"{"metadata":{"name":"host-0"},"spec":{"online":true}}"#
        );
        assert!(review.old_object.is_none(), "explicit null is no object");
        assert!(
            matches!(review.uid, Cow::Borrowed(_)),
            "plain strings are borrowed"
        );
    }

    #[test]
    fn v1beta1_is_accepted_and_echoed() {
        let body = V1_REVIEW.replace("admission.k8s.io/v1\"", "admission.k8s.io/v1beta1\"");
        assert_eq!(
            parse_review(body.as_bytes()).unwrap().api_version,
            ADMISSION_V1BETA1
        );
    }

    #[test]
    fn missing_name_and_unknown_kind_are_fine() {
        let body = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u",
            "kind":{"kind":"Pod"},"namespace":"n","operation":"CREATE","object":{}}}"#;
        let review = parse_review(body.as_bytes()).unwrap();
        assert_eq!(review.name, "");
        assert_eq!(review.kind, None);
        assert!(review.input().is_none());
    }

    #[test]
    fn not_a_review_or_no_uid_is_an_http_error() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"kind":"Pod","apiVersion":"v1"}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v2","request":{"uid":"u"}}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":42}}"#,
        ] {
            assert!(
                matches!(
                    parse_review(body.as_bytes()),
                    Err(EnvelopeError::NotAReview(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn damaged_envelope_with_uid_is_answered_in_band_naming_the_field() {
        let body = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u-1",
            "operation":7}}"#;
        match parse_review(body.as_bytes()) {
            Err(EnvelopeError::InBand {
                api_version,
                uid,
                message,
            }) => {
                assert_eq!((api_version, uid.as_str()), (ADMISSION_V1, "u-1"));
                assert!(message.contains("request.operation"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let bad_op = V1_REVIEW.replace("\"UPDATE\"", "\"PATCH\"");
        match parse_review(bad_op.as_bytes()) {
            Err(EnvelopeError::InBand { message, .. }) => {
                assert!(message.contains("PATCH"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Broken JSON after the uid (e.g. an object cut short).
        let truncated = &V1_REVIEW[..V1_REVIEW.find("\"spec\"").unwrap()];
        assert!(matches!(
            parse_review(truncated.as_bytes()),
            Err(EnvelopeError::InBand { .. })
        ));
    }

    /// The verdicts of both paths (single pass and raw two-pass) for a body.
    fn verdicts_both_ways(body: &str, expected: ResourceKind) -> [(Verdict, Verdict); 2] {
        let mut policy = crate::rules::Policy::default();
        policy.operator_users.push("operator".to_string());
        let secret = crate::rules::SecretLookup::NotNeeded;
        let judge = |review: &Review<'_>, typed: Option<TypedObject>| {
            let input = review.input().unwrap();
            let decoded = match typed {
                Some(object) => crate::rules::decode_typed(&input, object),
                None => crate::rules::decode(&input),
            };
            (
                crate::rules::validate(&input, &decoded, &secret, &policy),
                crate::rules::mutate(&input, &decoded, &review.old_data_images(), &policy),
            )
        };
        let raw = parse_review(body.as_bytes()).unwrap();
        let (review, typed) = parse_review_for(body.as_bytes(), expected, false).unwrap();
        let (mutating, mutating_typed) = parse_review_for(body.as_bytes(), expected, true).unwrap();
        let verdicts = [judge(&raw, None), judge(&review, typed)];
        // The mutating endpoint reads oldObject's data images in the same pass.
        assert_eq!(judge(&mutating, mutating_typed).1, verdicts[0].1);
        verdicts
    }

    fn review_with(kind: &str, operation: &str, user: &str, object: &str, old: &str) -> String {
        format!(
            r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"u",
            "kind":{{"kind":"{kind}"}},"name":"h","namespace":"n","operation":"{operation}",
            "userInfo":{{"username":"{user}"}},"object":{object},"oldObject":{old}}}}}"#
        )
    }

    #[test]
    fn single_pass_decodes_the_object_typed_and_keeps_old_object_raw() {
        let body = review_with(
            "BareMetalHost",
            "UPDATE",
            "admin",
            r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":"https://h/a.iso"}}}"#,
            r#"{"spec":{}}"#,
        );
        let (review, typed) =
            parse_review_for(body.as_bytes(), ResourceKind::BareMetalHost, false).unwrap();
        let Some(TypedObject::Host(host)) = typed else {
            panic!("{typed:?}")
        };
        assert_eq!(
            host.data_image().and_then(|d| d.url.as_deref()),
            Some("https://h/a.iso")
        );
        assert!(review.object.is_none());
        assert_eq!(review.old_object.unwrap().get(), r#"{"spec":{}}"#);
        assert_eq!(review.uid, "u");
    }

    #[test]
    fn single_pass_falls_back_to_raw_objects_when_unsure() {
        let cases = [
            // A field of the wrong type: the rules must name it.
            (
                "BareMetalHost",
                r#"{"spec":{"dataImage":{"url":42}}}"#,
                ResourceKind::BareMetalHost,
            ),
            // Not a JSON object.
            ("BareMetalHost", "[1]", ResourceKind::BareMetalHost),
            // Another kind than the endpoint's.
            (
                "DataImage",
                r#"{"spec":{"url":"https://h/a.iso"}}"#,
                ResourceKind::BareMetalHost,
            ),
            ("Pod", r#"{"spec":{}}"#, ResourceKind::BareMetalHost),
        ];
        for (kind, object, expected) in cases {
            let body = review_with(kind, "CREATE", "admin", object, "null");
            let (review, typed) = parse_review_for(body.as_bytes(), expected, false).unwrap();
            assert!(typed.is_none(), "{kind} {object}");
            assert_eq!(review.object.map(RawValue::get), Some(object));
        }
        // A damaged envelope gives the same error both ways.
        let bad = V1_REVIEW.replace("\"UPDATE\"", "7");
        assert_eq!(
            parse_review_for(bad.as_bytes(), ResourceKind::BareMetalHost, false).unwrap_err(),
            parse_review(bad.as_bytes()).unwrap_err()
        );
    }

    #[test]
    fn single_pass_and_raw_objects_give_the_same_verdicts() {
        let host = r#"{"metadata":{"name":"h","annotations":{"a":"b"}},
            "spec":{"online":true,"bmc":{"address":"redfish-virtualmedia://10.0.0.1/redfish/v1/Systems/1"},
                "dataImage":{"url":"https://u:p@h/a.iso"}},
            "status":{"hardware":{"cpu":{"count":8}},"dataImage":{"state":"Attached"}}}"#;
        let without = r#"{"metadata":{"name":"h"},"spec":{"online":true},"status":{"x":1}}"#;
        let old = r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":"http://h/old.iso","extra":1}},
            "status":{"dataImage":{"state":"Attached"}}}"#;
        let image = r#"{"metadata":{"name":"h"},"spec":{"url":"ftp://h/a.iso"}}"#;
        let mut cases = vec![
            (
                review_with("BareMetalHost", "CREATE", "admin", host, "null"),
                ResourceKind::BareMetalHost,
            ),
            (
                review_with("BareMetalHost", "UPDATE", "admin", host, old),
                ResourceKind::BareMetalHost,
            ),
            (
                review_with("BareMetalHost", "UPDATE", "operator", without, old),
                ResourceKind::BareMetalHost,
            ),
            (
                review_with("BareMetalHost", "DELETE", "admin", "null", old),
                ResourceKind::BareMetalHost,
            ),
            (
                review_with(
                    "BareMetalHost",
                    "UPDATE",
                    "admin",
                    r#"{"spec":{"dataImage":{"url":42}}}"#,
                    old,
                ),
                ResourceKind::BareMetalHost,
            ),
            (
                review_with("DataImage", "CREATE", "admin", image, "null"),
                ResourceKind::DataImage,
            ),
            (
                review_with("DataImage", "UPDATE", "admin", image, image),
                ResourceKind::DataImage,
            ),
        ];
        let status = review_with("BareMetalHost", "UPDATE", "operator", without, old)
            .replace(r#""operation""#, r#""subResource":"status","operation""#);
        cases.push((status, ResourceKind::BareMetalHost));
        for (body, expected) in cases {
            let [raw, single] = verdicts_both_ways(&body, expected);
            assert_eq!(raw, single, "{body}");
        }
    }

    #[test]
    fn single_pass_matches_on_the_bench_fixtures() {
        for (name, expected) in [
            ("update-allow", ResourceKind::BareMetalHost),
            ("update-deny", ResourceKind::BareMetalHost),
            ("update-mutate-nopatch", ResourceKind::BareMetalHost),
            ("status-restore-patch", ResourceKind::BareMetalHost),
            ("create-allow", ResourceKind::BareMetalHost),
            ("create-deny", ResourceKind::BareMetalHost),
            ("create-mutate-patch", ResourceKind::BareMetalHost),
        ] {
            let path = format!(
                "{}/tests/fixtures/bench/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let body = std::fs::read_to_string(&path).unwrap();
            let [raw, single] = verdicts_both_ways(&body, expected);
            assert_eq!(raw, single, "{name}");
            let (_, typed) = parse_review_for(body.as_bytes(), expected, false).unwrap();
            assert!(typed.is_some(), "{name} takes the single pass");
        }
    }

    #[test]
    fn recovers_ids_from_a_truncated_body() {
        assert_eq!(
            in_band_target(&V1_REVIEW.as_bytes()[..120]),
            Some((ADMISSION_V1, "abc-123".to_string()))
        );
        assert_eq!(in_band_target(&V1_REVIEW.as_bytes()[..60]), None);
    }

    #[test]
    fn answer_has_base64_patch_only_when_it_changes_something() {
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/spec/online","value":false}]"#).unwrap();
        let verdict = Verdict {
            allowed: true,
            warnings: vec!["careful".into()],
            patch: Some(patch),
            ..Verdict::default()
        };
        let answer: serde_json::Value =
            serde_json::from_slice(&render_answer(ADMISSION_V1BETA1, "u", &verdict)).unwrap();
        assert_eq!(answer["apiVersion"], ADMISSION_V1BETA1);
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], "u");
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert_eq!(answer["response"]["warnings"][0], "careful");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
            serde_json::json!([{"op":"add","path":"/spec/online","value":false}])
        );

        let empty = Verdict {
            allowed: true,
            patch: Some(json_patch::Patch(Vec::new())),
            ..Verdict::default()
        };
        let answer: serde_json::Value =
            serde_json::from_slice(&render_answer(ADMISSION_V1, "u", &empty)).unwrap();
        assert_eq!(
            answer["response"],
            serde_json::json!({"uid":"u","allowed":true})
        );
    }

    #[test]
    fn error_answers_carry_code_reason_and_message() {
        let verdict = error_verdict(413, "RequestEntityTooLarge", "too big");
        let answer: serde_json::Value =
            serde_json::from_slice(&render_answer(ADMISSION_V1, "u", &verdict)).unwrap();
        assert_eq!(
            answer["response"],
            serde_json::json!({"uid":"u","allowed":false,"status":{"code":413,"reason":"RequestEntityTooLarge","message":"too big"}})
        );
    }

    #[test]
    fn reads_the_field_manager_of_the_options() {
        let with =
            |options: &str| V1_REVIEW.replace(r#""options":{"kind":"UpdateOptions"}"#, options);
        // As sent for a write naming no field manager (controller-runtime's Update).
        let review = parse_review(V1_REVIEW.as_bytes()).unwrap();
        assert_eq!(review.field_manager, None);
        let body = with(
            r#""options":{"kind":"UpdateOptions","apiVersion":"meta.k8s.io/v1","fieldManager":"metal3-dataimage"}"#,
        );
        let review = parse_review(body.as_bytes()).unwrap();
        assert_eq!(review.field_manager.as_deref(), Some("metal3-dataimage"));
        let (review, _) =
            parse_review_for(body.as_bytes(), ResourceKind::BareMetalHost, false).unwrap();
        assert_eq!(review.field_manager.as_deref(), Some("metal3-dataimage"));
        // An empty name is none; odd options never make the review unreadable.
        for options in [
            r#""options":{"kind":"UpdateOptions","fieldManager":""}"#,
            r#""options":"UpdateOptions""#,
            r#""options":{"fieldManager":42}"#,
            r#""options":null"#,
        ] {
            let body = with(options);
            let review =
                parse_review(body.as_bytes()).unwrap_or_else(|e| panic!("{options}: {e:?}"));
            assert_eq!(review.field_manager, None, "{options}");
            assert_eq!(review.uid, "abc-123");
        }
    }

    #[test]
    fn captured_reviews_carry_the_writers_field_manager() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/admission-reviews"
        );
        for (file, manager) in [
            ("bmh-update-replace.mutate.json", Some("kubectl-replace")),
            ("bmh-update-patch-merge.mutate.json", Some("kubectl-patch")),
            ("bmh-update-server-side-apply.mutate.json", Some("kubectl")),
            (
                "extra-bmh-update-status-with-status-rule.mutate.json",
                Some("kubectl-patch"),
            ),
            ("bmh-delete.mutate.json", None),
        ] {
            let body = std::fs::read(format!("{dir}/{file}")).unwrap();
            let review = parse_review(&body).unwrap();
            assert_eq!(review.field_manager.as_deref(), manager, "{file}");
        }
    }
}
