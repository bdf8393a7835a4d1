//! Job submission validation, strict like the reference's marshmallow schemas: unknown
//! keys are rejected everywhere except the free-form objects, values are coerced the way
//! marshmallow coerces them, and errors nest exactly like its `detail.json` tree.

use std::sync::LazyLock;

use regex_lite::Regex;
use serde_json::{json, Map, Value};

use super::duration::parse_duration;
use super::names::NameKind;
use super::phase::Phase;
use super::time::parse_iso8601;
use super::truthy::is_truthy;

/// A field's type. Lists and nested objects carry their element type or schema.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// A string of at least this many characters.
    StrAtLeast(usize),
    /// A string that names something, within that kind's limits (`job::names`).
    Name(NameKind),
    /// `{string: integer}`.
    IntMap,
    /// An integer of at least this value, or `null`.
    IntAtLeastOrNull(i64),
    Int,
    Bool,
    Url,
    Email,
    /// Any JSON object, stored as given.
    FreeObject,
    /// Integer seconds or a duration string such as `"1h30m"`; `null` means "not given".
    Duration,
    Pattern(&'static LazyLock<Regex>),
    OneOf(&'static [&'static str]),
    /// An ISO-8601 datetime string.
    DateTime,
    /// `{phase: exit code}`.
    PhaseMap,
    List(&'static Kind, Option<usize>, Option<usize>),
    Nested(&'static Schema),
    /// `test_data.secrets`: `{ENV_NAME: secret_path}`.
    SecretMap,
    /// `provision_data`: `null` or the first of the variants that fully validates.
    ProvisionData,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

type ObjectRule = fn(&Map<String, Value>) -> Result<(), String>;

struct Schema {
    fields: &'static [Field],
    /// A whole-object rule run once the fields are valid (reported under `_schema`).
    check: Option<ObjectRule>,
}

const fn schema(fields: &'static [Field]) -> Schema {
    Schema {
        fields,
        check: None,
    }
}

static SSH_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(lp|gh):(\S+)$").unwrap());
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap());
static SECRET_PATH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_/-]+$").unwrap());
/// marshmallow's URL rule (schemes http, https, ftp, ftps; a host with a TLD, localhost,
/// IPv4 or bracketed IPv6; any port; then nothing, `/`, or `/`/`?` and more).
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:http|https|ftp|ftps)://(?:[^:@]+?(?::[^:@]*?)?@|)(?:(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,6}\.?|[a-z0-9-]{2,}\.?)|localhost|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-f0-9]*:[a-f0-9:]+\])(?::\d+)?(?:/?|[/?]\S+)$",
    )
    .unwrap()
});
/// Longer URLs and e-mail addresses are refused before any pattern runs on them, so a
/// huge value cannot keep a worker busy.
const MAX_PATTERN_INPUT: usize = 8192;
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
        .unwrap()
});

static ATTACHMENT: Schema = schema(&[req("agent", Kind::Str), opt("device", Kind::Str)]);
const ATTACHMENTS: Kind = Kind::List(&Kind::Nested(&ATTACHMENT), None, None);
const STR_LIST: Kind = Kind::List(&Kind::Str, None, None);
const QUEUE_LIST: Kind = Kind::List(&Kind::Name(NameKind::Queue), None, None);
const LABEL: Kind = Kind::Name(NameKind::Label);
const URL_LIST: Kind = Kind::List(&Kind::Url, Some(1), None);
const OBJECT_LIST: Kind = Kind::List(&Kind::FreeObject, None, None);

static TEST_DATA: Schema = schema(&[
    opt("test_cmds", Kind::Str),
    opt("attachments", ATTACHMENTS),
    opt("test_username", Kind::Str),
    opt("test_password", Kind::Str),
    opt("secrets", Kind::SecretMap),
]);

static RESERVE_DATA: Schema = schema(&[
    opt("ssh_keys", Kind::List(&Kind::Pattern(&SSH_KEY), None, None)),
    opt("timeout", Kind::Duration),
]);

