//! The configuration ISO writer read back by independent readers: pycdlib
//! (Python, tests/config_iso/read_iso.py in a cached venv), isoinfo and
//! isovfy (genisoimage), xorriso (libisofs), 7-Zip, and libblkid (the label
//! udev publishes under /dev/disk/by-label/). Each must see the same file
//! names, contents and volume label as the writer was given.
//!
//! Needs the Debian packages xorriso, genisoimage and p7zip-full (tests/run.sh
//! installs them) and network access to PyPI once for the pycdlib venv.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use metal3_dataimage::staging::config_iso::{self, MAX_JOLIET_LABEL_LEN, iso9660_label};

struct Case {
    name: &'static str,
    label: &'static str,
    files: BTreeMap<String, Vec<u8>>,
    path: PathBuf,
}

fn cases() -> &'static (tempfile::TempDir, Vec<Case>) {
    static CASES: OnceLock<(tempfile::TempDir, Vec<Case>)> = OnceLock::new();
    CASES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = |entries: &[(&str, Vec<u8>)]| -> BTreeMap<String, Vec<u8>> {
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let long = "a-Very_Long.Name-with.MIXED-case_and-dots.0123456789-abcdefghijk";
        let specs = vec![
            (
                "nocloud",
                "cidata",
                f(&[
                    ("user-data", b"#cloud-config\nhostname: worker-5\n".to_vec()),
                    (
                        "meta-data",
                        b"instance-id: worker-5\nlocal-hostname: worker-5\n".to_vec(),
                    ),
                    ("network-config", b"version: 2\nethernets: {}\n".to_vec()),
                ]),
            ),
            (
                "names",
                "config-2",
                f(&[
                    (long, (0..=255u8).cycle().take(70_000).collect()),
                    (
                        "autounattend.xml",
                        b"<?xml version=\"1.0\"?><unattend/>".to_vec(),
                    ),
                    (
                        "config.ign",
                        br#"{"ignition":{"version":"3.4.0"}}"#.to_vec(),
                    ),
                    ("UPPER", b"upper case".to_vec()),
                    ("upper", b"lower case".to_vec()),
                    (".dot-file", b"hidden".to_vec()),
                    ("a.b.c.d", b"dots".to_vec()),
                    ("under_score-dash", b"mixed".to_vec()),
                    ("empty", Vec::new()),
                    ("x", vec![0u8; 2048]),
                ]),
            ),
            (
                "many",
                "WINDOWS_UNATTEND_2026",
                (0..150)
                    .map(|i| {
                        (
                            format!("file-{i:03}.{}", "Name".repeat(12)),
                            format!("content of file {i}\n").into_bytes(),
                        )
                    })
                    .collect(),
            ),
        ];
        let cases = specs
            .into_iter()
            .map(|(name, label, files)| {
                let path = dir.path().join(format!("{name}.iso"));
                std::fs::write(&path, config_iso::build(&files, label).unwrap()).unwrap();
                Case {
                    name,
                    label,
                    files,
                    path,
                }
            })
            .collect();
        (dir, cases)
    })
}

fn run(program: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}; install the readers with \
             `apt-get install -y xorriso genisoimage p7zip-full` (tests/run.sh does)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every regular file under `dir` (flat), name → content.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn joliet_label(label: &str) -> String {
    label.chars().take(MAX_JOLIET_LABEL_LEN).collect()
}

#[test]
fn pycdlib_reads_names_labels_and_contents() {
    let (python, _) = run("bash", &["tests/config_iso/venv.sh"]);
    let python = python.trim();
    let b64 = base64::engine::general_purpose::STANDARD;
    for case in &cases().1 {
        let (json, _) = run(python, &["tests/config_iso/read_iso.py", s(&case.path)]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let tree = |key: &str| -> BTreeMap<String, Vec<u8>> {
            v[key]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, c)| (k.clone(), b64.decode(c.as_str().unwrap()).unwrap()))
                .collect()
        };
        let name = case.name;
        assert_eq!(v["pvd_label"], iso9660_label(case.label), "{name}");
        assert_eq!(v["joliet_label"], joliet_label(case.label), "{name}");
        assert_eq!(v["rock_ridge"], "1.09", "{name}");
        assert_eq!(v["has_joliet"], true, "{name}");
        assert_eq!(v["has_el_torito"], false, "{name}");
        assert_eq!(v["directories"], 0, "{name}");
        assert_eq!(tree("rr"), case.files, "{name}: Rock Ridge");
        assert_eq!(tree("joliet"), case.files, "{name}: Joliet");
        let mut plain: Vec<Vec<u8>> = tree("iso9660").into_values().collect();
        let mut expected: Vec<Vec<u8>> = case.files.values().cloned().collect();
        plain.sort();
        expected.sort();
        assert_eq!(plain, expected, "{name}: ISO 9660 names");
    }
}

