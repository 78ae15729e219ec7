use clap::Parser;
use command_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    chronicle_platform::telemetry::init("command-service");
    let shutdown = chronicle_platform::shutdown::on_signal();
    let application = Application::build(config).await?;
    tracing::info!(port = application.port(), "command-service listening");
    application.run_until_stopped(shutdown).await?;
    Ok(())
}
