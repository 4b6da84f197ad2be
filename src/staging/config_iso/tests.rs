//! Unit tests of the writer, read back with a small independent parser of
//! the on-disk structures (the external readers — isoinfo, xorriso, 7-Zip,
//! pycdlib — are in tests/it/config_iso.rs).

use super::*;
use crate::staging::iso;

/// `sha256:<hex>` of an image, the form `status.dataImage.stagedDigest` uses.
fn digest(iso: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(iso)))
}

fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn cloud_init() -> BTreeMap<String, Vec<u8>> {
    files(&[
        ("user-data", b"#cloud-config\nhostname: worker-5\n"),
        ("meta-data", b"instance-id: worker-5\n"),
        ("network-config", b"version: 2\n"),
    ])
}

fn u32_le(b: &[u8]) -> usize {
    u32::from_le_bytes(b[..4].try_into().unwrap()) as usize
}

fn u32_be(b: &[u8]) -> usize {
    u32::from_be_bytes(b[..4].try_into().unwrap()) as usize
}

/// Both-endian 32-bit field: the two halves must agree.
fn both(b: &[u8]) -> usize {
    assert_eq!(u32_le(&b[0..4]), u32_be(&b[4..8]), "both-endian mismatch");
    u32_le(b)
}

fn sector(img: &[u8], lba: usize) -> &[u8] {
    &img[lba * SECTOR..(lba + 1) * SECTOR]
}

#[derive(Debug)]
struct Record {
    id: Vec<u8>,
    lba: usize,
    size: usize,
    flags: u8,
    date: [u8; 7],
    system_use: Vec<u8>,
}

/// The records of a directory extent, checking that none straddles a sector.
fn read_dir(img: &[u8], lba: usize, size: usize) -> Vec<Record> {
    assert_eq!(size % SECTOR, 0);
    let mut out = Vec::new();
    for s in 0..size / SECTOR {
        let data = sector(img, lba + s);
        let mut at = 0;
        while at < SECTOR && data[at] != 0 {
            let len = data[at] as usize;
            assert!(len >= 34 && len.is_multiple_of(2), "record length {len}");
            assert!(at + len <= SECTOR, "record straddles a sector");
            let r = &data[at..at + len];
            let id_len = r[32] as usize;
            let su = 33 + id_len + usize::from(id_len.is_multiple_of(2));
            assert_eq!(r[1], 0, "no extended attribute records");
            assert_eq!(&r[28..32], &[1, 0, 0, 1], "volume sequence number");
            out.push(Record {
                id: r[33..33 + id_len].to_vec(),
                lba: both(&r[2..10]),
                size: both(&r[10..18]),
                flags: r[25],
                date: r[18..25].try_into().unwrap(),
                system_use: r[su..].to_vec(),
            });
            at += len;
        }
    }
    out
}

/// SUSP entries of a system use area as (signature, body).
fn susp(area: &[u8]) -> Vec<([u8; 2], Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= area.len() && area[at] != 0 {
        let len = area[at + 2] as usize;
        assert!(
            len >= 4 && at + len <= area.len(),
            "SUSP entry length {len}"
        );
        out.push(([area[at], area[at + 1]], area[at + 4..at + len].to_vec()));
        at += len;
    }
    out
}

fn ucs2_text(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).unwrap()
}

struct Read {
    primary_label: String,
    joliet_label: String,
    /// Rock Ridge name → content, from the primary tree.
    rock_ridge: BTreeMap<String, Vec<u8>>,
    /// ISO 9660 identifiers in directory order.
    iso_names: Vec<String>,
    /// Joliet name → content.
    joliet: BTreeMap<String, Vec<u8>>,
    joliet_order: Vec<String>,
}

