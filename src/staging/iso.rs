//! ISO 9660 recognition (pure): the `CD001` signature of the first volume
//! descriptor and the El Torito boot record, read from the start of a file.

/// Bytes per ISO 9660 logical sector.
pub(super) const SECTOR: usize = 2048;
/// Volume descriptors start at sector 16 (after the 32 KiB system area).
pub(super) const FIRST_DESCRIPTOR: usize = 16;
/// `CD001` sits at offset 1 of a volume descriptor: byte 32769 of the image.
const SIGNATURE_OFFSET: usize = FIRST_DESCRIPTOR * SECTOR + 1;
const SIGNATURE: &[u8; 5] = b"CD001";
/// Bytes needed to decide whether the image is ISO 9660 at all.
pub(super) const SIGNATURE_END: usize = SIGNATURE_OFFSET + SIGNATURE.len();
/// How many descriptors we look at for a boot record (real images have 2-4).
const MAX_DESCRIPTORS: usize = 32;
/// How much of the image start [`inspect`] can use (system area + descriptors).
pub(super) const HEADER_LEN: usize = (FIRST_DESCRIPTOR + MAX_DESCRIPTORS) * SECTOR;

const TYPE_BOOT_RECORD: u8 = 0;
const TYPE_TERMINATOR: u8 = 255;
const EL_TORITO_ID: &[u8] = b"EL TORITO SPECIFICATION";

/// What the image start tells us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IsoInfo {
    /// An El Torito boot record is present: firmware can boot from the image.
    pub(super) bootable: bool,
}

/// Inspects the start of an image (up to [`HEADER_LEN`] bytes; a shorter
/// slice means the image itself is shorter, or, from [`SIGNATURE_END`] bytes
/// on, that a download can already be abandoned if it is not ISO 9660). The
/// error says why it is not ISO 9660, in words fit for a status message.
pub(super) fn inspect(start: &[u8]) -> Result<IsoInfo, String> {
    match start.get(SIGNATURE_OFFSET..SIGNATURE_END) {
        None => {
            return Err(format!(
                "the file is {} bytes long, too short for an ISO 9660 image (the CD001 signature is at byte {SIGNATURE_OFFSET})",
                start.len()
            ));
        }
        Some(sig) if sig != SIGNATURE => {
            return Err(format!(
                "no CD001 signature at byte {SIGNATURE_OFFSET}{}",
                describe_content(start)
            ));
        }
        Some(_) => {}
    }
    let bootable = descriptors(start)
        .any(|d| d[0] == TYPE_BOOT_RECORD && d[7..7 + EL_TORITO_ID.len()] == *EL_TORITO_ID);
    Ok(IsoInfo { bootable })
}

/// The volume descriptors present in `start`, up to the set terminator.
fn descriptors(start: &[u8]) -> impl Iterator<Item = &[u8]> {
    start
        .get(FIRST_DESCRIPTOR * SECTOR..)
        .unwrap_or_default()
        .chunks_exact(SECTOR)
        .take(MAX_DESCRIPTORS)
        .take_while(|d| d[1..6] == *SIGNATURE && d[0] != TYPE_TERMINATOR)
}

/// A hint for common wrong downloads (a login page, a compressed file).
fn describe_content(start: &[u8]) -> &'static str {
    let head: Vec<u8> = start
        .iter()
        .take(512)
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take(16)
        .collect();
    let lower = head.to_ascii_lowercase();
    if lower.starts_with(b"<!doctype html")
        || lower.starts_with(b"<html")
        || lower.starts_with(b"<?xml")
    {
        " (the server sent an HTML/XML page, not an image)"
    } else if head.starts_with(&[0x1f, 0x8b]) {
        " (the file is gzip-compressed)"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
        " (the file is xz-compressed)"
    } else if head.starts_with(b"QFI\xfb") {
        " (the file is a qcow2 disk image)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal image start: primary descriptor, optional boot record, terminator.
    fn image(boot_record: bool) -> Vec<u8> {
        let mut data = vec![0u8; FIRST_DESCRIPTOR * SECTOR];
        let mut push = |kind: u8, id: &[u8]| {
            let mut d = vec![0u8; SECTOR];
            d[0] = kind;
            d[1..6].copy_from_slice(SIGNATURE);
            d[6] = 1;
            d[7..7 + id.len()].copy_from_slice(id);
            data.extend_from_slice(&d);
        };
        push(1, b"");
        if boot_record {
            push(TYPE_BOOT_RECORD, EL_TORITO_ID);
        }
        push(TYPE_TERMINATOR, b"");
        data
    }

    #[test]
    fn recognises_plain_iso() {
        assert_eq!(inspect(&image(false)), Ok(IsoInfo { bootable: false }));
    }

    #[test]
    fn recognises_el_torito_boot_record() {
        assert_eq!(inspect(&image(true)), Ok(IsoInfo { bootable: true }));
    }

    #[test]
    fn ignores_descriptors_after_the_terminator() {
        let mut data = image(false);
        let mut boot = vec![0u8; SECTOR];
        boot[1..6].copy_from_slice(SIGNATURE);
        boot[7..7 + EL_TORITO_ID.len()].copy_from_slice(EL_TORITO_ID);
        data.extend_from_slice(&boot);
        assert_eq!(inspect(&data), Ok(IsoInfo { bootable: false }));
    }

    #[test]
    fn boot_record_of_another_system_is_not_el_torito() {
        let mut data = image(true);
        let boot = (FIRST_DESCRIPTOR + 1) * SECTOR;
        data[boot + 7..boot + 7 + 5].copy_from_slice(b"OTHER");
        assert_eq!(inspect(&data), Ok(IsoInfo { bootable: false }));
    }

    #[test]
    fn signature_needs_enough_bytes() {
        let data = image(false);
        let err = inspect(&data[..SIGNATURE_END - 1]).unwrap_err();
        assert!(err.contains("too short"), "{err}");
        assert!(inspect(&data[..SIGNATURE_END]).is_ok());
        let err = inspect(&vec![0u8; SIGNATURE_END]).unwrap_err();
        assert!(err.contains("no CD001 signature"), "{err}");
    }

    #[test]
    fn short_file_is_refused_with_its_size() {
        let err = inspect(b"hello").unwrap_err();
        assert!(err.contains("5 bytes"), "{err}");
    }

    #[test]
    fn html_page_is_named() {
        let mut page = b"  <!DOCTYPE html><html>login</html>".to_vec();
        page.resize(40_000, b' ');
        let err = inspect(&page).unwrap_err();
        assert!(err.contains("CD001") && err.contains("HTML"), "{err}");
    }

    #[test]
    fn gzip_is_named() {
        let mut data = vec![0x1f, 0x8b, 8, 0];
        data.resize(40_000, 0);
        assert!(inspect(&data).unwrap_err().contains("gzip"));
    }

    #[test]
    fn truncated_descriptor_area_still_inspects() {
        let data = image(true);
        // Only the primary descriptor made it: no boot record visible.
        assert_eq!(
            inspect(&data[..(FIRST_DESCRIPTOR + 1) * SECTOR]),
            Ok(IsoInfo { bootable: false })
        );
        // Signature present but the descriptor itself cut short.
        assert_eq!(
            inspect(&data[..SIGNATURE_END + 10]),
            Ok(IsoInfo { bootable: false })
        );
    }
}