/// In the order the reference's job page shows a definition in (see `job_fields`).
static JOB: Schema = schema(&[
    opt("job_id", Kind::Str),
    opt("parent_job_id", LABEL),
    opt("name", LABEL),
    opt("tags", Kind::List(&Kind::Name(NameKind::Tag), None, None)),
    req("job_queue", Kind::Name(NameKind::Queue)),
    opt("global_timeout", Kind::Int),
    opt("output_timeout", Kind::Int),
    opt("allocation_timeout", Kind::Int),
    opt("provision_data", Kind::ProvisionData),
    opt("firmware_update_data", Kind::FreeObject),
    opt("test_data", Kind::Nested(&TEST_DATA)),
    opt("allocate_data", Kind::FreeObject),
    opt("reserve_data", Kind::Nested(&RESERVE_DATA)),
    opt("job_status_webhook", Kind::Str),
    opt("job_priority", Kind::Int),
    opt(
        "exclude_agents",
        Kind::List(&Kind::Name(NameKind::Agent), None, None),
    ),
    opt("debug", Kind::Bool),
]);

/// The fields of a job definition, in the schema's order (the web page shows a job's
/// definition in it).
pub fn job_fields() -> impl Iterator<Item = &'static str> {
    JOB.fields.iter().map(|field| field.name)
}

static EVENT: Schema = schema(&[
    req("event_name", Kind::Str),
    req("timestamp", Kind::Str),
    opt("detail", Kind::Str),
]);

/// The request bodies other than a job submission.
pub enum BodySchema {
    /// `POST /v1/job/<id>/action`
    Action,
    /// `POST /v1/result/<id>`
    ResultPost,
    /// `POST /v1/result/<id>/log/<type>`
    LogPost,
    /// `POST /v1/agents/data/<name>`
    AgentReport,
    /// `POST /v1/agents/provision_logs/<name>`
    ProvisionLog,
    /// `POST /v1/job/<id>/events`
    StatusUpdate,
    /// `PUT /v1/client-permissions/<id>`
    ClientPermissions,
    /// `POST`/`DELETE /v1/restricted-queues/<queue>`
    QueueOwner,
    /// `PUT /v1/secrets/<client>/<path>`
    Secret,
}

impl BodySchema {
    fn schema(&self) -> &'static Schema {
        static ACTION: Schema = schema(&[req("action", Kind::OneOf(&["cancel"]))]);
        static RESULT_POST: Schema = schema(&[
            opt("job_state", Kind::Str),
            opt("status", Kind::PhaseMap),
            opt("device_info", Kind::FreeObject),
        ]);
        static LOG_POST: Schema = schema(&[
            req("fragment_number", Kind::Int),
            req("timestamp", Kind::DateTime),
            req("phase", Kind::OneOf(&Phase::NAMES)),
            req("log_data", Kind::Str),
        ]);
        static AGENT_REPORT: Schema = schema(&[
            opt("identifier", LABEL),
            opt("job_id", LABEL),
            opt("location", LABEL),
            opt("log", STR_LIST),
            opt("provision_type", LABEL),
            opt("queues", QUEUE_LIST),
            opt("state", LABEL),
            opt("comment", LABEL),
        ]);
        static PROVISION_LOG: Schema = schema(&[
            req("job_id", Kind::Str),
            req("exit_code", Kind::Int),
            opt("detail", Kind::Str),
        ]);
        static STATUS_UPDATE: Schema = schema(&[
            req("job_status_webhook", Kind::Url),
            opt("agent_id", Kind::Str),
            opt("job_queue", Kind::Str),
            opt("events", Kind::List(&Kind::Nested(&EVENT), None, None)),
        ]);
        static CLIENT_PERMISSIONS: Schema = schema(&[
            opt("client_secret", Kind::StrAtLeast(15)),
            opt("max_priority", Kind::IntMap),
            opt("max_reservation_time", Kind::IntMap),
            opt(
                "role",
                Kind::OneOf(&["admin", "manager", "contributor", "agent"]),
            ),
            opt("email", Kind::Email),
        ]);
        static QUEUE_OWNER: Schema = schema(&[req("client_id", Kind::Str)]);
        static SECRET: Schema = Schema {
            fields: &[
                req("value", Kind::StrAtLeast(1)),
                opt("expire_after", Kind::IntAtLeastOrNull(1)),
                opt("ephemeral", Kind::Bool),
            ],
            check: Some(|secret| {
                let ephemeral = secret.get("ephemeral") == Some(&Value::Bool(true));
                let expires = secret.get("expire_after").is_some_and(is_truthy);
                if ephemeral && expires {
                    Err("Provide either 'ephemeral' or 'expire_after', not both.".into())
                } else {
                    Ok(())
                }
            }),
        };
        match self {
            BodySchema::ClientPermissions => &CLIENT_PERMISSIONS,
            BodySchema::QueueOwner => &QUEUE_OWNER,
            BodySchema::Secret => &SECRET,
            BodySchema::Action => &ACTION,
            BodySchema::ResultPost => &RESULT_POST,
            BodySchema::LogPost => &LOG_POST,
            BodySchema::AgentReport => &AGENT_REPORT,
            BodySchema::ProvisionLog => &PROVISION_LOG,
            BodySchema::StatusUpdate => &STATUS_UPDATE,
        }
    }
}

