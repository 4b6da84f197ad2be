//! The configuration ISO: a small, deterministic ISO 9660 image with Joliet
//! and Rock Ridge names, built in memory from a Secret's keys (one file per
//! key, all in the root directory).
//!
//! Pure and synchronous: no I/O, no clock. The same files and label always
//! give the same bytes, hence the same digest (every timestamp is
//! 1970-01-01 00:00:00 UTC, names are sorted, unused bytes are zero).
//!
//! Layout (2048-byte sectors):
//!
//! | sector | content |
//! | --- | --- |
//! | 0-15 | system area (zeros: no boot code, no partition table) |
//! | 16 | primary volume descriptor (ISO 9660 names, Rock Ridge) |
//! | 17 | supplementary volume descriptor (Joliet, UCS-2 level 3) |
//! | 18 | volume descriptor set terminator |
//! | 19-22 | path tables (primary L, M; Joliet L, M) |
//! | 23 | Rock Ridge continuation area (the `ER` entry) |
//! | 24- | primary root directory, Joliet root directory, file data |
//! | last 150 | zero padding (what `mkisofs -pad` adds for CD readers) |
//!
//! There is no El Torito boot record: the image is never bootable.
//!
//! Names:
//! - Joliet: the file name as given (at most [`MAX_NAME_LEN`] characters, no
//!   `;1` version suffix), read by Windows and by Linux without Rock Ridge;
//! - Rock Ridge `NM`: the same name, read by Linux, xorriso, pycdlib, 7-Zip;
//! - ISO 9660 level 1 (8.3, upper case, `_` for other characters, a number
//!   when two names collide): only for readers that know neither extension.
//!
//! Volume label: the primary descriptor holds its ISO 9660 form (upper case,
//! `_` for `-`: d-characters only), the Joliet descriptor the label as
//! written (at most 16 characters there). libblkid (udev's
//! `/dev/disk/by-label/`, `blkid -t LABEL=`) merges the two back into the
//! label as written, so `cidata` and `config-2` are found under those names.

use std::collections::{BTreeMap, BTreeSet};

use super::iso::{FIRST_DESCRIPTOR, SECTOR};

/// Longest file name (Joliet allows 64 UCS-2 characters).
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Longest volume label (the primary descriptor's 32 d-characters).
const MAX_LABEL_LEN: usize = 32;
/// Longest label that may use lower-case letters or `-` (the Joliet
/// descriptor holds 16 UCS-2 characters; beyond them only the primary
/// descriptor's upper-case form exists).
pub const MAX_JOLIET_LABEL_LEN: usize = 16;
/// The label used when `spec.dataImage.volumeLabel` is not set.
pub(crate) const DEFAULT_VOLUME_LABEL: &str = "config-2";
/// Most files in one image.
pub(crate) const MAX_FILES: usize = 1024;
/// Largest total of file sizes accepted (a Secret holds at most 1 MiB).
pub(crate) const MAX_TOTAL_SIZE: usize = 8 * 1024 * 1024;

/// Zero sectors appended after the data.
const PAD_SECTORS: usize = 150;
const PRIMARY_PATH_L: usize = 19;
const PRIMARY_PATH_M: usize = 20;
const JOLIET_PATH_L: usize = 21;
const JOLIET_PATH_M: usize = 22;
const CONTINUATION: usize = 23;
const FIRST_DIRECTORY: usize = 24;

/// File mode bits in Rock Ridge `PX` entries.
const FILE_MODE: usize = 0o100_444;
const DIR_MODE: usize = 0o040_555;

/// Directory record dates: 1970-01-01 00:00:00, offset 0 (years since 1900).
const RECORD_DATE: [u8; 7] = [70, 1, 1, 0, 0, 0, 0];
/// Volume descriptor dates: `YYYYMMDDHHMMSScc` plus a zero offset.
const VOLUME_DATE: &[u8; 16] = b"1970010100000000";
/// "Not specified" volume descriptor date.
const NO_DATE: &[u8; 16] = b"0000000000000000";

const APPLICATION_ID: &str = "METAL3-DATAIMAGE CONFIG ISO";

/// SUSP/RRIP extension identification (the text every mastering tool writes).
const RRIP_ID: &[u8] = b"RRIP_1991A";
const RRIP_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const RRIP_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// Why an image cannot be built. Messages name the offending file or label
/// but never file contents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigIsoError {
    #[error("no files: the Secret has no keys")]
    NoFiles,
    #[error("{count} files; at most {MAX_FILES} fit in a configuration ISO")]
    TooManyFiles { count: usize },
    #[error("file name {name:?}: {problem}")]
    BadName { name: String, problem: NameProblem },
    #[error("volume label {label:?}: {problem}")]
    BadLabel {
        label: String,
        problem: LabelProblem,
    },
    #[error("the files add up to {total} bytes; at most {MAX_TOTAL_SIZE} are accepted")]
    TooLarge { total: usize },
}

