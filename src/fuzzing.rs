//! The entry points of the fuzz targets in fuzz/ (built only with the `fuzzing` feature).
//! Each takes the fuzzer's raw bytes, feeds them to one parser, and panics when the
//! parser panics or when one of the invariants written next to it breaks.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::agent::attachments;
use crate::codec::yaml;
use crate::job::duration::parse_duration;
use crate::job::validate::{validate_body, validate_job, BodySchema};
use crate::server::jwt;

/// A JSON request body, checked against the job schema and every other body schema.
/// A job that passes is stored in its coerced form, which must pass again unchanged.
pub fn job_validation(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(job) = validate_job(&body) {
        let stored = Value::Object(job.data.clone());
        let again = validate_job(&stored).expect("a stored job validates again");
        assert_eq!(again.data, job.data, "validation is not idempotent");
    }
    for schema in [
        BodySchema::Action,
        BodySchema::ResultPost,
        BodySchema::LogPost,
        BodySchema::AgentReport,
        BodySchema::ProvisionLog,
        BodySchema::StatusUpdate,
        BodySchema::ClientPermissions,
        BodySchema::QueueOwner,
        BodySchema::Secret,
    ] {
        let _ = validate_body(&body, schema);
    }
}

/// A `reserve_data.timeout` string. One that parses means the same written in capitals
/// and written out again as `<d>d <h>h <m>m <s>s`.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parse = |text: &str| parse_duration(&Value::String(text.into()));
    let Ok(seconds) = parse(text) else {
        return;
    };
    assert_eq!(parse(&text.to_ascii_uppercase()), Ok(seconds), "{text:?}");
    let rendered = format!(
        "{}d {}h {}m {}s",
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    );
    assert_eq!(parse(&rendered), Ok(seconds), "{text:?} as {rendered:?}");
}

/// A job file. What it reads as, if a mapping or a list, written out as `show --yaml`
/// writes it, reads back the same, but for what the reference's literal blocks drop on
/// purpose.
pub fn yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = yaml::parse(text) else {
        return;
    };
    // show --yaml prints jobs: mappings. (A document that is one string is left out:
    // yaml-rust2 cannot read PyYAML's `|4+` block of blank lines followed by `...`.)
    if !(value.is_object() || value.is_array()) {
        return;
    }
    let dumped = yaml::dump(&value);
    let expected = Ok(as_literal_blocks(value));
    assert_eq!(yaml::parse(&dumped), expected, "dumped as:\n{dumped}");
}

/// The value with each multi-line string, keys too, as the reference writes it.
fn as_literal_blocks(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(as_literal_block(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(as_literal_blocks).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (as_literal_block(key), as_literal_blocks(value)))
                .collect(),
        ),
        other => other,
    }
}

/// A multi-line string as the reference writes it in a `|` block: its lines (split as
/// Python's `splitlines` does) with their trailing whitespace stripped, each ending in a
/// newline.
fn as_literal_block(text: String) -> String {
    if !text.contains('\n') {
        return text;
    }
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines = unified.lines().map(|line| format!("{}\n", line.trim_end()));
    lines.collect()
}

/// An attachments archive (the input is the tar; its header checksums are set and it is
/// gzipped here so that the fuzzer does not spend its time on checksums). Extraction into a fresh directory writes
/// nothing beside it, changes nothing above it, leaves nothing behind when it fails, and
/// what it unpacks has tame permissions and links that stay inside.
pub fn attachments(data: &[u8]) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let archive = root.path().join("attachments.tar.gz");
    let destination = root.path().join("attachments");
    let tar = with_valid_checksums(data.to_vec());
    std::fs::write(&archive, gzip(&tar)).expect("the archive is written");
    let mode_before = mode(root.path());

    // A small limit keeps the fuzzer's disk use bounded and exercises the refusal too.
    let outcome = attachments::extract(&archive, &destination, 64 * 1024 * 1024);

    assert_eq!(mode(root.path()), mode_before, "the parent's mode changed");
    let mut expected = BTreeSet::from([archive.clone()]);
    if outcome.is_ok() {
        expected.insert(destination.clone());
    }
    let present: BTreeSet<_> = std::fs::read_dir(root.path())
        .expect("the temporary directory is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    assert_eq!(present, expected, "outcome: {outcome:?}");
    if outcome.is_ok() {
        let inside = destination.canonicalize().expect("the destination exists");
        check_unpacked(&destination, &inside);
    }
}

