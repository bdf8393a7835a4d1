//! Custom storage layouts for maas2: the job's `disks` (or the device's `default_disks`)
//! as MAAS commands. Each entry is a `disk`, `partition`, `format` or `mount`; partitions
//! are placed on the first physical disk big enough for all of them, sizes are SI
//! (`30G` = 30,000,000,000 bytes) or a percentage of the disk (`alloc_pct`).

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Why a layout cannot be applied.
pub struct StorageError(pub String);

type Entry = Map<String, Value>;

fn field<'a>(entry: &'a Entry, key: &str) -> Option<&'a str> {
    entry.get(key).and_then(Value::as_str)
}

/// A JSON scalar as Python's `str()` prints it (ids may be numbers or strings).
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Bytes of a size like `30G`: T/G/M/K/B multiply by powers of 1000, a bare number is bytes.
pub fn size_in_bytes(size: &str) -> Result<u64, StorageError> {
    let size = size.trim().to_uppercase();
    let invalid = || {
        StorageError(
            "Sizes must end in T, G, M, K, B, or be an integer when no unit is provided.".into(),
        )
    };
    if let Ok(bytes) = size.parse::<u64>() {
        return Ok(bytes);
    }
    let Some(unit) = size.chars().last() else {
        return Err(invalid());
    };
    let digits = &size[..size.len() - unit.len_utf8()];
    let factor: u64 = match unit {
        'T' => 1_000_000_000_000,
        'G' => 1_000_000_000,
        'M' => 1_000_000,
        'K' => 1_000,
        'B' => 1,
        _ => return Err(invalid()),
    };
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    number.checked_mul(factor).ok_or_else(invalid)
}

/// The disk entry an entry sits on, following `device`, then `volume`, links.
fn parent_disk(entries: &[Entry], entry: &Entry) -> Option<String> {
    let mut current = entry.clone();
    for _ in 0..entries.len() + 1 {
        if field(&current, "type") == Some("disk") {
            return Some(text(current.get("id")));
        }
        let link = current
            .get("device")
            .or_else(|| current.get("volume"))
            .map(|v| text(Some(v)))?;
        current = entries.iter().find(|e| text(e.get("id")) == link)?.clone();
    }
    None
}

/// Works out each entry's disk (`parent_disk`, `parent_disk_blkid`) and partition sizes
/// in bytes, from the job's layout and the node's block devices.
pub fn plan(layout: &[Value], block_devices: &[Value]) -> Result<Vec<Entry>, StorageError> {
    let mut entries: Vec<Entry> = layout
        .iter()
        .filter_map(|e| e.as_object().cloned())
        .collect();
    let parents: Vec<Option<String>> = entries.iter().map(|e| parent_disk(&entries, e)).collect();
    for (entry, parent) in entries.iter_mut().zip(&parents) {
        if let Some(parent) = parent {
            entry.insert("parent_disk".into(), Value::String(parent.clone()));
        }
    }
    // What each disk must hold: the sum of its partitions' sizes.
    let mut demand: Vec<(String, u64)> = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| field(e, "type") == Some("partition"))
    {
        let Some(parent) = field(entry, "parent_disk").map(str::to_string) else {
            continue;
        };
        let size = size_in_bytes(&text(entry.get("size")))?;
        match demand.iter_mut().find(|(disk, _)| *disk == parent) {
            Some((_, total)) => *total += size,
            None => demand.push((parent, size)),
        }
    }
    // The first physical block device big enough, in MAAS's order, for each disk.
    let mut chosen: HashMap<String, (String, u64)> = HashMap::new();
    for (disk, bytes) in &demand {
        let device = block_devices.iter().find(|device| {
            let id = text(device.get("id"));
            device.get("type").and_then(Value::as_str) == Some("physical")
                && !chosen.values().any(|(taken, _)| *taken == id)
                && device_size(device) >= *bytes
        });
        let Some(device) = device else {
            return Err(StorageError(format!(
                "No suitable block-device found for partition {disk} with size {bytes} bytes"
            )));
        };
        chosen.insert(disk.clone(), (text(device.get("id")), device_size(device)));
    }
    // Percentages of the chosen disk, or the sizes in bytes.
    let mut percent: HashMap<String, f64> = HashMap::new();
    for entry in &mut entries {
        let Some(parent) = field(entry, "parent_disk").map(str::to_string) else {
            continue;
        };
        let Some((blkid, disk_size)) = chosen.get(&parent).cloned() else {
            continue;
        };
        entry.insert("parent_disk_blkid".into(), Value::String(blkid));
        if field(entry, "type") != Some("partition") {
            continue;
        }
        let id = text(entry.get("id"));
        let bytes = match entry.get("alloc_pct").and_then(Value::as_f64) {
            Some(pct) => {
                let total = percent.entry(parent.clone()).or_insert(0.0);
                *total += pct;
                if *total > 100.0 {
                    return Err(StorageError(format!(
                        "The total percentage of the partitions on disk '{parent}' exceeds 100."
                    )));
                }
                (disk_size as f64 * pct / 100.0).ceil() as u64
            }
            None if entry.contains_key("size") => size_in_bytes(&text(entry.get("size")))?,
            None => {
                return Err(StorageError(format!(
                    "Partition '{id}' does not have an alloc_pct or size value."
                )))
            }
        };
        entry.insert("size".into(), Value::String(bytes.to_string()));
    }
    Ok(entries)
}