/// Validates a request body; `Err` holds the `detail.json` error tree.
pub fn validate_body(body: &Value, schema: BodySchema) -> Result<Map<String, Value>, Value> {
    validate_object(body, schema.schema()).map_err(Value::Object)
}

/// The `provision_data` variants in the reference's order: the first one that fully
/// validates wins, and its coerced output is what gets stored.
static PROVISION_VARIANTS: [Schema; 13] = [
    // cm3
    schema(&[req("url", Kind::Url)]),
    // maas
    schema(&[
        opt("distro", Kind::Str),
        opt("kernel", Kind::Str),
        opt("user_data", Kind::Str),
        opt("disks", OBJECT_LIST),
        opt("ephemeral", Kind::Bool),
    ]),
    // multi
    schema(&[req("jobs", Kind::List(&Kind::FreeObject, Some(1), None))]),
    // muxpi
    Schema {
        fields: &[
            opt("url", Kind::Url),
            opt("use_attachment", Kind::Str),
            opt("attachments", ATTACHMENTS),
            opt("create_user", Kind::Bool),
            opt("boot_check_url", Kind::Str),
            opt("media", Kind::OneOf(&["sd", "usb"])),
        ],
        check: Some(|data| {
            if data.contains_key("url") || data.contains_key("use_attachment") {
                Ok(())
            } else {
                Err("Either 'url' or 'use_attachment' must be provided.".into())
            }
        }),
    },
    // noprovision
    schema(&[opt("skip", Kind::Bool)]),
    // oem_autoinstall
    schema(&[
        opt("url", Kind::Url),
        opt("attachments", ATTACHMENTS),
        opt("token_file", Kind::Str),
        opt("user_data", Kind::Str),
        opt("redeploy_cfg", Kind::Str),
        opt("authorized_keys", Kind::Str),
        opt("control_host_iso_url", Kind::Str),
        opt("control_host_iso_type", Kind::Str),
        opt("update_user_data", Kind::Bool),
    ]),
    // oem_script
    schema(&[req("url", Kind::Url)]),
    // control_host_iot_custom
    Schema {
        fields: &[
            opt("provisioning_timeout", Kind::Int),
            opt("url", Kind::Url),
            opt("urls", URL_LIST),
            opt(
                "attachments",
                Kind::List(&Kind::Nested(&ATTACHMENT), None, Some(1)),
            ),
            opt("agent_ssh_access", Kind::Bool),
            opt("ubuntu_sso_email", Kind::Email),
            req("provision_plan", Kind::FreeObject),
        ],
        check: Some(exactly_one_boot_image_source),
    },
    // control_host_iot_preset
    Schema {
        fields: &[
            opt("provisioning_timeout", Kind::Int),
            opt("url", Kind::Url),
            opt("urls", URL_LIST),
            opt(
                "attachments",
                Kind::List(&Kind::Nested(&ATTACHMENT), None, Some(1)),
            ),
            opt("agent_ssh_access", Kind::Bool),
            req("preset", Kind::Str),
            opt("preset_kwargs", Kind::FreeObject),
        ],
        check: Some(exactly_one_boot_image_source),
    },
    // control_host_kvm_autoinstall
    schema(&[
        req("url", Kind::Url),
        req("robot_tasks", STR_LIST),
        opt("robot_retries", Kind::Int),
        opt("autoinstall_storage_layout", Kind::Str),
        opt("ubuntu_sso_email", Kind::Email),
        opt("autoinstall_base_user_data", Kind::Str),
        opt("autoinstall_oem", Kind::Bool),
        opt("cmdline_append", Kind::Str),
        opt("provisioning_timeout", Kind::Int),
    ]),
    // control_host_kvm_generic
    schema(&[
        req("url", Kind::Url),
        req("robot_tasks", STR_LIST),
        opt("robot_retries", Kind::Int),
        req("live_image", Kind::Bool),
        req("wait_until_ssh", Kind::Bool),
        opt("provisioning_timeout", Kind::Int),
    ]),
    // control_host_kvm_oem_2204
    schema(&[
        req("alloem_url", Kind::Url),
        req("robot_tasks", STR_LIST),
        opt("robot_retries", Kind::Int),
        opt("url", Kind::Url),
        opt("oem", Kind::Str),
        opt("provisioning_timeout", Kind::Int),
    ]),
    // control_host_kvm_preset
    schema(&[
        req("preset", Kind::Str),
        opt("alloem_url", Kind::Url),
        opt("autoinstall_base_user_data", Kind::Str),
        opt("autoinstall_oem", Kind::Bool),
        opt("autoinstall_storage_layout", Kind::Str),
        opt("cmdline_append", Kind::Str),
        opt("live_image", Kind::Bool),
        opt("oem", Kind::Str),
        opt("robot_tasks", STR_LIST),
        opt("ubuntu_sso_email", Kind::Email),
        opt("url", Kind::Url),
        opt("wait_until_ssh", Kind::Bool),
        opt("provisioning_timeout", Kind::Int),
    ]),
];