/// Rewrites the checksum of every tar header, so that the fuzzer's mutations reach the
/// extraction instead of stopping at the checksum check.
fn with_valid_checksums(mut tar: Vec<u8>) -> Vec<u8> {
    const CHECKSUM: std::ops::Range<usize> = 148..156;
    let mut offset = 0usize;
    while let Some(block) = tar.get_mut(offset..offset + 512) {
        if block.iter().all(|&byte| byte == 0) {
            break;
        }
        block[CHECKSUM].fill(b' ');
        let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
        block[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = tar::Header::from_byte_slice(block)
            .entry_size()
            .unwrap_or(0);
        let Some(next) = usize::try_from(size.div_ceil(512))
            .ok()
            .and_then(|blocks| blocks.checked_add(1)?.checked_mul(512))
            .and_then(|length| offset.checked_add(length))
            .filter(|&next| next < tar.len())
        else {
            break;
        };
        offset = next;
    }
    tar
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn mode(path: &Path) -> u32 {
    let metadata = std::fs::symlink_metadata(path).expect("the path exists");
    metadata.permissions().mode()
}

/// Every link under `dir` resolves inside `root`; no file is set-id or writable by others.
fn check_unpacked(dir: &Path, root: &Path) {
    for entry in std::fs::read_dir(dir).expect("an unpacked directory is readable") {
        let path = entry.expect("a directory entry").path();
        let metadata = std::fs::symlink_metadata(&path).expect("an unpacked path exists");
        if metadata.file_type().is_symlink() {
            let resolved = path.canonicalize().expect("an unpacked link resolves");
            assert!(resolved.starts_with(root), "{path:?} leads to {resolved:?}");
            continue;
        }
        let mode = metadata.permissions().mode();
        assert_eq!(mode & 0o7022, 0, "{path:?} has mode {mode:o}");
        if metadata.is_dir() {
            check_unpacked(&path, root);
        }
    }
}

const JWT_KEY: &[u8] = b"the server's key";
const JWT_LEEWAY: i64 = 5;
const JWT_NOW: i64 = 1_700_000_000;

/// An access token, as a client sends it: accepted only if signed with the key. Then, if
/// the input holds a newline, the header and claims JSON on either side of it, signed
/// with the key: accepted only when the claims hold an unexpired `exp`, a past `iat` and
/// a `sub`, and refused with any other key.
pub fn jwt(data: &[u8]) {
    let verify = |token: &str, key: &[u8]| jwt::verify(token, key, JWT_LEEWAY, JWT_NOW);
    let token = String::from_utf8_lossy(data);
    if verify(&token, JWT_KEY).is_ok() {
        assert!(verify(&token, b"another key").is_err(), "{token}");
    }
    let Some(newline) = data.iter().position(|&byte| byte == b'\n') else {
        return;
    };
    let (header, claims) = (&data[..newline], &data[newline + 1..]);
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut signer = Hmac::<Sha256>::new_from_slice(JWT_KEY).expect("any key length");
    signer.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(signer.finalize().into_bytes());
    let token = format!("{signing_input}.{signature}");
    assert!(verify(&token, b"another key").is_err(), "{token}");
    if let Ok(claims) = verify(&token, JWT_KEY) {
        let number = |claim: &str| claims[claim].as_f64().expect("a numeric claim");
        assert!(number("exp") > (JWT_NOW - JWT_LEEWAY) as f64, "{claims}");
        assert!(number("iat") <= (JWT_NOW + JWT_LEEWAY) as f64, "{claims}");
        assert!(claims.get("sub").is_some(), "{claims}");
    }
}