fn read(img: &[u8]) -> Read {
    assert_eq!(img.len() % SECTOR, 0);
    assert!(img[..16 * SECTOR].iter().all(|&b| b == 0), "system area");
    let pvd = sector(img, 16);
    let svd = sector(img, 17);
    let term = sector(img, 18);
    assert_eq!(&pvd[0..7], b"\x01CD001\x01");
    assert_eq!(&svd[0..7], b"\x02CD001\x01");
    assert_eq!(&term[0..7], b"\xffCD001\x01");
    assert_eq!(&svd[88..91], b"%/E", "Joliet UCS-2 level 3");
    for d in [pvd, svd] {
        assert_eq!(both(&d[80..88]) * SECTOR, img.len(), "volume space size");
        assert_eq!(&d[128..132], &[0, 8, 8, 0], "logical block size 2048");
        assert_eq!(d[881], 1, "file structure version");
        assert_eq!(&d[813..829], b"1970010100000000");
        // Path tables: the root only, pointing where the root record does.
        let root_lba = both(&d[156 + 2..156 + 10]);
        assert_eq!(both(&d[132..140]), 10);
        let l = u32_le(&d[140..144]);
        let m = u32_be(&d[148..152]);
        assert_eq!(u32_le(&sector(img, l)[2..6]), root_lba);
        assert_eq!(u32_be(&sector(img, m)[2..6]), root_lba);
        assert_eq!(sector(img, l)[0], 1);
    }
    let primary_label = String::from_utf8(pvd[40..72].to_vec())
        .unwrap()
        .trim_end()
        .to_string();
    assert!(
        primary_label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
        "d-characters only: {primary_label:?}"
    );
    let joliet_label = ucs2_text(&svd[40..72]).trim_end().to_string();

    let root = |d: &[u8]| (both(&d[156 + 2..156 + 10]), both(&d[156 + 10..156 + 18]));

    // Primary tree with Rock Ridge.
    let (lba, size) = root(pvd);
    let records = read_dir(img, lba, size);
    assert_eq!(records[0].id, [0]);
    assert_eq!(records[1].id, [1]);
    let dot = susp(&records[0].system_use);
    assert_eq!(dot[0].0, *b"SP", "SP first in the root's '.'");
    let ce = dot
        .iter()
        .find(|(sig, _)| sig == b"CE")
        .expect("CE")
        .1
        .clone();
    let (ce_lba, ce_off, ce_len) = (both(&ce[0..8]), both(&ce[8..16]), both(&ce[16..24]));
    let er = susp(&sector(img, ce_lba)[ce_off..ce_off + ce_len]);
    assert_eq!(er[0].0, *b"ER");
    assert_eq!(&er[0].1[4..14], b"RRIP_1991A");
    let mut rock_ridge = BTreeMap::new();
    let mut iso_names = Vec::new();
    for r in &records[2..] {
        assert_eq!(r.flags, 0);
        assert_eq!(r.date, [70, 1, 1, 0, 0, 0, 0]);
        let id = String::from_utf8(r.id.clone()).unwrap();
        let (name, version) = id.split_once(';').expect("version");
        assert_eq!(version, "1");
        let (base, ext) = name.split_once('.').expect("separator");
        assert!(
            !base.is_empty() && base.len() <= 8 && ext.len() <= 3,
            "8.3: {id}"
        );
        assert!(
            (base.to_string() + ext)
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "d-characters: {id}"
        );
        iso_names.push(id.clone());
        let entries = susp(&r.system_use);
        let nm = entries.iter().find(|(sig, _)| sig == b"NM").expect("NM");
        assert_eq!(nm.1[0], 0, "NM flags");
        let px = entries.iter().find(|(sig, _)| sig == b"PX").expect("PX");
        assert_eq!(both(&px.1[0..8]), 0o100_444);
        let name = String::from_utf8(nm.1[1..].to_vec()).unwrap();
        let data = img[r.lba * SECTOR..r.lba * SECTOR + r.size].to_vec();
        assert!(rock_ridge.insert(name, data).is_none());
    }

    // Joliet tree.
    let (lba, size) = root(svd);
    let records = read_dir(img, lba, size);
    let mut joliet = BTreeMap::new();
    let mut joliet_order = Vec::new();
    for r in &records[2..] {
        assert!(r.system_use.iter().all(|&b| b == 0));
        let name = ucs2_text(&r.id);
        joliet_order.push(name.clone());
        let data = img[r.lba * SECTOR..r.lba * SECTOR + r.size].to_vec();
        assert!(joliet.insert(name, data).is_none());
    }
    Read {
        primary_label,
        joliet_label,
        rock_ridge,
        iso_names,
        joliet,
        joliet_order,
    }
}

