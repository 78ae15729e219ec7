//! A service binary (built by `./dev test`) as its own process, on a free
//! port, against a test app's database and topic; killed when dropped.

use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::{TestApp, binary, free_port, wait_ready};

pub struct ServiceProcess {
    child: Child,
    pub port: u16,
}

impl ServiceProcess {
    /// Starts `name` with `args` and `envs`, logging at `rust_log` into `log`
    /// (or nowhere), and waits until it is ready.
    pub async fn start(
        name: &str,
        args: Vec<String>,
        envs: Vec<(&str, String)>,
        rust_log: &str,
        log: Option<&Path>,
    ) -> ServiceProcess {
        let port = free_port();
        let output = || match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("a log file"),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(binary(name))
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .args(args)
            .envs(envs)
            .env("RUST_LOG", rust_log)
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("the {name} binary (built by ./dev test): {error}"));
        let process = ServiceProcess { child, port };
        wait_ready(&reqwest::Client::new(), &process.url()).await;
        process
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

impl TestApp {
    /// A query-service binary's settings for this app (by environment),
    /// sending commands to `command_service_url`, reading the index at
    /// `index_dir`, with the per-client limits lifted.
    pub fn query_service_env(
        &self,
        command_service_url: String,
        index_dir: &Path,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", self.database_url.clone()),
            ("COMMAND_SERVICE_URL", command_service_url),
            ("JWT_SECRET", self.jwt_secret.clone()),
            ("COMMAND_API_TOKEN", self.command_api_token.clone()),
            ("SEARCH_INDEX_DIR", index_dir.display().to_string()),
            ("RATE_LIMIT_CLIENT_PER_MINUTE", "1000000".to_owned()),
            ("RATE_LIMIT_USER_PER_MINUTE", "1000000".to_owned()),
        ]
    }
}
