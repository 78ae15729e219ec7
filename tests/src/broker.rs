//! A Kafka broker of a test's own (the same Apache Kafka jars `./dev` runs),
//! for tests that stop and restart Kafka without disturbing the shared one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateBroker {
    pub address: String,
    directory: PathBuf,
    libs: PathBuf,
    process: Option<Child>,
}

fn kafka_libs() -> PathBuf {
    let home = std::env::var("CHRONICLE_KAFKA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/chronicle/kafka-4.4.0")
        });
    let libs = home.join("libs");
    assert!(
        libs.is_dir(),
        "Kafka's jars are not in {} (./dev test fetches them)",
        libs.display()
    );
    libs
}

impl PrivateBroker {
    pub async fn start() -> PrivateBroker {
        let directory = std::env::temp_dir().join(format!(
            "chronicle-broker-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let (port, controller) = (crate::free_port(), crate::free_port());
        std::fs::write(
            directory.join("server.properties"),
            format!(
                "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\nauto.create.topics.enable=false\noffsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=1\ntransaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
                directory.join("data").display()
            ),
        )
        .unwrap();
        let libs = kafka_libs();
        let classpath = format!("{}/*", libs.display());
        let cluster = Command::new("java")
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "random-uuid"])
            .output()
            .expect("java runs");
        let cluster = String::from_utf8_lossy(&cluster.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let formatted = Command::new("java")
            .args([
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                &cluster,
                "-c",
            ])
            .arg(directory.join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("java runs");
        assert!(
            formatted.success(),
            "formatting the private broker's storage failed"
        );
        let mut broker = PrivateBroker {
            address: format!("127.0.0.1:{port}"),
            directory,
            libs,
            process: None,
        };
        broker.resume().await;
        broker
    }

    /// Starts (again) and waits until it answers.
    pub async fn resume(&mut self) {
        let classpath = format!("{}/*", self.libs.display());
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx384m", "-cp", &classpath, "kafka.Kafka"])
            .arg(self.directory.join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java runs");
        self.process = Some(child);
        let address = self.address.clone();
        crate::eventually(
            Duration::from_secs(90),
            "the private Kafka broker to answer",
            || {
                let address = address.clone();
                async move {
                    chronicle_platform::kafka::ensure_topic(&address, "__ready_probe", 1)
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }

    /// Stops it outright (SIGKILL): as far as clients can tell, Kafka is gone.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