fn exactly_one_boot_image_source(data: &Map<String, Value>) -> Result<(), String> {
    let given: Vec<&str> = ["url", "urls", "attachments"]
        .into_iter()
        .filter(|key| data.get(*key).is_some_and(is_truthy))
        .collect();
    match given.len() {
        0 => Err("One of 'url', 'urls', or a provision attachment must be provided.".into()),
        1 => Ok(()),
        _ => Err(format!(
            "Provide only one boot image source; got multiple: [{}]",
            given
                .iter()
                .map(|key| format!("'{key}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A job that passed validation, with the facts the server needs pulled out of it.
#[derive(Debug, Clone)]
pub struct ValidJob {
    /// The coerced job definition as stored (without `job_id`, with `exclude_agents`).
    pub data: Map<String, Value>,
    /// A resubmission id, when the client sent a non-empty one.
    pub requested_id: Option<String>,
    pub queue: String,
    pub priority: i64,
    pub exclude_agents: Vec<String>,
    /// Some `*_data` section declares `attachments`: dispatch waits for the upload.
    pub awaits_attachments: bool,
    /// Reservation timeout in seconds (3600 when not given), for the permission check.
    pub reserve_timeout: u64,
}

/// Validates a submission body. `Err` holds the `detail.json` error tree.
pub fn validate_job(body: &Value) -> Result<ValidJob, Value> {
    let mut data = validate_object(body, &JOB).map_err(Value::Object)?;
    let requested_id = match data.remove("job_id") {
        Some(Value::String(id)) if !id.is_empty() => Some(id),
        _ => None,
    };
    data.entry("exclude_agents").or_insert_with(|| json!([]));
    let exclude_agents = string_list(&data["exclude_agents"]);
    let awaits_attachments = data.iter().any(|(key, value)| {
        key.ends_with("_data")
            && value
                .as_object()
                .is_some_and(|o| o.contains_key("attachments"))
    });
    let reserve_timeout = data
        .get("reserve_data")
        .and_then(|reserve| reserve.get("timeout"))
        .and_then(Value::as_u64)
        .unwrap_or(3600);
    Ok(ValidJob {
        reserve_timeout,
        queue: data["job_queue"].as_str().unwrap_or_default().to_string(),
        priority: data
            .get("job_priority")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        data,
        requested_id,
        exclude_agents,
        awaits_attachments,
    })
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn messages(text: &str) -> Value {
    json!([text])
}

/// Validates one object against a schema, returning its coerced form or the error tree.
fn validate_object(
    value: &Value,
    schema: &Schema,
) -> Result<Map<String, Value>, Map<String, Value>> {
    let mut errors = Map::new();
    let Some(object) = value.as_object() else {
        errors.insert("_schema".into(), messages("Invalid input type."));
        return Err(errors);
    };
    let mut output = Map::new();
    for (key, value) in object {
        match schema.fields.iter().find(|field| field.name == key) {
            None => {
                errors.insert(key.clone(), messages("Unknown field."));
            }
            Some(field) => match validate_value(value, &field.kind) {
                Ok(coerced) => {
                    output.insert(key.clone(), coerced);
                }
                Err(error) => {
                    errors.insert(key.clone(), error);
                }
            },
        }
    }
    for field in schema.fields.iter().filter(|f| f.required) {
        if !object.contains_key(field.name) {
            errors.insert(
                field.name.into(),
                messages("Missing data for required field."),
            );
        }
    }
    if errors.is_empty() {
        if let Some(check) = schema.check {
            check(&output)
                .map_err(|message| Map::from_iter([("_schema".to_string(), messages(&message))]))?;
        }
        Ok(output)
    } else {
        Err(errors)
    }
}

/// Validates one value; the error is what marshmallow puts under the field's key.
fn validate_value(value: &Value, kind: &Kind) -> Result<Value, Value> {
    if value.is_null() {
        return match kind {
            Kind::ProvisionData | Kind::Duration | Kind::IntAtLeastOrNull(_) => Ok(Value::Null),
            _ => Err(messages("Field may not be null.")),
        };
    }
    match kind {
        Kind::Str => value
            .as_str()
            .map(|_| value.clone())
            .ok_or_else(|| messages("Not a valid string.")),
        Kind::Name(kind) => match value.as_str() {
            None => Err(messages("Not a valid string.")),
            Some(name) => kind
                .check(name)
                .map(|()| value.clone())
                .map_err(|error| messages(&error.to_string())),
        },
        Kind::StrAtLeast(min) => match value.as_str() {
            None => Err(messages("Not a valid string.")),
            Some(text) if text.chars().count() < *min => {
                Err(messages(&format!("Shorter than minimum length {min}.")))
            }
            Some(_) => Ok(value.clone()),
        },
        Kind::IntMap => validate_int_map(value),
        Kind::IntAtLeastOrNull(min) => match coerce_int(value) {
            Some(n) if n >= *min => Ok(Value::from(n)),
            Some(_) => Err(messages(&format!(
                "Must be greater than or equal to {min}."
            ))),
            None => Err(messages("Not a valid integer.")),
        },
        Kind::Int => coerce_int(value)
            .map(Value::from)
            .ok_or_else(|| messages("Not a valid integer.")),
        Kind::Bool => coerce_bool(value)
            .map(Value::Bool)
            .ok_or_else(|| messages("Not a valid boolean.")),
        Kind::Url => checked_string(value, &URL, "Not a valid URL."),
        Kind::Email => checked_string(value, &EMAIL, "Not a valid email address."),
        Kind::OneOf(choices) => match value.as_str() {
            Some(text) if choices.contains(&text) => Ok(value.clone()),
            Some(_) => Err(messages(&one_of(choices))),
            None => Err(messages("Not a valid string.")),
        },
        Kind::Pattern(regex) => {
            checked_string(value, regex, "String does not match expected pattern.")
        }
        Kind::FreeObject => match value {
            Value::Object(_) => Ok(value.clone()),
            _ => Err(messages("Not a valid mapping type.")),
        },
        Kind::Duration => parse_duration(value)
            .map(Value::from)
            .map_err(|reason| messages(&format!("Invalid duration format: {reason}"))),
        Kind::List(item_kind, min, max) => validate_list(value, item_kind, *min, *max),
        Kind::Nested(schema) => validate_object(value, schema)
            .map(Value::Object)
            .map_err(Value::Object),
        Kind::SecretMap => validate_secret_map(value),
        Kind::DateTime => match value.as_str().and_then(parse_iso8601) {
            Some(_) => Ok(value.clone()),
            None => Err(messages("Not a valid datetime.")),
        },
        Kind::PhaseMap => validate_phase_map(value),
        Kind::ProvisionData => validate_provision_data(value),
    }
}

fn validate_list(
    value: &Value,
    item_kind: &Kind,
    min: Option<usize>,
    max: Option<usize>,
) -> Result<Value, Value> {
    let Some(items) = value.as_array() else {
        return Err(messages("Not a valid list."));
    };
    let mut output = Vec::with_capacity(items.len());
    let mut errors = Map::new();
    for (index, item) in items.iter().enumerate() {
        match validate_value(item, item_kind) {
            Ok(coerced) => output.push(coerced),
            Err(error) => {
                errors.insert(index.to_string(), error);
            }
        }
    }
    if !errors.is_empty() {
        return Err(Value::Object(errors));
    }
    if let Some(min) = min.filter(|&min| items.len() < min) {
        return Err(messages(&format!("Shorter than minimum length {min}.")));
    }
    if let Some(max) = max.filter(|&max| items.len() > max) {
        return Err(messages(&format!("Longer than maximum length {max}.")));
    }
    Ok(Value::Array(output))
}

fn validate_secret_map(value: &Value) -> Result<Value, Value> {
    let Some(secrets) = value.as_object() else {
        return Err(messages("Not a valid mapping type."));
    };
    let mut errors = Map::new();
    for (name, path) in secrets {
        let mut entry = Map::new();
        if !ENV_NAME.is_match(name) {
            entry.insert(
                "key".into(),
                messages("String does not match expected pattern."),
            );
        }
        match path.as_str() {
            None => {
                entry.insert("value".into(), messages("Not a valid string."));
            }
            Some(path) if !SECRET_PATH.is_match(path) => {
                entry.insert(
                    "value".into(),
                    messages("String does not match expected pattern."),
                );
            }
            Some(_) => {}
        }
        if !entry.is_empty() {
            errors.insert(name.clone(), Value::Object(entry));
        }
    }
    if errors.is_empty() {
        Ok(value.clone())
    } else {
        Err(Value::Object(errors))
    }
}

fn validate_int_map(value: &Value) -> Result<Value, Value> {
    let Some(map) = value.as_object() else {
        return Err(messages("Not a valid mapping type."));
    };
    let mut output = Map::new();
    let mut errors = Map::new();
    for (key, number) in map {
        match coerce_int(number) {
            Some(number) => {
                output.insert(key.clone(), Value::from(number));
            }
            None => {
                errors.insert(key.clone(), json!({"value": ["Not a valid integer."]}));
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(output))
    } else {
        Err(Value::Object(errors))
    }
}

fn validate_phase_map(value: &Value) -> Result<Value, Value> {
    let Some(map) = value.as_object() else {
        return Err(messages("Not a valid mapping type."));
    };
    let mut output = Map::new();
    let mut errors = Map::new();
    for (phase, code) in map {
        let mut entry = Map::new();
        if Phase::parse(phase).is_none() {
            entry.insert("key".into(), messages(&one_of(&Phase::NAMES)));
        }
        match coerce_int(code) {
            Some(code) => {
                output.insert(phase.clone(), Value::from(code));
            }
            None if code.is_null() => {
                entry.insert("value".into(), messages("Field may not be null."));
            }
            None => {
                entry.insert("value".into(), messages("Not a valid integer."));
            }
        }
        if !entry.is_empty() {
            errors.insert(phase.clone(), Value::Object(entry));
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(output))
    } else {
        Err(Value::Object(errors))
    }
}

fn one_of(choices: &[&str]) -> String {
    format!("Must be one of: {}.", choices.join(", "))
}

fn validate_provision_data(value: &Value) -> Result<Value, Value> {
    if !value.is_object() {
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        return Err(json!({ "_schema": format!("Invalid data type: {shown}") }));
    }
    PROVISION_VARIANTS
        .iter()
        .find_map(|variant| validate_object(value, variant).ok())
        .map(Value::Object)
        .ok_or_else(|| json!({ "_schema": ["Invalid provision data schema."] }))
}

fn checked_string(value: &Value, pattern: &Regex, message: &str) -> Result<Value, Value> {
    match value.as_str() {
        Some(text) if text.len() <= MAX_PATTERN_INPUT && pattern.is_match(text) => {
            Ok(value.clone())
        }
        Some(_) => Err(messages(message)),
        None => Err(messages("Not a valid string.")),
    }
}

/// marshmallow's lenient Integer: integers, integral-looking strings, truncated floats;
/// never booleans.
fn coerce_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// marshmallow's Boolean: real booleans plus its accepted truthy/falsy spellings.
fn coerce_bool(value: &Value) -> Option<bool> {
    const TRUTHY: [&str; 13] = [
        "t", "T", "true", "True", "TRUE", "on", "On", "ON", "y", "Y", "yes", "Yes", "YES",
    ];
    const FALSY: [&str; 13] = [
        "f", "F", "false", "False", "FALSE", "off", "Off", "OFF", "n", "N", "no", "No", "NO",
    ];
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        Value::String(s) if s == "1" || TRUTHY.contains(&s.as_str()) => Some(true),
        Value::String(s) if s == "0" || FALSY.contains(&s.as_str()) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: Value) -> Value {
        validate_job(&body).unwrap_err()
    }

    #[test]
    fn reports_errors_like_marshmallow() {
        assert_eq!(
            errors(json!({})),
            json!({"job_queue": ["Missing data for required field."]})
        );
        assert_eq!(
            errors(json!({"job_queue": ""})),
            json!({"job_queue": ["Shorter than minimum length 1."]})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "foo": 1})),
            json!({"foo": ["Unknown field."]})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "exclude_agents": "a"})),
            json!({"exclude_agents": ["Not a valid list."]})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "reserve_data": {"timeout": 1.5}})),
            json!({"reserve_data": {"timeout": ["Invalid duration format: Duration must be string or int, got <class 'float'>"]}})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "test_data": {"attachments": [{"device": "x"}]}})),
            json!({"test_data": {"attachments": {"0": {"agent": ["Missing data for required field."]}}}})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "test_data": {"test_cmds": ["echo"]}})),
            json!({"test_data": {"test_cmds": ["Not a valid string."]}})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "provision_data": "skip"})),
            json!({"provision_data": {"_schema": "Invalid data type: skip"}})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "provision_data": {"bogus": 1}})),
            json!({"provision_data": {"_schema": ["Invalid provision data schema."]}})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "name": null})),
            json!({"name": ["Field may not be null."]})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "job_priority": true})),
            json!({"job_priority": ["Not a valid integer."]})
        );
        assert_eq!(
            errors(json!({"job_queue": "q", "reserve_data": {"ssh_keys": ["lp:me", "me"]}})),
            json!({"reserve_data": {"ssh_keys": {"1": ["String does not match expected pattern."]}}})
        );
        assert_eq!(
            errors(json!([1])),
            json!({"_schema": ["Invalid input type."]})
        );
    }

    #[test]
    fn coerces_and_extracts_dispatch_facts() {
        let job = validate_job(&json!({
            "job_queue": "q", "job_priority": "7", "global_timeout": 10.5,
            "reserve_data": {"timeout": "30m"}, "exclude_agents": ["a1"],
            "test_data": {"attachments": []}, "job_id": ""
        }))
        .unwrap();
        assert_eq!(job.priority, 7);
        assert_eq!(job.data["global_timeout"], json!(10));
        assert_eq!(job.data["reserve_data"]["timeout"], json!(1800));
        assert_eq!(job.exclude_agents, vec!["a1"]);
        assert!(job.awaits_attachments);
        assert_eq!(job.requested_id, None);
        assert!(!job.data.contains_key("job_id"));

        let plain =
            validate_job(&json!({"job_queue": "q", "allocate_data": {"allocate": true}})).unwrap();
        assert!(!plain.awaits_attachments);
        assert_eq!(plain.data["exclude_agents"], json!([]));
    }

    #[test]
    fn provision_data_takes_the_first_matching_variant() {
        let stored = |p: Value| {
            validate_job(&json!({"job_queue": "q", "provision_data": p}))
                .unwrap()
                .data["provision_data"]
                .clone()
        };
        assert_eq!(stored(json!(null)), json!(null));
        assert_eq!(stored(json!({})), json!({}));
        assert_eq!(stored(json!({"skip": true})), json!({"skip": true}));
        assert_eq!(
            stored(json!({"url": "http://example.com/img.xz"})),
            json!({"url": "http://example.com/img.xz"})
        );
        assert_eq!(stored(json!({"preset": "p"})), json!({"preset": "p"}));
        assert_eq!(
            stored(json!({"distro": "jammy"})),
            json!({"distro": "jammy"})
        );
        assert_eq!(
            stored(json!({"use_attachment": "a.img", "media": "usb"})),
            json!({"use_attachment": "a.img", "media": "usb"})
        );
        assert!(
            validate_job(&json!({"job_queue": "q", "provision_data": {"url": "file:///x"}}))
                .is_err()
        );
        assert!(validate_job(
            &json!({"job_queue": "q", "provision_data": {"url": "http://host/x"}})
        )
        .is_err());
    }

    #[test]
    fn urls_follow_the_reference_rule() {
        for good in [
            "http://localhost:8000/x",
            "http://10.0.0.1/x",
            "ftp://a.com/x",
            "https://[::1]:80/",
        ] {
            assert!(URL.is_match(good), "{good}");
        }
        for bad in [
            "file:///x",
            "http://host/x",
            "https://a.b",
            "http://a .com/",
        ] {
            assert!(!URL.is_match(bad), "{bad}");
        }
    }
}
