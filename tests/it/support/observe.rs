//! Pure judgement of a node's CD drive after an attach or detach.
//!
//! Ironic answers 204 before it does the work: the conductor downloads the
//! image, republishes it as `.../redfish/cdrom-<node-uuid>.iso` and inserts
//! it, holding the node lock (`reservation`) meanwhile. Failures show only
//! in the node's `last_error`, which Ironic also uses for its own failures:
//! only messages about our device count.
//!
//! Test-only: the reconciler judges the drive in its decision; the suites
//! use [`CdromExt::wait_cdrom`] to see what Ironic did.

use std::time::Duration;

use metal3_dataimage::ironic::ours::{CdContents, Op, cd_contents, cd_slot, our_error};
use metal3_dataimage::ironic::{IronicApi, IronicClient, IronicError, Node, VirtualMedia};
use tokio::time::Instant;

/// The state an attach or detach should lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Our image (`cdrom-<node-uuid>.iso`) is in the CD drive.
    Inserted,
    /// The CD drive is empty.
    Ejected,
}

/// What one observation says about the expected state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
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
pub(crate) struct Observation {
    pub node: Node,
    pub media: Vec<VirtualMedia>,
    pub verdict: Verdict,
}

impl Observation {
    /// The CD/DVD slot, if the BMC has one.
    pub(crate) fn cd(&self) -> Option<&VirtualMedia> {
        cd_slot(&self.media)
    }
}

/// The part of `last_error` that is about our CD device for `expect`, if
/// any: [`super::ours::our_error`].
fn device_error(last_error: Option<&str>, expect: Expect) -> Option<&str> {
    let op = match expect {
        Expect::Inserted => Op::Attach,
        Expect::Ejected => Op::Detach,
    };
    our_error(last_error, Some(op))
}

/// Judges one observation. Meant for right after our attach/detach call:
/// Ironic clears `last_error` when it accepts the call, so an error about
/// our device seen afterwards is from this attempt.
pub(crate) fn evaluate(expect: Expect, node: &Node, media: &[VirtualMedia]) -> Verdict {
    if let Some(error) = device_error(node.last_error.as_deref(), expect) {
        return Verdict::Failed(error.to_string());
    }
    if let Some(holder) = &node.reservation {
        return Verdict::Pending(format!(
            "node is locked by {holder} (an operation is running)"
        ));
    }
    if cd_slot(media).is_none() && expect == Expect::Inserted {
        return Verdict::Failed("the BMC reports no virtual CD/DVD drive".to_string());
    }
    match (expect, cd_contents(media, &node.uuid)) {
        (Expect::Inserted, CdContents::Ours) => Verdict::Confirmed,
        (Expect::Inserted, CdContents::Other(image)) => {
            Verdict::Pending(format!("the CD drive holds another image ({image})"))
        }
        (Expect::Inserted, CdContents::Empty) => {
            Verdict::Pending("the CD drive is empty".to_string())
        }
        (Expect::Ejected, CdContents::Empty) => Verdict::Confirmed,
        (Expect::Ejected, CdContents::Ours) => Verdict::Pending(format!(
            "the CD drive still holds our image (cdrom-{}.iso)",
            node.uuid
        )),
        (Expect::Ejected, CdContents::Other(image)) => {
            Verdict::Pending(format!("the CD drive still holds {image}"))
        }
    }
}

/// Judges a node whose virtual media could not be read because Ironic
/// answered `GET vmedia` with 409 (node locked: before Ironic 35.0.0 that
/// GET takes an exclusive lock, so it fails while any operation, our own
/// attach/detach included, holds the node). Not an error: our failure in
/// `last_error` still wins, otherwise the drive is "not yet" known.
pub(crate) fn evaluate_locked(expect: Expect, node: &Node, message: &str) -> Verdict {
    if let Some(error) = device_error(node.last_error.as_deref(), expect) {
        return Verdict::Failed(error.to_string());
    }
    let holder = node.reservation.as_deref().unwrap_or("another operation");
    Verdict::Pending(format!(
        "node is locked by {holder}: Ironic cannot read its virtual media meanwhile (Ironic before 35.0 locks the node to read it): {message}"
    ))
}

