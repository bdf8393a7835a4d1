//! Which code runs for a `(device, stage)` pair: a device's own stage where it has one,
//! else the shared one. This is the only module that knows the devices.

use clap::ValueEnum;

use super::context::{Context, Failure, StageResult};
use super::{fake, firmware, maas2, multi, muxpi, noprovision, stages};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
#[value(rename_all = "snake_case")]
pub enum Device {
    #[value(alias = "fake")]
    FakeConnector,
    Noprovision,
    Muxpi,
    Maas2,
    Multi,
    Cm3,
    DellOemscript,
    Dragonboard,
    HpOemscript,
    LenovoOemscript,
    OemAutoinstall,
    Netboot,
    Oemrecovery,
    Oemscript,
    ControlHostIot,
    ControlHostKvm,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
#[value(rename_all = "snake_case")]
pub enum Stage {
    Provision,
    FirmwareUpdate,
    Runtest,
    Allocate,
    Reserve,
    Cleanup,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Provision => "provision",
            Stage::FirmwareUpdate => "firmware_update",
            Stage::Runtest => "runtest",
            Stage::Allocate => "allocate",
            Stage::Reserve => "reserve",
            Stage::Cleanup => "cleanup",
        }
    }
}

pub fn run(device: Device, stage: Stage, context: &Context) -> StageResult {
    match (device, stage) {
        (Device::FakeConnector, Stage::Provision) => fake::provision(context),
        (Device::Noprovision, Stage::Provision) => noprovision::provision(context),
        (Device::Muxpi, Stage::Provision) => muxpi::provision(context),
        (Device::Maas2, Stage::Provision) => maas2::provision(context),
        (Device::Maas2, Stage::Cleanup) => maas2::cleanup(context),
        (Device::Multi, Stage::Provision) => multi::provision(context),
        (Device::Multi, Stage::Runtest) => multi::runtest(context),
        (Device::Multi, Stage::Cleanup) => multi::cleanup(context),
        (
            Device::FakeConnector
            | Device::Noprovision
            | Device::Muxpi
            | Device::Maas2
            | Device::Multi,
            stage,
        ) => shared(stage, context),
        (device, _) => {
            let name = device
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default();
            Err(Failure::Provisioning(format!(
                "the {name} connector is not built into tf yet"
            )))
        }
    }
}

/// The stages every built-in device shares (the reference's default device).
fn shared(stage: Stage, context: &Context) -> StageResult {
    match stage {
        Stage::Provision => stages::provision(context),
        Stage::FirmwareUpdate => firmware::firmware_update(context),
        Stage::Runtest => stages::runtest(context),
        Stage::Allocate => stages::allocate(context),
        Stage::Reserve => stages::reserve(context),
        Stage::Cleanup => stages::cleanup(context),
    }
}
