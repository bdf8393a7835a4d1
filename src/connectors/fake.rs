//! `fake_connector`: provisions nothing and says so; every other stage is the default
//! one. A hardware-free target for demos and end-to-end tests.

use serde_json::Value;

use super::context::{Context, StageResult};
use super::stages::pre_provision_hook;
use crate::codec::pyjson;

pub fn provision(context: &Context) -> StageResult {
    pre_provision_hook(context, false)?;
    let stars = "*".repeat(40);
    let data = context
        .job
        .get("provision_data")
        .cloned()
        .unwrap_or(Value::Null);
    println!("{stars}");
    println!("This is a fake device connector!");
    println!(
        "No provisioning will actually happen, but here are the values from the provision_data:"
    );
    println!("{}", pyjson::dumps_indented(&data, 4));
    println!("{stars}");
    Ok(0)
}
