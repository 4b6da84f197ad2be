//! The request bodies (tests/fixtures/bench, built from captured
//! kube-apiserver reviews by generate.py) and the mixes the load client sends.

use anyhow::Context;
use hyper::body::Bytes;
use metal3_dataimage::admission::{MUTATE_BMH_PATH, VALIDATE_BMH_PATH};

/// What the webhook must answer for a case (the baseline always allows, so
/// only the uid is checked there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    Allow,
    Deny,
    Patch,
}

/// One request: path (with the `?timeout=10s` the apiserver appends), body,
/// the uid the answer must echo and the expected verdict.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub name: &'static str,
    pub path_and_query: String,
    pub body: Bytes,
    pub uid: String,
    pub expect: Expect,
}

struct Fixture {
    name: &'static str,
    path: &'static str,
    body: &'static [u8],
    expect: Expect,
}

macro_rules! fixture {
    ($name:literal, $path:expr, $expect:expr) => {
        Fixture {
            name: $name,
            path: $path,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/bench/",
                $name,
                ".json"
            )),
            expect: $expect,
        }
    };
}

fn fixtures() -> [Fixture; 7] {
    [
        fixture!("update-allow", VALIDATE_BMH_PATH, Expect::Allow),
        fixture!("update-mutate-nopatch", MUTATE_BMH_PATH, Expect::Allow),
        fixture!("update-deny", VALIDATE_BMH_PATH, Expect::Deny),
        fixture!("status-restore-patch", MUTATE_BMH_PATH, Expect::Patch),
        fixture!("create-allow", VALIDATE_BMH_PATH, Expect::Allow),
        fixture!("create-deny", VALIDATE_BMH_PATH, Expect::Deny),
        fixture!("create-mutate-patch", MUTATE_BMH_PATH, Expect::Patch),
    ]
}

/// Weighted mixes. `update` is the reference load (one ~10 KiB BMH
/// UPDATE review with oldObject and status.hardware); `mixed` is what a busy
/// cluster sends: mostly updates (the operator and users writing hosts),
/// each write seen by the mutating and then the validating webhook, some
/// creates, some denials and patches.
pub(crate) const MIXES: [(&str, &[(&str, u32)]); 2] = [
    ("update", &[("update-allow", 1)]),
    (
        "mixed",
        &[
            ("update-allow", 30),
            ("update-mutate-nopatch", 25),
            ("status-restore-patch", 15),
            ("create-allow", 10),
            ("create-mutate-patch", 10),
            ("update-deny", 5),
            ("create-deny", 5),
        ],
    ),
];

/// The sequence of cases for a mix: weights spread evenly (smooth weighted
/// round robin), so every window of the run sees the same proportions.
pub(crate) fn mix(name: &str) -> anyhow::Result<Vec<Case>> {
    let weights = MIXES
        .iter()
        .find(|(mix_name, _)| *mix_name == name)
        .map(|(_, weights)| *weights)
        .with_context(|| {
            let known: Vec<&str> = MIXES.iter().map(|(n, _)| *n).collect();
            format!("unknown mix {name:?} (known: {})", known.join(", "))
        })?;
    let all = fixtures();
    let mut cases = Vec::new();
    for (case_name, _) in weights {
        let fixture = all
            .iter()
            .find(|f| f.name == *case_name)
            .with_context(|| format!("mix {name} names unknown case {case_name}"))?;
        cases.push(case(fixture)?);
    }
    let total: i64 = weights.iter().map(|(_, w)| i64::from(*w)).sum();
    let mut current = vec![0_i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (slot, (_, weight)) in current.iter_mut().zip(weights.iter()) {
            *slot += i64::from(*weight);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(index, value)| (**value, std::cmp::Reverse(*index)))
            .context("empty mix")?;
        current[best] -= total;
        sequence.push(cases[best].clone());
    }
    Ok(sequence)
}

fn case(fixture: &Fixture) -> anyhow::Result<Case> {
    let review: serde_json::Value = serde_json::from_slice(fixture.body)
        .with_context(|| format!("fixture {} is not JSON", fixture.name))?;
    let uid = review
        .pointer("/request/uid")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("fixture {} has no request.uid", fixture.name))?;
    Ok(Case {
        name: fixture.name,
        path_and_query: format!("{}?timeout=10s", fixture.path),
        body: Bytes::from_static(fixture.body),
        uid: uid.to_string(),
        expect: fixture.expect,
    })
}

/// Body sizes of a mix's distinct cases, for the report.
pub(crate) fn describe(cases: &[Case]) -> String {
    let mut seen: Vec<(&str, usize, usize)> = Vec::new();
    for case in cases {
        match seen.iter_mut().find(|(name, _, _)| *name == case.name) {
            Some(entry) => entry.2 += 1,
            None => seen.push((case.name, case.body.len(), 1)),
        }
    }
    seen.iter()
        .map(|(name, bytes, count)| format!("{name} ({bytes} B) x{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