/// What is wrong with a file name (shared with the admission rules).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_LEN} characters (Joliet's limit; it has {len})")]
    TooLong { len: usize },
    #[error("must not be \".\" or \"..\"")]
    DotOrDotDot,
    /// Characters outside `[-._a-zA-Z0-9]`, each listed once, in order.
    #[error("must consist of letters, digits, '-', '_' or '.' (found {})", quote_chars(.0))]
    Characters(Vec<char>),
}

/// What is wrong with a volume label (shared with the admission rules).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_LABEL_LEN} characters (ISO 9660's limit; it has {len})")]
    TooLong { len: usize },
    /// Characters outside `[A-Za-z0-9_-]`, each listed once, in order.
    #[error("must consist of letters, digits, '_' or '-' (found {})", quote_chars(.0))]
    Characters(Vec<char>),
    /// Lower-case letters or `-` in a label longer than [`MAX_JOLIET_LABEL_LEN`].
    #[error(
        "lower-case letters and '-' are kept only in the Joliet volume label, which holds \
         {MAX_JOLIET_LABEL_LEN} characters (it has {len}); shorten it or use only A-Z, 0-9 and '_'"
    )]
    LongNotUpperCase { len: usize },
}

fn quote_chars(chars: &[char]) -> String {
    chars
        .iter()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                format!("U+{:04X}", *c as u32)
            } else {
                format!("'{c}'")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The characters of `s` that `allowed` refuses, each listed once, in order.
fn refused_chars(s: &str, allowed: fn(&char) -> bool) -> Vec<char> {
    let mut out = Vec::new();
    for c in s.chars().filter(|c| !allowed(c)) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Checks a file name (a Secret key): 1 to [`MAX_NAME_LEN`] characters of
/// `[-._a-zA-Z0-9]`, not `.` or `..`. Kubernetes allows the same characters
/// in Secret keys (up to 253 of them), so in practice only the length can fail.
pub(crate) fn check_file_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    let bad = refused_chars(name, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    });
    if !bad.is_empty() {
        return Err(NameProblem::Characters(bad));
    }
    if name == "." || name == ".." {
        return Err(NameProblem::DotOrDotDot);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameProblem::TooLong { len: name.len() });
    }
    Ok(())
}

/// Checks a volume label: 1 to [`MAX_LABEL_LEN`] characters of
/// `[A-Za-z0-9_-]`; lower case or `-` only within the first
/// [`MAX_JOLIET_LABEL_LEN`] characters' worth of label.
pub(crate) fn check_volume_label(label: &str) -> Result<(), LabelProblem> {
    if label.is_empty() {
        return Err(LabelProblem::Empty);
    }
    let bad = refused_chars(label, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
    });
    if !bad.is_empty() {
        return Err(LabelProblem::Characters(bad));
    }
    let len = label.len();
    if len > MAX_LABEL_LEN {
        return Err(LabelProblem::TooLong { len });
    }
    if len > MAX_JOLIET_LABEL_LEN && label.bytes().any(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(LabelProblem::LongNotUpperCase { len });
    }
    Ok(())
}

