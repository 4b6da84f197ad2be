//! What on an Ironic node is ours: the one place that decides
//!
//! * whether the virtual CD drive holds our media: Ironic republishes an
//!   image inserted through the vmedia API as `cdrom-<node-uuid>.iso` (its
//!   own boot/deploy media is `boot-<node-uuid>.iso`), so the file name of
//!   the drive's image marks it as ours;
//! * whether the node's `last_error` is the failure of our attach or detach.
//!   Ironic writes its own failures there too, including its own
//!   virtual-media boot failures ("Inserting virtual media into cd failed
//!   ..."), which are not ours. Only the two messages the vmedia API's
//!   workers write count (the same text in Ironic 26.1 and 39, see the
//!   fixtures under `tests/fixtures/ironic/last_error/`):
//!   `Could not attach device cdrom to node <uuid>: <reason>` and
//!   `Could not detach device(s) <devices> from node <uuid>: <reason>` with
//!   `cdrom` among the devices (or `None`: all devices).
//!
//! Used by the reconciler's decision (`reconcile::decision`) and the test
//! suites' drive verdicts.

use prometheus_client::encoding::EncodeLabelValue;

use super::VirtualMedia;

/// Which of our operations a `last_error` may belong to (also the
/// reconciler's `operation` metric label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Op {
    Attach,
    Detach,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Detach => "detach",
        }
    }
}

/// What the virtual CD drive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CdContents {
    /// No CD drive, or nothing inserted.
    Empty,
    /// Media inserted through the vmedia API (`cdrom-<node-uuid>.iso`).
    Ours,
    /// Anything else (Ironic's `boot-<node-uuid>.iso`, a live ISO, another
    /// node's image): the image URL as the BMC reports it (may be empty;
    /// not redacted).
    Other(String),
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
pub(crate) fn is_our_image(image: &str, node_uuid: &str) -> bool {
    !node_uuid.is_empty() && image_file_name(image) == format!("cdrom-{node_uuid}.iso")
}

/// What the node's CD drive holds, judged by [`is_our_image`].
pub fn cd_contents(media: &[VirtualMedia], node_uuid: &str) -> CdContents {
    match cd_slot(media) {
        Some(slot) if slot.inserted => {
            let image = slot.image.as_deref().unwrap_or("");
            if is_our_image(image, node_uuid) {
                CdContents::Ours
            } else {
                CdContents::Other(image.to_string())
            }
        }
        _ => CdContents::Empty,
    }
}

const ATTACH_PREFIX: &str = "Could not attach device cdrom to node ";
const DETACH_PREFIX: &str = "Could not detach device(s) ";

