//! `reserve`: builds a reservation job (asking for the queue, image and keys that were
//! not given), submits it and follows it, so the ssh details show up when the device is
//! ready.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::session::Session;
use super::submit;
use super::{jobs, poll};
use crate::api::v1;
use crate::codec::pyjson;
use crate::job::Outcome;

#[derive(Args, Debug)]
pub struct ReserveArgs {
    /// Only show the job data, don't submit it
    #[arg(short = 'd', long)]
    pub dry_run: bool,
    /// Name of the queue to use
    #[arg(short = 'q', long)]
    pub queue: Option<String>,
    /// Name (URL) of the image to use for provisioning
    #[arg(short = 'i', long, conflicts_with = "distro")]
    pub image: Option<String>,
    /// Name of the distro to use for provisioning
    #[arg(long)]
    pub distro: Option<String>,
    /// Ssh key(s) to use for reservation (ex: -k lp:userid -k gh:userid)
    #[arg(short = 'k', long = "key")]
    pub keys: Vec<String>,
    /// Skip the Proceed confirmation prompt
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Reservation timeout in seconds
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// MAAS ephemeral (in-memory) deployment
    #[arg(long)]
    pub ephemeral: bool,
}

/// The job, with its keys in the order the reference prints them.
#[derive(Serialize)]
struct ReservationJob {
    job_queue: String,
    reserve_data: ReserveData,
    #[serde(skip_serializing_if = "Option::is_none")]
    provision_data: Option<Value>,
}

#[derive(Serialize)]
struct ReserveData {
    ssh_keys: Vec<String>,
    timeout: u64,
}

/// Prints `prompt` and reads one line; end of input is an error, not a loop.
fn ask(prompt: &str) -> anyhow::Result<String> {
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line)? == 0 {
        bail!("No answer (end of input)");
    }
    Ok(line.trim().to_string())
}

fn valid_key(key: &str) -> bool {
    key.starts_with("lp:") || key.starts_with("gh:")
}

pub async fn run(session: &Session, args: &ReserveArgs) -> anyhow::Result<ExitCode> {
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => choose_queue(session).await?,
    };
    if args.ephemeral && args.distro.is_none() {
        bail!("Error: --ephemeral option requires --distro to be specified.");
    }
    let provision_data = match (&args.distro, &args.image) {
        (Some(distro), _) => {
            let mut data = json!({"distro": distro});
            if args.ephemeral {
                data["ephemeral"] = json!(true);
            }
            Some(data)
        }
        // Taken as a URL, as the reference does.
        (None, Some(image)) => Some(json!({"url": image})),
        (None, None) => choose_image(session, &queue)
            .await?
            .map(|url| json!({"url": url})),
    };
    let keys = if args.keys.is_empty() {
        loop {
            let answer = ask("\nEnter the key(s) you wish to use (ex: 'lp:user,gh:user'): ")?;
            let keys: Vec<String> = answer
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
            if !keys.is_empty() && keys.iter().all(|k| valid_key(k)) {
                break keys;
            }
            println!("Please enter keys in the form of 'gh:user' or 'lp:user'.");
        }
    } else {
        for key in args.keys.iter().filter(|k| !valid_key(k)) {
            eprintln!("ERROR: Invalid SSH key format: {key}");
        }
        args.keys.clone()
    };
    let job = ReservationJob {
        job_queue: queue,
        reserve_data: ReserveData {
            ssh_keys: keys,
            timeout: args.timeout,
        },
        provision_data,
    };
    println!("\nThe following job will be submitted:");
    println!("{}", pyjson::dumps_indented(&job, 2));
    let job = serde_json::to_value(&job)?;
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        let answer = ask("Proceed? (Y/n) ")?;
        if !matches!(answer.as_str(), "" | "y" | "Y") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let here = std::env::current_dir()?;
    let job_id = submit::submit_job(session, job, &here, false).await?;
    println!("Job submitted successfully!");
    println!("job_id: {job_id}");
    let code = submit::poll_from(session, &job_id, 0, false).await?;
    // The poll ends the same way whatever happened; a reservation that never began is
    // this command's failure.
    match poll::reservation_target(session, &job_id).await {
        Ok(Some(_)) => Ok(code),
        Ok(None) => bail!(
            "The device was not reserved: {}",
            why_not_reserved(session, &job_id).await
        ),
        Err(failure) => {
            eprintln!(
                "WARNING: cannot tell whether the device was reserved: its reserve log cannot \
                 be read ({:#})",
                failure.into_error()
            );
            Ok(code)
        }
    }
}