/// The label as the primary descriptor holds it: d-characters only.
pub fn iso9660_label(label: &str) -> String {
    label
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect()
}

/// Builds the image: one root-directory file per entry of `files` (name →
/// content), labelled `volume_label`. Deterministic: equal inputs give equal
/// bytes.
pub fn build(
    files: &BTreeMap<String, Vec<u8>>,
    volume_label: &str,
) -> Result<Vec<u8>, ConfigIsoError> {
    check_volume_label(volume_label).map_err(|problem| ConfigIsoError::BadLabel {
        label: volume_label.to_string(),
        problem,
    })?;
    if files.is_empty() {
        return Err(ConfigIsoError::NoFiles);
    }
    if files.len() > MAX_FILES {
        return Err(ConfigIsoError::TooManyFiles { count: files.len() });
    }
    for name in files.keys() {
        check_file_name(name).map_err(|problem| ConfigIsoError::BadName {
            name: name.clone(),
            problem,
        })?;
    }
    let total: usize = files.values().map(Vec::len).sum();
    if total > MAX_TOTAL_SIZE {
        return Err(ConfigIsoError::TooLarge { total });
    }
    Ok(Layout::new(files).write(volume_label))
}

/// One file and where it goes.
struct Entry<'a> {
    name: &'a str,
    /// ISO 9660 level 1 identifier without `;1` (`USER_DAT.`, `META_DAT.`).
    short: String,
    data: &'a [u8],
    lba: usize,
}

struct Layout<'a> {
    /// In Joliet/Rock Ridge order (byte order of the names).
    entries: Vec<Entry<'a>>,
    /// Indexes into `entries`, in ISO 9660 order of the short names.
    primary_order: Vec<usize>,
    primary_dir_sectors: usize,
    joliet_dir_lba: usize,
    joliet_dir_sectors: usize,
    total_sectors: usize,
}

impl<'a> Layout<'a> {
    fn new(files: &'a BTreeMap<String, Vec<u8>>) -> Self {
        let shorts = short_names(files.keys().map(String::as_str));
        let entries: Vec<Entry<'a>> = files
            .iter()
            .zip(shorts)
            .map(|((name, data), short)| Entry {
                name,
                short,
                data,
                lba: 0,
            })
            .collect();
        let mut primary_order: Vec<usize> = (0..entries.len()).collect();
        primary_order.sort_by_key(|&i| iso_sort_key(&entries[i].short));
        let mut layout = Self {
            entries,
            primary_order,
            primary_dir_sectors: 0,
            joliet_dir_lba: 0,
            joliet_dir_sectors: 0,
            total_sectors: 0,
        };
        // Record lengths do not depend on the addresses they hold, so the
        // directories are measured before the addresses are known.
        layout.primary_dir_sectors = pack(&layout.primary_records()).len() / SECTOR;
        layout.joliet_dir_lba = FIRST_DIRECTORY + layout.primary_dir_sectors;
        layout.joliet_dir_sectors = pack(&layout.joliet_records()).len() / SECTOR;
        let mut next = layout.joliet_dir_lba + layout.joliet_dir_sectors;
        // Data in Joliet order; an empty file still gets its own (zero)
        // sector, so every extent lies inside the volume.
        for entry in &mut layout.entries {
            entry.lba = next;
            next += entry.data.len().div_ceil(SECTOR).max(1);
        }
        layout.total_sectors = next + PAD_SECTORS;
        layout
    }