#[test]
fn deterministic_bytes_and_digest() {
    let a = build(&cloud_init(), "cidata").unwrap();
    let b = build(&cloud_init(), "cidata").unwrap();
    assert_eq!(a, b);
    assert_eq!(digest(&a), digest(&b));
    assert!(digest(&a).starts_with("sha256:") && digest(&a).len() == 7 + 64);
    let mut other = cloud_init();
    other.insert("meta-data".into(), b"instance-id: worker-6\n".to_vec());
    assert_ne!(digest(&build(&other, "cidata").unwrap()), digest(&a));
    assert_ne!(digest(&build(&cloud_init(), "CIDATA").unwrap()), digest(&a));
}

/// The exact bytes are part of the contract: a host's ISO (and so its
/// digest and attachment) must not change when only this program does.
/// Update this digest only with a writer change that is worth re-attaching
/// every configuration ISO in every cluster.
#[test]
fn golden_digest() {
    let img = build(&cloud_init(), "cidata").unwrap();
    assert_eq!(img.len(), (24 + 2 + 3 + 150) * SECTOR);
    assert_eq!(digest(&img), GOLDEN);
}

const GOLDEN: &str = "sha256:0dc0c757d49f6100e29c8d59c80fdaf2dd3456456b394aa7915498ebe706a96a";

#[test]
fn passes_the_staging_inspector_and_is_not_bootable() {
    let img = build(&cloud_init(), "config-2").unwrap();
    assert!(iso::inspect(&img[..iso::SIGNATURE_END]).is_ok());
    let head = &img[..img.len().min(iso::HEADER_LEN)];
    assert_eq!(iso::inspect(head), Ok(iso::IsoInfo { bootable: false }));
    assert_eq!(iso::inspect(&img), Ok(iso::IsoInfo { bootable: false }));
}