fn device_size(device: &Value) -> u64 {
    match device.get("size") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The MAAS commands (arguments after `maas <profile>`) that empty the node's disks.
pub fn clearing(node: &str, block_devices: &[Value]) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for device in block_devices {
        if device.get("type").and_then(Value::as_str) == Some("virtual") {
            continue;
        }
        let blk = text(device.get("id"));
        for partition in device
            .get("partitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            commands.push(strings(&[
                "partition",
                "delete",
                node,
                &blk,
                &text(partition.get("id")),
            ]));
        }
        if let Some(filesystem) = device.get("filesystem").filter(|f| f.is_object()) {
            if filesystem.get("mount_point").is_some_and(|m| !m.is_null()) {
                commands.push(strings(&["block-device", "unmount", node, &blk]));
            }
            commands.push(strings(&["block-device", "unformat", node, &blk]));
        }
    }
    commands
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// Runs the layout through `maas`: disks, then partitions, formats and mounts, each in
/// list order. `run` executes one MAAS command and returns its output.
pub fn apply(
    node: &str,
    entries: &[Entry],
    run: &mut dyn FnMut(Vec<String>) -> Result<String, StorageError>,
) -> Result<(), StorageError> {
    // Entry id → the id MAAS gave the partition created for it.
    let mut partition_ids: HashMap<String, String> = HashMap::new();
    for kind in ["disk", "partition", "format", "mount"] {
        for entry in entries.iter().filter(|e| field(e, "type") == Some(kind)) {
            let failed = |_: StorageError| {
                StorageError(format!(
                    "Unable to process device: {} of type: {kind}",
                    Value::Object(entry.clone())
                ))
            };
            let blk = text(entry.get("parent_disk_blkid"));
            match kind {
                "disk" => {
                    let disk = text(entry.get("id"));
                    let boots = entries.iter().any(|e| {
                        field(e, "parent_disk") == Some(disk.as_str())
                            && field(e, "type") == Some("mount")
                            && field(e, "path").is_some_and(|p| p.contains("/boot"))
                    });
                    if boots {
                        run(strings(&["block-device", "set-boot-disk", node, &blk]))
                            .map_err(failed)?;
                    }
                    if let Some(name) = field(entry, "name") {
                        let name = format!("name={name}");
                        run(strings(&["block-device", "update", node, &blk, &name]))
                            .map_err(failed)?;
                    }
                }
                "partition" => {
                    let size = format!("size={}", text(entry.get("size")));
                    let output = run(strings(&["partitions", "create", node, &blk, &size]))
                        .map_err(failed)?;
                    let created: Value = serde_json::from_str(&output).unwrap_or(Value::Null);
                    partition_ids.insert(text(entry.get("id")), text(created.get("id")));
                }
                "format" => {
                    let fstype = format!("fstype={}", text(entry.get("fstype")));
                    let label = format!("label={}", text(entry.get("label")));
                    let mut command = strings(&["partition", "format", node, &blk]);
                    if let Some(volume) = entry.get("volume") {
                        let partition = partition_for(entries, &partition_ids, &text(Some(volume)))
                            .ok_or_else(|| {
                                StorageError(format!(
                                    "Unable to find partition ID for volume {}",
                                    text(Some(volume))
                                ))
                            })?;
                        command.push(partition);
                    }
                    command.extend([fstype, label]);
                    run(command).map_err(failed)?;
                }
                _ => {
                    let mount_point = format!("mount_point={}", text(entry.get("path")));
                    let device = text(entry.get("device"));
                    let partition = entries
                        .iter()
                        .find(|e| text(e.get("id")) == device)
                        .and_then(|format| format.get("volume"))
                        .and_then(|volume| {
                            partition_for(entries, &partition_ids, &text(Some(volume)))
                        });
                    let command = match partition {
                        Some(partition) => {
                            strings(&["partition", "mount", node, &blk, &partition, &mount_point])
                        }
                        None => strings(&["block-device", "mount", node, &blk, &mount_point]),
                    };
                    run(command).map_err(failed)?;
                }
            }
        }
    }
    Ok(())
}