/// `last_error` (trimmed) if it is the failure of our attach or detach of
/// the CD drive; `op` narrows it to one of them (`None`: either).
pub fn our_error(last_error: Option<&str>, op: Option<Op>) -> Option<&str> {
    let error = last_error?.trim();
    let attach = || error.starts_with(ATTACH_PREFIX);
    let detach = || {
        error.strip_prefix(DETACH_PREFIX).is_some_and(|rest| {
            rest.split_once(" from node ").is_some_and(|(devices, _)| {
                devices == "None"
                    || devices
                        .trim_matches(['[', ']'])
                        .split(',')
                        .any(|d| d.trim().trim_matches(['\'', '"']) == "cdrom")
            })
        })
    };
    let ours = match op {
        Some(Op::Attach) => attach(),
        Some(Op::Detach) => detach(),
        None => attach() || detach(),
    };
    ours.then_some(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8c485e41-0b0e-4753-8392-48f92fa7c896";

    fn cd(inserted: bool, image: Option<&str>) -> Vec<VirtualMedia> {
        vec![
            VirtualMedia {
                media_types: vec!["Floppy".into(), "USBStick".into()],
                inserted: true,
                image: Some(format!("http://h/redfish/floppy-{UUID}.img")),
            },
            VirtualMedia {
                media_types: vec!["CD".into(), "DVD".into()],
                inserted,
                image: image.map(str::to_string),
            },
        ]
    }

    #[test]
    fn image_names() {
        let ours = format!("http://127.0.0.1:8088/redfish/cdrom-{UUID}.iso");
        assert!(is_our_image(&ours, UUID));
        assert!(is_our_image(
            &format!("https://h/x/cdrom-{UUID}.iso?t=1"),
            UUID
        ));
        assert!(is_our_image(&format!("cdrom-{UUID}.iso"), UUID));
        let boot = format!("http://h/redfish/boot-{UUID}.iso");
        assert!(!is_our_image(&boot, UUID));
        assert!(!is_our_image("http://h/redfish/cdrom-other.iso", UUID));
        assert!(!is_our_image(&format!("http://h/cdrom-{UUID}.iso/x"), UUID));
        assert!(!is_our_image("cdrom-.iso", ""));
    }

    #[test]
    fn drive_contents() {
        let ours = format!("http://h/redfish/cdrom-{UUID}.iso");
        assert_eq!(cd_contents(&cd(true, Some(&ours)), UUID), CdContents::Ours);
        // Stale image field of an ejected drive.
        assert_eq!(
            cd_contents(&cd(false, Some(&ours)), UUID),
            CdContents::Empty
        );
        assert_eq!(cd_contents(&cd(false, None), UUID), CdContents::Empty);
        let boot = format!("http://h/redfish/boot-{UUID}.iso");
        assert_eq!(
            cd_contents(&cd(true, Some(&boot)), UUID),
            CdContents::Other(boot)
        );
        assert_eq!(
            cd_contents(&cd(true, None), UUID),
            CdContents::Other(String::new())
        );
        // Another node's image is not ours.
        assert!(matches!(
            cd_contents(&cd(true, Some(&ours)), "other-uuid"),
            CdContents::Other(_)
        ));
        assert_eq!(cd_contents(&[], UUID), CdContents::Empty);
        assert!(cd_slot(&cd(true, None)).unwrap().media_types[0] == "CD");
    }

    /// Real `last_error` texts of both tested releases (node UUIDs and the
    /// image server's port normalised; how each was produced is in the
    /// `.note` file beside it) and whose they are.
    const FIXTURES: &[(&str, &str, Option<Op>)] = &[
        (
            "26.1.6/attach-image-404",
            include_str!("../../tests/fixtures/ironic/last_error/26.1.6/attach-image-404.txt"),
            Some(Op::Attach),
        ),
        (
            "39.0.0/attach-image-404",
            include_str!("../../tests/fixtures/ironic/last_error/39.0.0/attach-image-404.txt"),
            Some(Op::Attach),
        ),
        (
            "26.1.6/attach-bmc-refuses",
            include_str!("../../tests/fixtures/ironic/last_error/26.1.6/attach-bmc-refuses.txt"),
            Some(Op::Attach),
        ),
        (
            "39.0.0/attach-bmc-refuses",
            include_str!("../../tests/fixtures/ironic/last_error/39.0.0/attach-bmc-refuses.txt"),
            Some(Op::Attach),
        ),
        (
            "26.1.6/attach-image-unreachable",
            include_str!(
                "../../tests/fixtures/ironic/last_error/26.1.6/attach-image-unreachable.txt"
            ),
            Some(Op::Attach),
        ),
        (
            "39.0.0/attach-image-unreachable",
            include_str!(
                "../../tests/fixtures/ironic/last_error/39.0.0/attach-image-unreachable.txt"
            ),
            Some(Op::Attach),
        ),
        (
            "26.1.6/boot-iso-404",
            include_str!("../../tests/fixtures/ironic/last_error/26.1.6/boot-iso-404.txt"),
            None,
        ),
        (
            "39.0.0/boot-iso-404",
            include_str!("../../tests/fixtures/ironic/last_error/39.0.0/boot-iso-404.txt"),
            None,
        ),
        (
            "26.1.6/boot-bmc-refuses",
            include_str!("../../tests/fixtures/ironic/last_error/26.1.6/boot-bmc-refuses.txt"),
            None,
        ),
        (
            "39.0.0/boot-bmc-refuses",
            include_str!("../../tests/fixtures/ironic/last_error/39.0.0/boot-bmc-refuses.txt"),
            None,
        ),
        // Not a last_error: the 409 answer while the node is locked.
        (
            "26.1.6/get-vmedia-409-locked",
            include_str!("../../tests/fixtures/ironic/last_error/26.1.6/get-vmedia-409-locked.txt"),
            None,
        ),
    ];

    #[test]
    fn real_last_errors_of_both_releases() {
        for (name, text, whose) in FIXTURES {
            assert!(!text.trim().is_empty(), "{name} is empty");
            for op in [Op::Attach, Op::Detach] {
                let expected = (*whose == Some(op)).then_some(text.trim());
                assert_eq!(our_error(Some(text), Some(op)), expected, "{name} {op:?}");
            }
            let either = whose.is_some().then_some(text.trim());
            assert_eq!(our_error(Some(text), None), either, "{name}");
        }
    }

    #[test]
    fn detach_errors_and_lookalikes() {
        for (msg, ours) in [
            // The detach worker's template: `Could not detach device(s)
            // %(device_types)s from node %(node)s: %(exc)s`.
            (
                "Could not detach device(s) ['cdrom'] from node x: BMC said no",
                true,
            ),
            (
                "Could not detach device(s) ['floppy', 'cdrom'] from node x: no",
                true,
            ),
            (
                "Could not detach device(s) None from node x: Driver fake-hardware does not support detach_virtual_media",
                true,
            ),
            (
                "Could not detach device(s) ['floppy'] from node x: boom",
                false,
            ),
            (
                "Could not detach device(s) ['cdrom2'] from node x: boom",
                false,
            ),
            ("Could not detach device(s) ['cdrom']", false),
        ] {
            assert_eq!(
                our_error(Some(msg), Some(Op::Detach)).is_some(),
                ours,
                "{msg}"
            );
            assert_eq!(our_error(Some(msg), Some(Op::Attach)), None, "{msg}");
        }
        for other in [
            "",
            "   ",
            "Failed to get power state for node x",
            "Could not attach device floppy to node x: boom",
            "Could not attach device disk to node x: boom",
            // A spawn failure of our worker says only this (the purpose is
            // logged, not stored): not recognisable as ours.
            "No free conductor workers available",
            "Error validating Redfish virtual media. Some parameters were missing",
            "Unexpected error while attaching virtual media",
        ] {
            assert_eq!(our_error(Some(other), None), None, "{other}");
        }
        assert_eq!(our_error(None, None), None);
        assert_eq!(
            our_error(Some("  Could not attach device cdrom to node x: y\n"), None),
            Some("Could not attach device cdrom to node x: y")
        );
    }
}