#[test]
fn names_and_labels_read_back() {
    let long = "a-Very_Long.Name-with.MIXED-case_and-dots.0123456789-abcdefghijk";
    assert_eq!(long.len(), MAX_NAME_LEN);
    let input = files(&[
        ("user-data", b"#cloud-config\n"),
        ("meta-data", b""),
        ("network-config", b"version: 2\n"),
        ("autounattend.xml", b"<unattend/>"),
        ("config.ign", br#"{"ignition":{"version":"3.4.0"}}"#),
        ("UPPER", b"1"),
        ("upper", b"2"),
        (".hidden", b"3"),
        ("a.b.c.d", b"4"),
        ("_", b"5"),
        ("x-", b"6"),
        (long, &[7u8; 5000]),
    ]);
    for label in [
        "cidata",
        "config-2",
        "CIDATA",
        "A_B-c",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
    ] {
        let img = build(&input, label).unwrap();
        let read = read(&img);
        assert_eq!(read.rock_ridge, input, "Rock Ridge names and contents");
        assert_eq!(read.joliet, input, "Joliet names and contents");
        assert_eq!(
            read.joliet_label,
            label.chars().take(16).collect::<String>()
        );
        assert_eq!(read.primary_label, iso9660_label(label));
        let mut sorted = read.joliet_order.clone();
        sorted.sort();
        assert_eq!(read.joliet_order, sorted);
        let mut sorted = read.iso_names.clone();
        sorted.sort_by_key(|n| iso_sort_key(n.trim_end_matches(";1")));
        assert_eq!(read.iso_names, sorted, "ISO 9660 order");
        let unique: BTreeSet<_> = read.iso_names.iter().collect();
        assert_eq!(unique.len(), input.len(), "{:?}", read.iso_names);
    }
    assert_eq!(iso9660_label("config-2"), "CONFIG_2");
    assert_eq!(iso9660_label("cidata"), "CIDATA");
}

#[test]
fn large_directories_span_sectors() {
    let input: BTreeMap<String, Vec<u8>> = (0..200)
        .map(|i| {
            (
                format!("file-{i:03}-{}", "x".repeat(50)),
                vec![i as u8; i * 37],
            )
        })
        .collect();
    let img = build(&input, "cidata").unwrap();
    let read = read(&img);
    assert_eq!(read.rock_ridge, input);
    assert_eq!(read.joliet, input);
    let pvd = sector(&img, 16);
    assert!(
        both(&pvd[156 + 10..156 + 18]) > SECTOR,
        "multi-sector directory"
    );
}

#[test]
fn short_names_are_unique_8_3() {
    let names = [
        "user-data",
        "user-data2",
        "user_data",
        "USER-DATA",
        "user-dat1",
        "a.yaml",
        "a.yml",
        ".x",
        "noext",
    ];
    let shorts = short_names(names.iter().copied());
    let unique: BTreeSet<_> = shorts.iter().collect();
    assert_eq!(unique.len(), names.len(), "{shorts:?}");
    assert_eq!(shorts[5], "A.YAM");
    assert_eq!(shorts[6], "A.YML");
    assert_eq!(shorts[7], "_X.");
    assert_eq!(shorts[8], "NOEXT.");
    for s in &shorts {
        let (b, e) = s.split_once('.').unwrap();
        assert!(b.len() <= 8 && e.len() <= 3, "{s}");
    }
}

#[test]
fn refuses_what_it_cannot_carry() {
    assert_eq!(
        build(&BTreeMap::new(), "cidata"),
        Err(ConfigIsoError::NoFiles)
    );
    let long = "n".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        build(&files(&[(long.as_str(), b"")]), "cidata"),
        Err(ConfigIsoError::BadName {
            problem: NameProblem::TooLong { len: 65 },
            ..
        })
    ));
    assert!(matches!(
        build(&files(&[("a/b", b"")]), "cidata"),
        Err(ConfigIsoError::BadName { problem: NameProblem::Characters(ref c), .. }) if c == &['/']
    ));
    assert!(matches!(
        build(&files(&[("..", b"")]), "cidata"),
        Err(ConfigIsoError::BadName {
            problem: NameProblem::DotOrDotDot,
            ..
        })
    ));
    assert!(matches!(
        build(&cloud_init(), "config 2"),
        Err(ConfigIsoError::BadLabel {
            problem: LabelProblem::Characters(_),
            ..
        })
    ));
    let big = files(&[("a", &vec![0u8; MAX_TOTAL_SIZE]), ("b", b"1")]);
    assert_eq!(
        build(&big, "cidata"),
        Err(ConfigIsoError::TooLarge {
            total: MAX_TOTAL_SIZE + 1
        })
    );
    let err = build(&files(&[("a/b", b"secret")]), "cidata")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "file name \"a/b\": must consist of letters, digits, '-', '_' or '.' (found '/')"
    );
}

#[test]
fn label_rules() {
    for ok in [
        "cidata",
        "CIDATA",
        "config-2",
        "CONFIG_2",
        "x",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        "abcdefghijklmnop",
    ] {
        assert_eq!(check_volume_label(ok), Ok(()), "{ok}");
    }
    assert_eq!(check_volume_label(""), Err(LabelProblem::Empty));
    assert_eq!(
        check_volume_label("config.2 x.y"),
        Err(LabelProblem::Characters(vec!['.', ' ']))
    );
    assert_eq!(
        check_volume_label(&"A".repeat(33)),
        Err(LabelProblem::TooLong { len: 33 })
    );
    assert_eq!(
        check_volume_label("abcdefghijklmnopq"),
        Err(LabelProblem::LongNotUpperCase { len: 17 })
    );
    assert!(
        LabelProblem::Characters(vec![' ', '\u{e9}'])
            .to_string()
            .ends_with("(found U+0020, '\u{e9}')")
    );
}

#[test]
fn name_rules() {
    for ok in [
        "user-data",
        "meta-data",
        "autounattend.xml",
        ".a",
        "..a",
        "a..",
        "_",
    ] {
        assert_eq!(check_file_name(ok), Ok(()), "{ok}");
    }
    assert_eq!(check_file_name(""), Err(NameProblem::Empty));
    assert_eq!(check_file_name("."), Err(NameProblem::DotOrDotDot));
    assert_eq!(
        check_file_name("openstack/latest/user_data"),
        Err(NameProblem::Characters(vec!['/']))
    );
    assert_eq!(
        check_file_name("a b\u{e9}c d"),
        Err(NameProblem::Characters(vec![' ', '\u{e9}']))
    );
}
