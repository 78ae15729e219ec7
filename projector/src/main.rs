use clap::Parser;
use projector::config::{Cli, Command};
use projector::{Application, read_models};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    chronicle_platform::telemetry::init("projector");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = chronicle_platform::shutdown::on_signal();
            let application = Application::build(cli.config).await?;
            tracing::info!(port = application.port(), "projector listening");
            application.run_until_stopped(shutdown).await?;
        }
        Command::InitReadModels => {
            let pool = chronicle_platform::database::connect(
                &cli.config.database_url,
                &chronicle_platform::database::PoolSettings::default(),
            )?;
            chronicle_platform::database::migrate(&cli.config.database_url).await?;
            read_models::ensure(&pool).await?;
            println!("migrations applied; read models ready");
        }
    }
    Ok(())
}
