//! Pure judgement of a node's CD drive after an attach or detach.
//!
//! Ironic answers 204 before it does the work: the conductor downloads the
//! image, republishes it as `.../redfish/cdrom-<node-uuid>.iso` and inserts
//! it, holding the node lock (`reservation`) meanwhile. Failures show only
//! in the node's `last_error`, which Ironic also uses for its own failures:
//! only messages about our device count.

use super::{Node, VirtualMedia};

/// The state an attach or detach should lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Our image (`cdrom-<node-uuid>.iso`) is in the CD drive.
    Inserted,
    /// The CD drive is empty.
    Ejected,
}

/// What one observation says about the expected state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The drive is in the expected state and no operation holds the node.
    Confirmed,
    /// Not there yet (worker running, node locked, other media): the reason.
    Pending(String),
    /// Ironic reported a failure of our device in `last_error` (or the BMC
    /// has no CD drive): the message, credentials redacted.
    Failed(String),
}

/// One look at a node: its document, its virtual media and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub node: Node,
    pub media: Vec<VirtualMedia>,
    pub verdict: Verdict,
}

impl Observation {
    /// The CD/DVD slot, if the BMC has one.
    pub fn cd(&self) -> Option<&VirtualMedia> {
        cd_slot(&self.media)
    }
}

/// The virtual CD/DVD drive among the BMC's media slots.
pub fn cd_slot(media: &[VirtualMedia]) -> Option<&VirtualMedia> {
    media.iter().find(|m| {
        m.media_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("CD") || t.eq_ignore_ascii_case("DVD"))
    })
}

fn image_file_name(image: &str) -> &str {
    let path = image.split(['?', '#']).next().unwrap_or(image);
    path.rsplit('/').next().unwrap_or(path)
}

/// Ironic republishes media inserted through the vmedia API as
/// `cdrom-<node-uuid>.iso`: that file name marks the image as ours.
pub fn is_vmedia_api_image(image: &str, node_uuid: &str) -> bool {
    !node_uuid.is_empty() && image_file_name(image) == format!("cdrom-{node_uuid}.iso")
}

/// Ironic's own boot/deploy media (`boot-<node-uuid>.iso`): never ours to
/// eject.
pub fn is_ironic_boot_image(image: &str, node_uuid: &str) -> bool {
    !node_uuid.is_empty() && image_file_name(image) == format!("boot-{node_uuid}.iso")
}

/// The part of `last_error` that is about our CD device for `expect`, if
/// any. Ironic writes `Could not attach device cdrom to node <uuid>: ...`
/// and `Could not detach device(s) ['cdrom'] from node <uuid>: ...` (or
/// `None` for all devices); a failure to start the worker mentions
/// "attaching/detaching virtual media".
pub fn device_error(last_error: Option<&str>, expect: Expect) -> Option<&str> {
    let error = last_error?.trim();
    if error.is_empty() {
        return None;
    }
    let ours = match expect {
        Expect::Inserted => {
            error.starts_with("Could not attach device cdrom ")
                || error.contains("attaching virtual media")
        }
        Expect::Ejected => {
            error
                .strip_prefix("Could not detach device(s) ")
                .is_some_and(|rest| {
                    let devices = rest.split(" from node ").next().unwrap_or("");
                    devices.contains("cdrom") || devices == "None"
                })
                || error.contains("detaching virtual media")
        }
    };
    ours.then_some(error)
}