#[test]
fn isoinfo_and_isovfy() {
    for case in &cases().1 {
        let name = case.name;
        let path = s(&case.path);
        let (verify, _) = run("isovfy", &[path]);
        assert!(verify.contains("No errors found"), "{name}: {verify}");
        let (info, _) = run("isoinfo", &["-d", "-i", path]);
        assert!(
            info.contains(&format!("Volume id: {}\n", iso9660_label(case.label))),
            "{name}: {info}"
        );
        assert!(
            info.contains("Joliet with UCS level 3 found"),
            "{name}: {info}"
        );
        assert!(
            info.contains("Rock Ridge signatures version 1 found"),
            "{name}: {info}"
        );
        assert!(!info.contains("El Torito"), "{name}: {info}");
        for (flag, tree) in [("-R", "Rock Ridge"), ("-J", "Joliet")] {
            let (list, _) = run("isoinfo", &["-f", flag, "-i", path]);
            let names: Vec<&str> = list.lines().map(|l| l.trim_start_matches('/')).collect();
            let mut sorted = names.clone();
            sorted.sort();
            let expected: Vec<&str> = case.files.keys().map(String::as_str).collect();
            assert_eq!(sorted, expected, "{name}: {tree} names");
            // Contents of a few files (one process per file).
            for (file, content) in case.files.iter().take(12) {
                let out = Command::new("isoinfo")
                    .args([flag, "-i", path, "-x", &format!("/{file}")])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                assert_eq!(&out.stdout, content, "{name}: {tree} /{file}");
            }
        }
    }
}

#[test]
fn xorriso_extracts_rock_ridge_and_joliet_trees() {
    let dir = tempfile::tempdir().unwrap();
    for case in &cases().1 {
        let name = case.name;
        let path = s(&case.path);
        let (info, _) = run("xorriso", &["-indev", path, "-pvd_info"]);
        assert!(
            info.contains(&format!("Volume Id    : {}\n", iso9660_label(case.label))),
            "{name}: {info}"
        );
        for (tree, extra) in [
            ("rr", &[][..]),
            ("joliet", &["-rockridge", "off", "-joliet", "on"][..]),
        ] {
            let out = dir.path().join(format!("{name}-{tree}"));
            let mut args: Vec<&str> = extra.to_vec();
            args.extend(["-osirrox", "on", "-indev", path, "-extract", "/", s(&out)]);
            let (_, log) = run("xorriso", &args);
            for bad in ["SORRY", "FAILURE", "WARNING", "FATAL"] {
                assert!(!log.contains(bad), "{name} {tree}: {log}");
            }
            assert_eq!(read_tree(&out), case.files, "{name}: xorriso {tree}");
        }
    }
}

#[test]
fn seven_zip_extracts_the_files() {
    let dir = tempfile::tempdir().unwrap();
    for case in &cases().1 {
        let out = dir.path().join(case.name);
        run("7z", &["x", "-y", &format!("-o{}", s(&out)), s(&case.path)]);
        assert_eq!(read_tree(&out), case.files, "{}: 7-Zip", case.name);
    }
}

/// libblkid (udev's /dev/disk/by-label/, cloud-init's `blkid -t LABEL=`,
/// Ignition's by-label paths) reads the label as written: lower case and `-`
/// from the Joliet descriptor, the rest of a long label from the primary one.
#[test]
fn blkid_reads_the_label_as_written() {
    for case in &cases().1 {
        let (probe, _) = run("blkid", &["-p", "-o", "export", s(&case.path)]);
        assert!(probe.contains("TYPE=iso9660\n"), "{}: {probe}", case.name);
        assert!(
            probe.contains(&format!("LABEL={}\n", case.label)),
            "{}: {probe}",
            case.name
        );
    }
}