    fn write(&self, label: &str) -> Vec<u8> {
        let mut out = vec![0u8; self.total_sectors * SECTOR];
        let mut put = |lba: usize, bytes: &[u8]| {
            out[lba * SECTOR..lba * SECTOR + bytes.len()].copy_from_slice(bytes);
        };
        let primary_root = root_record(FIRST_DIRECTORY, self.primary_dir_sectors);
        let joliet_root = root_record(self.joliet_dir_lba, self.joliet_dir_sectors);
        put(
            FIRST_DESCRIPTOR,
            &self.volume_descriptor(false, label, &primary_root),
        );
        put(
            FIRST_DESCRIPTOR + 1,
            &self.volume_descriptor(true, label, &joliet_root),
        );
        put(
            FIRST_DESCRIPTOR + 2,
            &[255, b'C', b'D', b'0', b'0', b'1', 1],
        );
        for (lba, dir, big_endian) in [
            (PRIMARY_PATH_L, FIRST_DIRECTORY, false),
            (PRIMARY_PATH_M, FIRST_DIRECTORY, true),
            (JOLIET_PATH_L, self.joliet_dir_lba, false),
            (JOLIET_PATH_M, self.joliet_dir_lba, true),
        ] {
            put(lba, &path_table(dir, big_endian));
        }
        put(CONTINUATION, &er_entry());
        put(FIRST_DIRECTORY, &pack(&self.primary_records()));
        put(self.joliet_dir_lba, &pack(&self.joliet_records()));
        for e in &self.entries {
            put(e.lba, e.data);
        }
        out
    }

    /// The primary root directory, with Rock Ridge: SP and the CE pointing
    /// at the ER entry in `.`, PX in every record, NM for the files.
    fn primary_records(&self) -> Vec<Vec<u8>> {
        let size = self.primary_dir_sectors * SECTOR;
        let dot = |id: u8| {
            let mut su = if id == 0 { sp_entry() } else { Vec::new() };
            su.extend(rr_entry(RR_PX));
            su.extend(px_entry(DIR_MODE, 2));
            if id == 0 {
                su.extend(ce_entry(CONTINUATION, 0, er_entry().len()));
            }
            dir_record(&[id], FIRST_DIRECTORY, size, 2, &su)
        };
        let mut records = vec![dot(0), dot(1)];
        records.extend(self.primary_order.iter().map(|&i| {
            let e = &self.entries[i];
            let mut su = rr_entry(RR_PX | RR_NM);
            su.extend(px_entry(FILE_MODE, 1));
            su.extend(nm_entry(e.name));
            dir_record(
                format!("{};1", e.short).as_bytes(),
                e.lba,
                e.data.len(),
                0,
                &su,
            )
        }));
        records
    }

    fn joliet_records(&self) -> Vec<Vec<u8>> {
        let size = self.joliet_dir_sectors * SECTOR;
        let mut records = vec![
            dir_record(&[0], self.joliet_dir_lba, size, 2, &[]),
            dir_record(&[1], self.joliet_dir_lba, size, 2, &[]),
        ];
        records.extend(
            self.entries
                .iter()
                .map(|e| dir_record(&ucs2(e.name), e.lba, e.data.len(), 0, &[])),
        );
        records
    }

