//! The client's settings, from the same places as the reference CLI, in its order:
//! command line, then `testflinger-cli.conf` (INI, section `[testflinger-cli]`), then the
//! `TESTFLINGER_*` environment variables, then defaults. The file beats the environment.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub const DEFAULT_SERVER: &str = "https://testflinger.canonical.com";
const SECTION: &str = "testflinger-cli";

/// `$XDG_CONFIG_HOME`, or `~/.config` when it is unset, empty or not absolute.
pub fn config_home() -> PathBuf {
    match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => home_dir().join(".config"),
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// An INI file: one section's `key = value` lines, keys lower-cased as configparser does.
#[derive(Default, Debug)]
pub struct Ini {
    pub entries: Vec<(String, String)>,
}

impl Ini {
    /// Reads `section` of the file; a missing file is empty.
    pub fn read(path: &Path, section: &str) -> Ini {
        let Ok(bytes) = std::fs::read(path) else {
            return Ini::default();
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut in_section = false;
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_section = name.trim() == section;
                continue;
            }
            if !in_section {
                continue;
            }
            let split = line.find(['=', ':']);
            if let Some(at) = split {
                let key = line[..at].trim().to_lowercase();
                let value = line[at + 1..].trim().to_string();
                entries.retain(|(k, _)| *k != key);
                entries.push((key, value));
            }
        }
        Ini { entries }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    /// Writes the section as configparser does: header, `key = value` lines, blank line.
    pub fn write(&self, path: &Path, section: &str) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.render(section))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn render(&self, section: &str) -> String {
        let mut text = format!("[{section}]\n");
        for (key, value) in &self.entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text.push('\n');
        text
    }

    /// Writes the section readable by its owner only, replacing the file in one step
    /// (for the stored refresh token).
    pub fn write_private(&self, path: &Path, section: &str) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::private_file::replace(path, self.render(section).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The settings file and what it holds.
pub struct Settings {
    pub path: PathBuf,
    pub file: Ini,
}

impl Settings {
    pub fn load(path: Option<&Path>) -> Settings {
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| config_home().join("testflinger-cli.conf"));
        let _ = std::fs::create_dir_all(config_home());
        let file = Ini::read(&path, SECTION);
        Settings { path, file }
    }

    /// A setting from the file, else from `TESTFLINGER_<KEY>`; empty values do not count.
    pub fn get(&self, key: &str) -> Option<String> {
        let from_file = self.file.get(key).filter(|v| !v.is_empty());
        let from_env = || {
            std::env::var(format!("TESTFLINGER_{}", key.to_uppercase()))
                .ok()
                .filter(|v| !v.is_empty())
        };
        from_file.map(str::to_string).or_else(from_env)
    }

    /// An integer setting; a value that is not a number is an error naming it.
    pub fn get_number(&self, key: &str, default: u64) -> anyhow::Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .with_context(|| format!("setting {key} = {text:?} is not a whole number")),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        self.file.write(&self.path, SECTION)
    }
}

#[cfg(test)]
mod tests {
    use super::Ini;

    #[test]
    fn ini_reads_like_configparser() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.conf");
        std::fs::write(
            &path,
            "[other]\nserver = no\n[testflinger-cli]\nServer = http://h:1\nclient_id: me\n",
        )
        .unwrap();
        let ini = Ini::read(&path, "testflinger-cli");
        assert_eq!(ini.get("server"), Some("http://h:1"));
        assert_eq!(ini.get("client_id"), Some("me"));
        ini.write(&path, "testflinger-cli").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[testflinger-cli]\nserver = http://h:1\nclient_id = me\n\n"
        );
    }
}