/// The created partition a format's `volume` names: the first partition entry whose id,
/// device or number is that volume (so a disk's id names its first partition).
fn partition_for(
    entries: &[Entry],
    created: &HashMap<String, String>,
    volume: &str,
) -> Option<String> {
    entries
        .iter()
        .filter(|e| field(e, "type") == Some("partition"))
        .find(|e| {
            ["id", "device", "number"]
                .iter()
                .any(|key| text(e.get(*key)) == volume)
        })
        .and_then(|partition| created.get(&text(partition.get("id"))).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_si_and_strict() {
        assert_eq!(size_in_bytes("30G").ok(), Some(30_000_000_000));
        assert_eq!(size_in_bytes("512").ok(), Some(512));
        assert!(size_in_bytes("1.5G").is_err());
        assert!(size_in_bytes("10GB").is_err());
        assert!(size_in_bytes("10é").is_err());
        assert!(size_in_bytes("").is_err());
    }

    #[test]
    fn partitions_land_on_the_first_big_enough_physical_disk() {
        let layout = json!([
            {"id": "d", "type": "disk", "name": "root"},
            {"id": "p1", "type": "partition", "device": "d", "number": 1, "size": "500M"},
            {"id": "p2", "type": "partition", "device": "d", "number": 2, "size": "1G", "alloc_pct": 50},
            {"id": "f1", "type": "format", "volume": "p1", "fstype": "fat32", "label": "efi"},
            {"id": "m1", "type": "mount", "device": "f1", "path": "/boot/efi"},
        ]);
        let devices = json!([
            {"id": 1, "type": "physical", "size": 1_000_000_000},
            {"id": 2, "type": "physical", "size": 4_000_000_000u64},
        ]);
        let entries = plan(layout.as_array().unwrap(), devices.as_array().unwrap())
            .ok()
            .unwrap();
        assert!(entries.iter().all(|e| e["parent_disk_blkid"] == json!("2")));
        assert_eq!(entries[1]["size"], json!("500000000"));
        assert_eq!(entries[2]["size"], json!("2000000000"));
        let mut commands = Vec::new();
        let mut next = 100;
        apply("node1", &entries, &mut |command| {
            commands.push(command.join(" "));
            next += 1;
            Ok(format!("{{\"id\": {next}}}"))
        })
        .ok()
        .unwrap();
        assert_eq!(
            commands,
            [
                "block-device set-boot-disk node1 2",
                "block-device update node1 2 name=root",
                "partitions create node1 2 size=500000000",
                "partitions create node1 2 size=2000000000",
                "partition format node1 2 103 fstype=fat32 label=efi",
                "partition mount node1 2 103 mount_point=/boot/efi",
            ]
        );
    }
}