    /// ECMA-119 8.4 primary (or Joliet supplementary) volume descriptor.
    fn volume_descriptor(&self, joliet: bool, label: &str, root: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; SECTOR];
        // A text field, padded with (UCS-2) spaces.
        let text = |d: &mut [u8], range: std::ops::Range<usize>, value: &str| {
            let field = &mut d[range];
            if joliet {
                for pair in field.chunks_exact_mut(2) {
                    pair.copy_from_slice(&[0, b' ']);
                }
                let units = ucs2(value);
                let n = units.len().min(field.len());
                field[..n].copy_from_slice(&units[..n]);
            } else {
                field.fill(b' ');
                let n = value.len().min(field.len());
                field[..n].copy_from_slice(&value.as_bytes()[..n]);
            }
        };
        d[0] = if joliet { 2 } else { 1 };
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        text(&mut d, 8..40, "");
        let volume_id = if joliet {
            label.chars().take(MAX_JOLIET_LABEL_LEN).collect()
        } else {
            iso9660_label(label)
        };
        text(&mut d, 40..72, &volume_id);
        d[80..88].copy_from_slice(&both32(self.total_sectors));
        if joliet {
            d[88..91].copy_from_slice(b"%/E");
        }
        d[120..124].copy_from_slice(&both16(1));
        d[124..128].copy_from_slice(&both16(1));
        d[128..132].copy_from_slice(&both16(SECTOR as u16));
        d[132..140].copy_from_slice(&both32(PATH_TABLE_LEN));
        let (l, m) = if joliet {
            (JOLIET_PATH_L, JOLIET_PATH_M)
        } else {
            (PRIMARY_PATH_L, PRIMARY_PATH_M)
        };
        d[140..144].copy_from_slice(&(l as u32).to_le_bytes());
        d[148..152].copy_from_slice(&(m as u32).to_be_bytes());
        d[156..156 + root.len()].copy_from_slice(root);
        text(&mut d, 190..574, ""); // volume set, publisher, data preparer
        text(&mut d, 574..702, APPLICATION_ID);
        text(&mut d, 702..739, "");
        text(&mut d, 739..776, "");
        text(&mut d, 776..813, "");
        for (at, date) in [
            (813, VOLUME_DATE),
            (830, VOLUME_DATE),
            (847, NO_DATE),
            (864, NO_DATE),
        ] {
            d[at..at + 16].copy_from_slice(date);
        }
        d[881] = 1;
        d
    }
}

/// Path table of a volume whose only directory is the root.
const PATH_TABLE_LEN: usize = 10;

/// The one entry: identifier length 1, the root's extent, parent 1, id 0.
fn path_table(dir_lba: usize, big_endian: bool) -> [u8; PATH_TABLE_LEN] {
    let (lba, parent) = if big_endian {
        ((dir_lba as u32).to_be_bytes(), 1u16.to_be_bytes())
    } else {
        ((dir_lba as u32).to_le_bytes(), 1u16.to_le_bytes())
    };
    let mut out = [0u8; PATH_TABLE_LEN];
    out[0] = 1;
    out[2..6].copy_from_slice(&lba);
    out[6..8].copy_from_slice(&parent);
    out
}

/// The 34-byte root directory record of a volume descriptor.
fn root_record(lba: usize, sectors: usize) -> Vec<u8> {
    dir_record(&[0], lba, sectors * SECTOR, 2, &[])
}

/// ECMA-119 9.1 directory record. The identifier is followed by a pad byte
/// when its length is even; the record's length is even.
fn dir_record(id: &[u8], lba: usize, size: usize, flags: u8, system_use: &[u8]) -> Vec<u8> {
    let su = 33 + id.len() + usize::from(id.len().is_multiple_of(2));
    let len = (su + system_use.len()).next_multiple_of(2);
    debug_assert!(len <= 255, "directory record of {len} bytes");
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(lba));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&RECORD_DATE);
    r[25] = flags;
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    r[su..su + system_use.len()].copy_from_slice(system_use);
    r
}

/// A directory's records in whole sectors (at least one); a record never
/// straddles a sector.
fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        if out.len() / SECTOR != (out.len() + r.len() - 1) / SECTOR {
            out.resize(out.len().next_multiple_of(SECTOR), 0);
        }
        out.extend_from_slice(r);
    }
    out.resize(out.len().next_multiple_of(SECTOR).max(SECTOR), 0);
    out
}

/// Both-byte-order fields (ECMA-119 7.2.3, 7.3.3): little then big endian.
fn both16(v: u16) -> [u8; 4] {
    let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
    [le[0], le[1], be[0], be[1]]
}