/// Observing and waiting for the CD drive through the product client.
pub(crate) trait CdromExt {
    /// Reads the node and its virtual media once and judges them against
    /// `expect`. A 409 (node locked) on `GET vmedia` is not an error here:
    /// before Ironic 35.0.0 that GET takes an exclusive lock, so it answers
    /// 409 while any operation holds the node; the observation then has no
    /// `media` ([`evaluate_locked`]).
    async fn observe_cdrom(&self, node: &str, expect: Expect) -> Result<Observation, IronicError>;

    /// Polls until the verdict is not [`Verdict::Pending`] or `timeout`
    /// passes (then returns the last, pending, observation). Transient
    /// errors are retried until the deadline, then returned.
    async fn wait_cdrom(
        &self,
        node: &str,
        expect: Expect,
        timeout: Duration,
    ) -> Result<Observation, IronicError>;
}

impl CdromExt for IronicClient {
    async fn observe_cdrom(&self, node: &str, expect: Expect) -> Result<Observation, IronicError> {
        let node_doc = self.get_node(node).await?;
        let (media, verdict) = match self.list_vmedia(node).await {
            Ok(media) => {
                let verdict = evaluate(expect, &node_doc, &media);
                (media, verdict)
            }
            Err(IronicError::Locked(message)) => {
                (Vec::new(), evaluate_locked(expect, &node_doc, &message))
            }
            Err(err) => return Err(err),
        };
        Ok(Observation {
            node: node_doc,
            media,
            verdict,
        })
    }

    async fn wait_cdrom(
        &self,
        node: &str,
        expect: Expect,
        timeout: Duration,
    ) -> Result<Observation, IronicError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.observe_cdrom(node, expect).await {
                Ok(obs) if !matches!(obs.verdict, Verdict::Pending(_)) => return Ok(obs),
                Ok(obs) if Instant::now() >= deadline => return Ok(obs),
                Err(err) if !is_transient(&err) || Instant::now() >= deadline => return Err(err),
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(1));
        }
    }
}

/// Worth retrying soon (locks, outages): what the suites wait out.
pub(crate) fn is_transient(err: &IronicError) -> bool {
    matches!(err, IronicError::Locked(_) | IronicError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8c485e41-0b0e-4753-8392-48f92fa7c896";

    fn node(reservation: Option<&str>, last_error: Option<&str>) -> Node {
        Node {
            uuid: UUID.into(),
            provision_state: metal3_dataimage::ironic::ProvisionState::Active,
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
    fn unreadable_media_of_a_locked_node_is_pending_unless_we_failed() {
        let locked = "Node x is locked by host other-conductor, please retry after the current operation is completed.";
        let pending = evaluate_locked(Expect::Inserted, &node(Some("ironic-oldrel"), None), locked);
        assert!(
            matches!(&pending, Verdict::Pending(r) if r.contains("ironic-oldrel") && r.contains("35.0")),
            "{pending:?}"
        );
        // Locked again between GET node and GET vmedia.
        assert!(matches!(
            evaluate_locked(Expect::Ejected, &node(None, None), locked),
            Verdict::Pending(r) if r.contains("other-conductor")
        ));
        let msg = "Could not attach device cdrom to node x: Validation of image href http://h/x.iso failed";
        assert_eq!(
            evaluate_locked(Expect::Inserted, &node(None, Some(msg)), locked),
            Verdict::Failed(msg.to_string())
        );
        assert!(matches!(
            evaluate_locked(Expect::Ejected, &node(None, Some(msg)), locked),
            Verdict::Pending(_)
        ));
    }

    #[test]
    fn transient_errors() {
        assert!(is_transient(&IronicError::Locked(String::new())));
        assert!(is_transient(&IronicError::Unavailable(String::new())));
        assert!(!is_transient(&IronicError::BadRequest(String::new())));
        assert!(!is_transient(&IronicError::NotFound(String::new())));
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
