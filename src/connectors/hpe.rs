//! HPE ProLiant (Gen10/11/12) firmware through the server's iLO, with `ilorest` on the
//! agent host: read the firmware inventory, pick the service pack (SPP) from HPE's
//! repository (or a mirror: `hpe_repository_url`), flash every component whose version
//! differs, reboot through iLO, and check the new versions.

use std::time::Duration;

use serde_json::{Map, Value};

use super::context::Context;
use super::web;

/// HPE's public service-pack repository (`hpe_repository_url` points at a mirror).
const PUBLIC_REPOSITORY: &str = "https://downloads.linux.hpe.com/SDR/repo/";
const ILOREST_VERSION: &str = "5.3.0.0";
/// Components that must be flashed first, in this order.
const FLASH_ORDER: [&str; 4] = [
    "system rom",
    "server platform services",
    "innovation engine",
    "ilo",
];

pub struct Bmc<'a> {
    context: &'a Context,
    address: String,
    user: String,
    password: String,
}

/// A firmware component, as iLO lists it.
struct Component {
    name: String,
    version: String,
    class: String,
    targets: Vec<String>,
}

/// What to flash on a component.
struct Flash {
    component: String,
    file: String,
    version: String,
}

impl<'a> Bmc<'a> {
    /// The server's BMC, as MAAS knows it (`maas_user` and `node_id` in the config).
    pub fn from_maas(context: &'a Context) -> Result<Bmc<'a>, String> {
        let (Some(user), Some(node)) = (
            context.config_text("maas_user"),
            context.config_text("node_id"),
        ) else {
            return Err("MAAS info isn't provided".into());
        };
        let command = format!("maas {user} node power-parameters {node}");
        let output = context
            .runner
            .run(
                &["maas", &user, "node", "power-parameters", &node],
                Some(Duration::from_secs(60)),
            )
            .ok()
            .filter(|o| o.success())
            .ok_or_else(|| format!("maas error running: {command}"))?;
        let parameters: Value = serde_json::from_str(&output.text)
            .map_err(|_| "MAAS info isn't provided".to_string())?;
        let text = |key: &str| {
            parameters
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (Some(address), Some(user), Some(password)) = (
            text("power_address"),
            text("power_user"),
            text("power_pass"),
        ) else {
            return Err("MAAS info isn't provided".into());
        };
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err("BMC IP address is not valid".into());
        }
        context.runner.mask(&password);
        Ok(Bmc {
            context,
            address,
            user,
            password,
        })
    }

    /// `ilorest --nologo --cache-dir=<run dir> <args>`.
    fn ilorest(&self, args: &[&str], limit: Duration) -> Result<String, String> {
        let cache = format!(
            "--cache-dir={}",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or(".".into())
        );
        let mut argv = vec!["ilorest", "--nologo", &cache];
        argv.extend_from_slice(args);
        match self.context.runner.run(&argv, Some(limit)) {
            Ok(output) if output.success() => Ok(output.text),
            Ok(output) => Err(format!(
                "failed to execute {}:\n[{}] {}",
                self.context.runner.shown(&argv),
                output.status,
                output.all()
            )),
            Err(error) => Err(error.to_string()),
        }
    }

    fn login(&self) -> Result<(), String> {
        let version = self
            .ilorest(&["--version"], Duration::from_secs(30))
            .unwrap_or_default();
        if !version.contains(ILOREST_VERSION) {
            let pin = format!("ilorest=={ILOREST_VERSION}");
            let _ = self
                .context
                .runner
                .run(&["pip", "install", &pin], Some(Duration::from_secs(600)));
            let again = self
                .ilorest(&["--version"], Duration::from_secs(30))
                .unwrap_or_default();
            if !again.contains(ILOREST_VERSION) {
                return Err("failed to install ilorest".into());
            }
        }
        self.ilorest(
            &[
                "login",
                &self.address,
                "-u",
                &self.user,
                "-p",
                &self.password,
            ],
            Duration::from_secs(60),
        )
        .map(drop)
    }

    fn inventory(&self) -> Result<Vec<Component>, String> {
        let raw = self.ilorest(
            &[
                "rawget",
                "/redfish/v1/UpdateService/FirmwareInventory/",
                "--expand",
                "--silent",
            ],
            Duration::from_secs(60),
        )?;
        let inventory: Value = serde_json::from_str(&raw)
            .map_err(|e| format!("iLO's firmware inventory is not JSON: {e}"))?;
        let text = |member: &Value, pointer: &str| {
            member
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(inventory
            .get("Members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|member| Component {
                name: text(member, "/Name"),
                version: text(member, "/Version"),
                class: text(member, "/Oem/Hpe/DeviceClass"),
                targets: member
                    .pointer("/Oem/Hpe/Targets")
                    .and_then(Value::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The repository of this server's generation.
    fn repository(&self) -> Result<String, String> {
        let info = self.ilorest(
            &["systeminfo", "--system", "--json"],
            Duration::from_secs(60),
        )?;
        let model = serde_json::from_str::<Value>(&info)
            .ok()
            .and_then(|v| v.pointer("/system/Model")?.as_str().map(str::to_lowercase))
            .unwrap_or_default();
        let generation = ["gen10", "gen11", "gen12"]
            .into_iter()
            .find(|g| model.contains(g))
            .ok_or_else(|| format!("unsupported HPE model: {model}"))?;
        let base = self
            .context
            .config_text("hpe_repository_url")
            .unwrap_or(PUBLIC_REPOSITORY.into());
        let base = if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        };
        Ok(format!("{base}fwpp-{generation}/"))
    }

    /// Brings the firmware to `version` (`latest` or an SPP name); whether a reboot is due.
    pub fn update(&self, version: &str) -> Result<(), String> {
        let log = &self.context.log;
        self.login()?;
        let inventory = self.inventory()?;
        let repository = self.repository()?;
        log.info(&format!("HPE firmware repository: {repository}"));
        let listing = fetch(&repository)?;
        let spps = spp_names(&listing);
        log.info(&format!(
            "Available version options in firmware_update_data: {spps:?}"
        ));
        let spp = if version == "latest" {
            spps.first()
                .cloned()
                .ok_or_else(|| format!("no SPP found in {repository}"))?
        } else if spps.iter().any(|s| s == version) {
            version.to_string()
        } else {
            log.error(&format!("SPP {version} is not available in {repository}"));
            return Err(format!(
                "SPP {version} is not available in HPE FW repository."
            ));
        };
        log.info(&format!(
            "start flashing all firmware with files in SPP {spp}"
        ));
        let current: Value = serde_json::from_str(&fetch(&format!(
            "{repository}current/fwrepodata/fwrepo.json"
        ))?)
        .unwrap_or(Value::Null);
        let index: Value = serde_json::from_str(&fetch(&format!(
            "{repository}{spp}/fwrepodata/fwrepo.json"
        ))?)
        .map_err(|e| format!("the SPP's fwrepo.json is not JSON: {e}"))?;
        let flashes = self.plan(&inventory, &index, &current);
        if flashes.is_empty() {
            return Ok(());
        }
        for flash in &flashes {
            if std::path::Path::new(&flash.file).exists() {
                log.info(&format!("{} is already downloaded", flash.file));
            } else {
                download(&format!("{repository}{spp}/{}", flash.file), &flash.file)?;
            }
        }
        let tasks = self
            .ilorest(&["taskqueue"], Duration::from_secs(60))
            .unwrap_or_default();
        if !tasks.contains("No tasks found") {
            let _ = self.ilorest(&["taskqueue", "-c"], Duration::from_secs(60));
        }
        for flash in &flashes {
            self.login()?;
            let output = self
                .ilorest(
                    &["flashfwpkg", "--forceupload", &flash.file],
                    Duration::from_secs(1200),
                )
                .unwrap_or_else(|e| e);
            log.info(&strip_spinner(&output));
            if output.to_lowercase().contains("ilo will reboot") {
                self.wait_for_bmc();
            }
        }
        self.reboot()?;
        self.check(&flashes)
    }

    /// What to flash: for each component with targets, the newest package of the SPP for
    /// it, when its version differs and the component may take it.
    fn plan(&self, inventory: &[Component], index: &Value, current: &Value) -> Vec<Flash> {
        let log = &self.context.log;
        let packages: Vec<(String, Map<String, Value>)> = index
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.ends_with(".fwpkg"))
            .filter_map(|(name, entry)| Some((name.clone(), entry.as_object()?.clone())))
            .collect();
        let mut components: Vec<&Component> =
            inventory.iter().filter(|c| !c.targets.is_empty()).collect();
        components.sort_by_key(|c| {
            let name = c.name.to_lowercase();
            FLASH_ORDER
                .iter()
                .position(|part| name.contains(part))
                .unwrap_or(5)
        });
        let mut flashes = Vec::new();
        for component in components {
            let best = packages
                .iter()
                .filter(|(name, entry)| {
                    let targets = targets_of(name, entry, current);
                    entry.get("deviceclass").and_then(Value::as_str)
                        == Some(component.class.as_str())
                        && component
                            .targets
                            .iter()
                            .any(|t| targets.contains(t.as_str()))
                })
                .max_by(|a, b| version_of(&a.1).cmp(&version_of(&b.1)));
            let Some((file, entry)) = best else {
                continue;
            };
            let new = version_of(entry);
            let (from, to) = (normalize(&component.version), normalize(&new));
            if from == to {
                log.info(&format!(
                    "[{}] no update is needed, already {}",
                    component.name, component.version
                ));
                continue;
            }
            let minimum = entry
                .get("minimum_active_version")
                .and_then(Value::as_str)
                .unwrap_or("null");
            if minimum != "null" && from < normalize(minimum) {
                log.error(&format!(
                    "[{}] current firmware {} doesn't meet minimum active version {minimum}",
                    component.name, component.version
                ));
                continue;
            }
            log.info(&format!(
                "[{}] flash current firmware {} to {new}",
                component.name, component.version
            ));
            flashes.push(Flash {
                component: component.name.clone(),
                file: file.clone(),
                version: new,
            });
        }
        flashes
    }

    /// Waits for the BMC to answer pings again after it rebooted itself.
    fn wait_for_bmc(&self) {
        for attempt in 0..60 {
            if attempt > 0 {
                self.context.pause(Duration::from_secs(10));
            }
            let ping = self.context.runner.run(
                &["ping", &self.address, "-c", "5"],
                Some(Duration::from_secs(30)),
            );
            if ping.is_ok_and(|o| o.success()) {
                return;
            }
        }
    }

    /// Reboots the server through iLO and waits for it to finish POST.
    fn reboot(&self) -> Result<(), String> {
        self.login()?;
        self.ilorest(&["reboot"], Duration::from_secs(120))?;
        for attempt in 0..180 {
            if attempt > 0 {
                self.context.pause(Duration::from_secs(10));
            }
            self.login()?;
            // ilorest keeps the selection in its cache directory between runs.
            let _ = self.ilorest(
                &["select", "ComputerSystem", "--refresh"],
                Duration::from_secs(10),
            );
            let state = self.ilorest(
                &["get", "Oem/Hpe/PostState", "--json"],
                Duration::from_secs(10),
            );
            if state.is_ok_and(|s| s.contains("FinishedPost")) {
                self.context.log.info(&format!(
                    "HPE machine reaches FinishedPost after {}s",
                    attempt * 10
                ));
                return Ok(());
            }
        }
        Err("HPE machine failed to reach FinishedPost after 1800s".into())
    }

    fn check(&self, flashes: &[Flash]) -> Result<(), String> {
        self.login()?;
        let inventory = self.inventory()?;
        let mut all = true;
        for flash in flashes {
            let now = inventory.iter().find(|c| c.name == flash.component);
            if now.is_some_and(|c| normalize(&c.version) == normalize(&flash.version)) {
                self.context.log.info(&format!(
                    "[{}] firmware flashed: {}",
                    flash.component, flash.version
                ));
            } else {
                self.context
                    .log
                    .error(&format!("[{}] firmware update failed", flash.component));
                all = false;
            }
        }
        if all {
            Ok(())
        } else {
            Err("The firmware version did not update successfully".into())
        }
    }
}

/// A package's target ids, normalised as the reference does with the current index.
fn targets_of(name: &str, entry: &Map<String, Value>, current: &Value) -> String {
    match entry.get("target") {
        Some(Value::Array(targets)) if !targets.is_empty() => {
            Value::Array(targets.clone()).to_string()
        }
        other => match current.pointer(&format!(
            "/{}/target",
            name.replace('~', "~0").replace('/', "~1")
        )) {
            Some(from_current) => from_current.to_string(),
            None => other.map(|t| t.to_string()).unwrap_or_default(),
        },
    }
}

fn version_of(entry: &Map<String, Value>) -> String {
    entry
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// SPP names in a repository's directory listing, newest (string-greatest) first.
pub fn spp_names(listing: &str) -> Vec<String> {
    let pattern = regex_lite::Regex::new(r"(?i)\d{4}\.\d{2}\.\d{1,2}(?:[._][\w.]*)?")
        .expect("a valid pattern");
    let mut names: Vec<String> = pattern
        .find_iter(listing)
        .map(|m| m.as_str().trim_end_matches(['.', '_']).to_string())
        .collect();
    names.sort();
    names.dedup();
    names.reverse();
    names
}

/// A firmware version in comparable form: `U30 v2.76 (02/09/2023)` → `2.76.2.9.2023`.
pub fn normalize(version: &str) -> String {
    let after_v = version.rsplit('v').next().unwrap_or(version);
    let leading: String = after_v.chars().take_while(|c| !c.is_alphabetic()).collect();
    let cleaned: String = leading.chars().filter(|c| *c != ' ').collect();
    let numbers: Option<Vec<String>> = cleaned
        .split(['.', ')', '(', '/', '-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u64>().ok().map(|n| n.to_string()))
        .collect();
    match numbers.filter(|n| !n.is_empty()) {
        Some(numbers) => numbers.join("."),
        None => version
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .to_string(),
    }
}

fn strip_spinner(output: &str) -> String {
    output
        .split('\r')
        .filter(|part| !part.trim_start().starts_with("Updating:"))
        .collect::<Vec<_>>()
        .join("")
}

/// A page of the repository, tried three times.
fn fetch(url: &str) -> Result<String, String> {
    for _ in 0..3 {
        if let Ok(reply) = web::get(url, Duration::from_secs(300)) {
            if reply.status.is_success() {
                return Ok(String::from_utf8_lossy(&reply.body).into_owned());
            }
        }
    }
    Err(format!("Failed to download {url}"))
}

fn download(url: &str, file: &str) -> Result<(), String> {
    web::download(url, std::path::Path::new(file), Duration::from_secs(1800))
        .map_err(|e| format!("Failed to download {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{normalize, spp_names};

    #[test]
    fn versions_normalize_like_the_reference() {
        assert_eq!(normalize("U30 v2.76 (02/09/2023)"), "2.76.2.9.2023");
        assert_eq!(normalize("2.76_02-09-2023"), "2.76.2.9.2023");
        assert_eq!(normalize("04.01.04.901"), "4.1.4.901");
        assert_eq!(normalize("2.96 Aug 17 2023"), "2.96");
        assert_eq!(normalize("16.5.0 Build 53"), "16.5.0");
        assert_eq!(normalize("08.65.08"), "8.65.8");
        assert_eq!(normalize("HPK2"), "2");
    }

    #[test]
    fn spp_names_come_newest_first() {
        let listing = r#"<a href="2023.09.00.04/">2023.09.00.04/</a> <a href="2022.03.0/">2022.03.0/</a> <a href="current/">current/</a> <a href="2023.09.00.04/">x</a>"#;
        assert_eq!(spp_names(listing), ["2023.09.00.04", "2022.03.0"]);
    }
}