fn both32(v: usize) -> [u8; 8] {
    let (le, be) = ((v as u32).to_le_bytes(), (v as u32).to_be_bytes());
    [le[0], le[1], le[2], le[3], be[0], be[1], be[2], be[3]]
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

// ---- SUSP / Rock Ridge entries -------------------------------------------

/// RRIP 1.09 `RR` flags: which Rock Ridge entries the record has.
const RR_PX: u8 = 0x01;
const RR_NM: u8 = 0x08;

/// A SUSP entry: signature, length, version 1, then the fields.
fn susp(signature: &[u8; 2], fields: &[&[u8]]) -> Vec<u8> {
    let body = fields.concat();
    [
        &[signature[0], signature[1], (4 + body.len()) as u8, 1],
        &body[..],
    ]
    .concat()
}

fn sp_entry() -> Vec<u8> {
    susp(b"SP", &[&[0xBE, 0xEF, 0]])
}

fn rr_entry(flags: u8) -> Vec<u8> {
    susp(b"RR", &[&[flags]])
}

/// POSIX mode and link count; uid and gid 0.
fn px_entry(mode: usize, links: usize) -> Vec<u8> {
    susp(b"PX", &[&both32(mode), &both32(links), &[0; 16]])
}

fn nm_entry(name: &str) -> Vec<u8> {
    susp(b"NM", &[&[0], name.as_bytes()])
}

fn ce_entry(lba: usize, offset: usize, len: usize) -> Vec<u8> {
    susp(b"CE", &[&both32(lba), &both32(offset), &both32(len)])
}

fn er_entry() -> Vec<u8> {
    let lens = [RRIP_ID, RRIP_DESCRIPTOR, RRIP_SOURCE].map(|f| f.len() as u8);
    let head = [lens[0], lens[1], lens[2], 1];
    susp(b"ER", &[&head, RRIP_ID, RRIP_DESCRIPTOR, RRIP_SOURCE])
}

// ---- ISO 9660 level 1 names ----------------------------------------------

/// 8.3 d-character names for `names` (in the same order), unique: a
/// collision replaces the end of the base name with a number.
fn short_names<'n>(names: impl Iterator<Item = &'n str>) -> Vec<String> {
    let split: Vec<(String, String)> = names.map(split_short).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (base, ext) in &split {
        *counts.entry(format!("{base}.{ext}")).or_default() += 1;
    }
    // Numbered names never take a plain name, nor one another's.
    let mut taken = BTreeSet::new();
    split
        .into_iter()
        .map(|(base, ext)| {
            let plain = format!("{base}.{ext}");
            if counts[&plain] == 1 {
                return plain;
            }
            (1..)
                .map(|n: usize| {
                    let suffix = n.to_string();
                    let keep = base.len().min(8 - suffix.len());
                    format!("{}{suffix}.{ext}", &base[..keep])
                })
                .find(|name| !counts.contains_key(name) && taken.insert(name.clone()))
                .unwrap_or_default()
        })
        .collect()
}

/// `user-data` → (`USER_DAT`, ``), `autounattend.xml` → (`AUTOUNAT`, `XML`).
fn split_short(name: &str) -> (String, String) {
    let (base, ext) = match name.rfind('.') {
        Some(0) | None => (name, ""),
        Some(i) => (&name[..i], &name[i + 1..]),
    };
    // Never an empty base: names are not empty, and a leading `.` stays in it.
    let (mut base, mut ext) = (iso9660_label(base), iso9660_label(ext));
    base.truncate(8);
    ext.truncate(3);
    (base, ext)
}

/// ECMA-119 9.3 order: name, then extension, each padded with spaces.
fn iso_sort_key(short: &str) -> Vec<u8> {
    let (base, ext) = short.split_once('.').unwrap_or((short, ""));
    let mut key = format!("{base:<8}").into_bytes();
    key.extend(format!("{ext:<3}").into_bytes());
    key
}

#[cfg(test)]
mod tests;
