//! The control host's hooks: before provisioning, a device with a `control_host` gets that
//! host power-cycled (through its REST API on port 8000, or over ssh as a fallback) and
//! asked to set itself up for provisioning; before tests, asked to set up for testing.
//! Power-cycle steps are best effort except the final wait for the API to come back.

use std::time::Duration;

use serde_json::Value;

use super::context::{Context, Failure};
use crate::api::{Api, Call, RequestBody};

/// The control host's REST API.
struct ControlApi {
    api: Api,
    runtime: tokio::runtime::Runtime,
    host: String,
}

impl ControlApi {
    fn new(context: &Context, host: &str) -> Option<ControlApi> {
        // Extension: `control_host_api_port` (the reference always uses 8000).
        let port = context
            .config
            .get("control_host_api_port")
            .and_then(Value::as_u64)
            .unwrap_or(8000);
        let unusable = |reason: String| {
            context.log.warning(&format!(
                "control host {host}:{port} cannot be reached: {reason}; skipping its hooks"
            ))
        };
        let api = Api::new(&format!("http://{host}:{port}"))
            .map_err(|e| unusable(e.to_string()))
            .ok()?;
        let runtime = super::web::runtime()
            .map_err(|e| unusable(e.to_string()))
            .ok()?;
        Some(ControlApi {
            api,
            runtime,
            host: host.to_string(),
        })
    }

    /// Whether the request got a 2xx answer within `limit`.
    fn ok(&self, method: hyper::Method, path: &str, body: RequestBody, limit: Duration) -> bool {
        self.runtime
            .block_on(
                self.api
                    .send(Call::raw(method, path.to_string(), body), limit),
            )
            .is_ok_and(|reply| reply.status.is_success())
    }
}

/// Runs each command of a config list with a shell; failures are logged, not fatal.
fn run_scripts(context: &Context, key: &str) {
    for command in context.config_commands(key) {
        match context
            .runner
            .run(&["/bin/sh", "-c", &command], Some(Duration::from_secs(60)))
        {
            Ok(output) if output.success() => {}
            Ok(_) => context.log.warning(&format!("Command failed: {command}")),
            Err(_) => context
                .log
                .warning(&format!("Command timed out after 60s: {command}")),
        }
    }
}

/// Before provisioning. `power_scripts`: the connector wants the device powered off
/// while its control host reboots (muxpi does).
pub fn before_provision(context: &Context, power_scripts: bool) -> Result<(), Failure> {
    let Some(host) = context.config_text("control_host") else {
        return Ok(());
    };
    let Some(control) = ControlApi::new(context, &host) else {
        return Ok(());
    };
    if std::env::var_os("DISABLE_CONTROL_HOST_POWERCYCLE").is_none() {
        power_cycle(context, &control, power_scripts)?;
    }
    // Best effort: an old control host may not know this request.
    control.ok(
        hyper::Method::POST,
        "/api/v1/system/setup/provisioning",
        RequestBody::json(&Value::Null),
        Duration::from_secs(10),
    );
    Ok(())
}

/// Before tests: the control host prepares the device's test wiring. Best effort.
pub fn before_test(context: &Context) {
    let Some(host) = context.config_text("control_host") else {
        return;
    };
    if let Some(control) = ControlApi::new(context, &host) {
        control.ok(
            hyper::Method::POST,
            "/api/v1/system/setup/test",
            RequestBody::Empty,
            Duration::from_secs(10),
        );
    }
}

fn power_cycle(
    context: &Context,
    control: &ControlApi,
    power_scripts: bool,
) -> Result<(), Failure> {
    let log = &context.log;
    if context
        .config_commands("control_host_reboot_script")
        .is_empty()
    {
        log.warning("No control_host_reboot_script configured, cannot reboot.");
        return Ok(());
    }
    let wrap = power_scripts
        && !context.config_commands("poweroff_script").is_empty()
        && !context.config_commands("poweron_script").is_empty();
    if power_scripts && !wrap {
        log.warning("poweroff_script/poweron_script not configured: the DUT may stay powered while the control host reboots.");
    }
    if wrap {
        run_scripts(context, "poweroff_script");
    }
    let outcome = reboot(context, control);
    if wrap {
        run_scripts(context, "poweron_script");
    }
    outcome
}

fn reboot(context: &Context, control: &ControlApi) -> Result<(), Failure> {
    let host = &control.host;
    let powered_off = control.ok(
        hyper::Method::POST,
        "/api/v1/system/poweroff",
        RequestBody::Empty,
        Duration::from_secs(10),
    );
    if !powered_off {
        context
            .log
            .warning("The control host's API did not power it off; checking it over ssh");
        if !port_open(context, host, 22) {
            run_scripts(context, "control_host_reboot_script");
            if !(0..150).any(|attempt| {
                if attempt > 0 {
                    context.pause(Duration::from_secs(2));
                }
                port_open(context, host, 22)
            }) {
                context
                    .log
                    .warning(&format!("{host} did not come back on port 22"));
            }
        }
        return Ok(());
    }
    // Down within 30 s, then 10 s more for it to settle.
    if (0..15).any(|attempt| {
        if attempt > 0 {
            context.pause(Duration::from_secs(2));
        }
        !pings(context, host)
    }) {
        context.pause(Duration::from_secs(10));
    }
    run_scripts(context, "control_host_reboot_script");
    let back = (0..150).any(|attempt| {
        if attempt > 0 {
            context.pause(Duration::from_secs(2));
        }
        control.ok(
            hyper::Method::GET,
            "/health",
            RequestBody::Empty,
            Duration::from_secs(3),
        )
    });
    if back {
        Ok(())
    } else {
        Err(Failure::Provisioning(format!(
            "the control host {host} did not come back within 300s"
        )))
    }
}

fn pings(context: &Context, host: &str) -> bool {
    let probe = context.runner.run(
        &["ping", "-c", "1", "-W", "3", host],
        Some(Duration::from_secs(5)),
    );
    probe.is_ok_and(|o| o.success())
}

fn port_open(context: &Context, host: &str, port: u16) -> bool {
    let port = port.to_string();
    let probe = context.runner.run(
        &["nc", "-z", "-w", "3", host, &port],
        Some(Duration::from_secs(5)),
    );
    probe.is_ok_and(|o| o.success())
}