/// What ended a job before its reserve phase announced the reservation: its outcome.
async fn why_not_reserved(session: &Session, job_id: &str) -> String {
    let result = match session.call(v1::result(job_id)).await {
        Ok(result) => result,
        Err(failure) => return format!("its result cannot be read ({:#})", failure.into_error()),
    };
    let state = result
        .get("job_state")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match jobs::outcome_in(&result, state) {
        Some(Outcome::Passed) | None => "the agent ran no reserve phase".into(),
        Some(outcome) => format!("job outcome: {outcome}"),
    }
}

async fn choose_queue(session: &Session) -> anyhow::Result<String> {
    eprintln!("WARNING: This only shows a curated list of queues with descriptions");
    let queues = match session.call(v1::queues()).await {
        Ok(Value::Object(queues)) => queues,
        _ => Map::new(),
    };
    loop {
        let answer = ask("\nEnter the queue you wish to use ('?' to list): ")?;
        if answer.is_empty() {
            continue;
        }
        if answer == "?" {
            println!("\nAdvertised queues on this server:");
            for (name, description) in &queues {
                println!(" {name} - {}", description.as_str().unwrap_or_default());
            }
            continue;
        }
        if queues.contains_key(&answer) {
            return Ok(answer);
        }
        println!("WARNING: '{answer}' is not in the list of known queues");
        if ask("Do you still want to use it? (y/N) ")?.eq_ignore_ascii_case("y") {
            return Ok(answer);
        }
    }
}

/// The image to provision: a known name, a URL, or nothing (`None`).
async fn choose_image(session: &Session, queue: &str) -> anyhow::Result<Option<String>> {
    let images = match session.call(v1::images(queue)).await {
        Ok(Value::Object(images)) => images,
        _ => {
            eprintln!("WARNING: Unable to get a list of images from the server!");
            Map::new()
        }
    };
    let takes_urls = images
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.starts_with("url:")));
    let prompt = format!(
        "\nEnter the image you wish to use{} ('?' to list): ",
        if takes_urls {
            " or a URL for a valid image, starting with http(s)://"
        } else {
            ""
        }
    );
    loop {
        let answer = ask(&prompt)?;
        if answer == "?" {
            if images.is_empty() {
                println!("WARNING: No images defined for this device. You may also provide the URL to an image that can be booted with this device though.");
            }
            let mut names: Vec<&String> = images.keys().collect();
            names.sort();
            for name in names {
                println!(" {name}");
            }
            continue;
        }
        if answer.starts_with("http://") || answer.starts_with("https://") {
            return Ok(Some(answer));
        }
        if let Some(line) = images.get(&answer).and_then(Value::as_str) {
            let url = line.rsplit_once("url:").map_or(line, |(_, url)| url).trim();
            return Ok(Some(url.to_string()));
        }
        if answer.is_empty() {
            loop {
                match ask("\nNo image specified, proceed with no provision data? (Y)es/(n)o? ")?
                    .to_lowercase()
                    .as_str()
                {
                    "y" | "yes" => return Ok(None),
                    "n" | "no" => break,
                    _ => {}
                }
            }
            continue;
        }
        println!("ERROR: '{answer}' is not in the list of known images for that queue, please select another.");
    }
}
