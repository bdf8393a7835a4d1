//! Command-line options that several commands take.

use clap::Args;

/// `--client-id` / `--secret-key`, on the commands that take them.
#[derive(Args, Debug, Clone, Default)]
pub struct Credentials {
    /// Client ID to authenticate with Testflinger server
    #[arg(long = "client-id", alias = "client_id", value_name = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// Secret key to be used with client id for authentication
    #[arg(long = "secret-key", alias = "secret_key", value_name = "SECRET_KEY")]
    pub secret_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobId {
    /// The job's id, as `submit` printed it
    pub job_id: String,
}