/// Judges one observation. Meant for right after our attach/detach call:
/// Ironic clears `last_error` when it accepts the call, so an error about
/// our device seen afterwards is from this attempt.
pub fn evaluate(expect: Expect, node: &Node, media: &[VirtualMedia]) -> Verdict {
    if let Some(error) = device_error(node.last_error.as_deref(), expect) {
        return Verdict::Failed(error.to_string());
    }
    if let Some(holder) = &node.reservation {
        return Verdict::Pending(format!(
            "node is locked by {holder} (an operation is running)"
        ));
    }
    let Some(cd) = cd_slot(media) else {
        return match expect {
            Expect::Inserted => {
                Verdict::Failed("the BMC reports no virtual CD/DVD drive".to_string())
            }
            Expect::Ejected => Verdict::Confirmed,
        };
    };
    let image = cd.image.as_deref().unwrap_or("");
    match (expect, cd.inserted) {
        (Expect::Inserted, true) if is_vmedia_api_image(image, &node.uuid) => Verdict::Confirmed,
        (Expect::Inserted, true) => {
            Verdict::Pending(format!("the CD drive holds another image ({image})"))
        }
        (Expect::Inserted, false) => Verdict::Pending("the CD drive is empty".to_string()),
        (Expect::Ejected, false) => Verdict::Confirmed,
        (Expect::Ejected, true) => Verdict::Pending(format!("the CD drive still holds {image}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8c485e41-0b0e-4753-8392-48f92fa7c896";

    fn node(reservation: Option<&str>, last_error: Option<&str>) -> Node {
        Node {
            uuid: UUID.into(),
            provision_state: "active".into(),
            reservation: reservation.map(Into::into),
            last_error: last_error.map(Into::into),
            ..Node::default()
        }
    }

    fn media(inserted: bool, image: &str) -> Vec<VirtualMedia> {
        vec![
            VirtualMedia {
                media_types: vec!["CD".into(), "DVD".into()],
                inserted,
                image: (!image.is_empty()).then(|| image.to_string()),
            },
            VirtualMedia {
                media_types: vec!["Floppy".into(), "USBStick".into()],
                inserted: false,
                image: None,
            },
        ]
    }

    fn ours() -> String {
        format!("http://127.0.0.1:8088/redfish/cdrom-{UUID}.iso")
    }

    #[test]
    fn image_names() {
        assert!(is_vmedia_api_image(&ours(), UUID));
        assert!(is_vmedia_api_image(
            &format!("https://h/x/cdrom-{UUID}.iso?t=1"),
            UUID
        ));
        assert!(!is_vmedia_api_image(
            &format!("http://h/redfish/boot-{UUID}.iso"),
            UUID
        ));
        assert!(!is_vmedia_api_image(
            "http://h/redfish/cdrom-other.iso",
            UUID
        ));
        assert!(!is_vmedia_api_image("cdrom-.iso", ""));
        assert!(is_ironic_boot_image(
            &format!("http://h/redfish/boot-{UUID}.iso"),
            UUID
        ));
        assert!(!is_ironic_boot_image(&ours(), UUID));
    }

    #[test]
    fn attach_confirmed_when_our_image_is_in_and_node_free() {
        assert_eq!(
            evaluate(Expect::Inserted, &node(None, None), &media(true, &ours())),
            Verdict::Confirmed
        );
    }

    #[test]
    fn attach_pending_while_locked_or_empty_or_other_media() {
        let locked = evaluate(
            Expect::Inserted,
            &node(Some("ironic-1"), None),
            &media(true, &ours()),
        );
        assert!(
            matches!(&locked, Verdict::Pending(r) if r.contains("ironic-1")),
            "{locked:?}"
        );
        assert!(matches!(
            evaluate(Expect::Inserted, &node(None, None), &media(false, "")),
            Verdict::Pending(_)
        ));
        let boot = format!("http://h/redfish/boot-{UUID}.iso");
        assert!(matches!(
            evaluate(Expect::Inserted, &node(None, None), &media(true, &boot)),
            Verdict::Pending(r) if r.contains("boot-")
        ));
    }

    #[test]
    fn attach_failure_from_last_error_wins_even_while_locked() {
        let msg = format!(
            "Could not attach device cdrom to node {UUID}: Validation of image href http://127.0.0.1:1/missing.iso failed, reason: Got HTTP code 404 instead of 200 in response to HEAD request."
        );
        assert_eq!(
            evaluate(
                Expect::Inserted,
                &node(Some("x"), Some(&msg)),
                &media(false, "")
            ),
            Verdict::Failed(msg.clone())
        );
        // An attach error does not fail a detach.
        assert_eq!(
            evaluate(Expect::Ejected, &node(None, Some(&msg)), &media(false, "")),
            Verdict::Confirmed
        );
    }

    #[test]
    fn unrelated_last_errors_are_ignored() {
        for other in [
            "Failed to get power state for node x",
            "Could not attach device floppy to node x: boom",
            "Could not detach device(s) ['floppy'] from node x: boom",
        ] {
            assert_eq!(device_error(Some(other), Expect::Inserted), None, "{other}");
            assert_eq!(device_error(Some(other), Expect::Ejected), None, "{other}");
        }
        assert_eq!(
            evaluate(
                Expect::Inserted,
                &node(None, Some("Failed to get power state")),
                &media(true, &ours())
            ),
            Verdict::Confirmed
        );
    }

    #[test]
    fn detach_errors_are_ours() {
        for msg in [
            "Could not detach device(s) ['cdrom'] from node x: BMC said no",
            "Could not detach device(s) None from node x: Driver fake-hardware does not support detach_virtual_media",
            "Unexpected error while detaching virtual media: no workers",
        ] {
            assert_eq!(device_error(Some(msg), Expect::Ejected), Some(msg));
            assert!(matches!(
                evaluate(
                    Expect::Ejected,
                    &node(None, Some(msg)),
                    &media(true, &ours())
                ),
                Verdict::Failed(_)
            ));
        }
    }

    #[test]
    fn detach_confirmed_when_drive_empty() {
        assert_eq!(
            evaluate(Expect::Ejected, &node(None, None), &media(false, "")),
            Verdict::Confirmed
        );
        assert!(matches!(
            evaluate(Expect::Ejected, &node(None, None), &media(true, &ours())),
            Verdict::Pending(_)
        ));
    }

    #[test]
    fn no_cd_drive() {
        let floppy_only = vec![VirtualMedia {
            media_types: vec!["Floppy".into()],
            inserted: false,
            image: None,
        }];
        assert!(matches!(
            evaluate(Expect::Inserted, &node(None, None), &floppy_only),
            Verdict::Failed(_)
        ));
        assert_eq!(
            evaluate(Expect::Ejected, &node(None, None), &floppy_only),
            Verdict::Confirmed
        );
        assert_eq!(cd_slot(&[]), None);
    }
}
