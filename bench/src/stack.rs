//! The systems under test, as separate processes on free ports: Chronicle's
//! three release binaries and the baselines. Each process's peak resident
//! memory is read from `/proc` (and reset between phases).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// One process under test.
pub struct Process {
    pub name: String,
    pub url: String,
    child: Child,
}

impl Process {
    /// Starts `program` with `env`, logging to `log_dir/<name>.log`, and
    /// waits until `ready_path` answers 200.
    pub async fn start(
        name: &str,
        mut command: Command,
        port: u16,
        ready_path: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Process> {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("start {name}"))?;
        let process = Process {
            name: name.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        process.wait_ready(ready_path).await?;
        Ok(process)
    }

    /// Ready once `path` answers anything but a server error: Chronicle's
    /// `/health/ready` is 503 until ready, PostGraphile's `/graphql` refuses a
    /// bare GET with a 4xx once it listens.
    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = http.get(format!("{}{path}", self.url)).send().await
                && !response.status().is_server_error()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready (see its log)", self.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Freezes the process (SIGSTOP) until `resume`: it does nothing and
    /// holds nothing but its connections meanwhile.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the process has exited")?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// Peak resident set size since start or the last `reset_peak`, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Starts a new peak measurement (Linux: `clear_refs` 5 resets VmHWM).
    pub fn reset_peak(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the services shut down gracefully.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the bench finds its programs and servers.
#[derive(Clone, Debug)]
pub struct Environment {
    pub bin_dir: PathBuf,
    pub database_url: String,
    pub kafka_brokers: String,
    pub work_dir: PathBuf,
}

/// Chronicle, running: the three services on one database and topic.
pub struct Chronicle {
    pub command_service: Process,
    pub projector: Process,
    pub query_service: Process,
    pub database_url: String,
    pub jwt_secret: String,
    pub service_token: String,
    pub search_index_dir: PathBuf,
    pub objects_dir: PathBuf,
    topic: String,
    kafka_brokers: String,
    bin_dir: PathBuf,
    logs: PathBuf,
}

impl Chronicle {
    pub async fn start(environment: &Environment, database_url: &str) -> anyhow::Result<Chronicle> {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let jwt_secret = format!("bench-jwt-secret-{run}");
        let service_token = format!("bench-service-token-{run}");
        let search_index_dir = environment.work_dir.join("search-index");
        let objects_dir = environment.work_dir.join("objects");
        let logs = environment.work_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let topic = format!("chronicle.bench.{run}");
        let common = |binary: &str, port: u16| {
            let mut command = Command::new(environment.bin_dir.join(binary));
            command
                .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("METRICS_ADDR", "127.0.0.1:0")
                .env("DATABASE_URL", database_url)
                .env("KAFKA_BROKERS", &environment.kafka_brokers)
                .env("KAFKA_TOPIC", &topic)
                .env("JWT_SECRET", &jwt_secret)
                .env("COMMAND_API_TOKEN", &service_token)
                .env("SEARCH_INDEX_DIR", &search_index_dir)
                .env("OBJECT_STORE_URL", &objects_dir)
                // Logging every request would measure the log writer.
                .env("RUST_LOG", "warn");
            command
        };

        let port = free_port()?;
        let mut command = common("command-service", port);
        command.env("DATABASE_MAX_CONNECTIONS", "40");
        let command_service =
            Process::start("command-service", command, port, "/health/ready", &logs).await?;

        let port = free_port()?;
        let mut command = common("projector", port);
        command
            .env("PROJECTOR_GROUP", format!("chronicle-bench-{run}"))
            .env("PROJECTOR_INSTANCE_ID", "bench-1");
        let projector = Process::start("projector", command, port, "/health/ready", &logs).await?;

        let port = free_port()?;
        let mut command = common("query-service", port);
        command
            .env("COMMAND_SERVICE_URL", &command_service.url)
            .env("DATABASE_MAX_CONNECTIONS", "40")
            // The benchmark is one client hammering the API on purpose.
            .env("RATE_LIMIT_CLIENT_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_USER_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_UPLOADS_PER_MINUTE", "100000000");
        let query_service =
            Process::start("query-service", command, port, "/health/ready", &logs).await?;

        Ok(Chronicle {
            command_service,
            projector,
            query_service,
            database_url: database_url.to_owned(),
            jwt_secret,
            service_token,
            search_index_dir,
            objects_dir,
            topic,
            kafka_brokers: environment.kafka_brokers.clone(),
            bin_dir: environment.bin_dir.clone(),
            logs,
        })
    }

    /// The topic the stack's relay publishes to.
    pub fn bus(&self) -> crate::lag::Bus {
        crate::lag::Bus {
            brokers: self.kafka_brokers.clone(),
            topic: self.topic.clone(),
        }
    }

    /// An image worker on the stack's topic, in a consumer group of its own
    /// (`group`): a new group starts from the topic's beginning.
    pub async fn start_image_worker(&self, group: &str) -> anyhow::Result<Process> {
        let port = free_port()?;
        let mut command = Command::new(self.bin_dir.join("image-worker"));
        command
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("KAFKA_BROKERS", &self.kafka_brokers)
            .env("KAFKA_TOPIC", &self.topic)
            .env("CONSUMER_GROUP", group)
            .env("OBJECT_STORE_URL", &self.objects_dir)
            .env("COMMAND_SERVICE_URL", &self.command_service.url)
            .env("COMMAND_API_TOKEN", &self.service_token)
            .env("RUST_LOG", "warn");
        Process::start("image-worker", command, port, "/health/ready", &self.logs).await
    }

    /// Another command-service on the same database, without a relay: the
    /// write path alone (with the stack's relay and projector paused).
    pub async fn start_write_only_command_service(&self) -> anyhow::Result<Process> {
        let port = free_port()?;
        let mut command = Command::new(self.bin_dir.join("command-service"));
        command
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &self.database_url)
            .env("DATABASE_MAX_CONNECTIONS", "40")
            .env("KAFKA_BROKERS", &self.kafka_brokers)
            .env("KAFKA_TOPIC", &self.topic)
            .env("JWT_SECRET", &self.jwt_secret)
            .env("COMMAND_API_TOKEN", &self.service_token)
            .env("RELAY_ENABLED", "false")
            .env("RUST_LOG", "warn");
        Process::start(
            "command-service-write-only",
            command,
            port,
            "/health/ready",
            &self.logs,
        )
        .await
    }

    pub fn processes(&self) -> [&Process; 3] {
        [&self.command_service, &self.projector, &self.query_service]
    }

    pub fn reset_peaks(&self) {
        for process in self.processes() {
            process.reset_peak();
        }
    }

    /// Peak RSS of each service since the last reset, in MiB.
    pub fn peaks(&self) -> BTreeMap<String, f64> {
        self.processes()
            .iter()
            .filter_map(|process| Some((process.name.clone(), process.peak_rss_mib()?)))
            .collect()
    }

    pub async fn stop(self) {
        self.query_service.stop().await;
        self.projector.stop().await;
        self.command_service.stop().await;
    }
}
