use clap::Parser;
use command_service::config::Operation;
use command_service::{Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    chronicle_platform::telemetry::init("command-service");
    if let Some(Operation::SetRole { email, role }) = &config.operation {
        let pool =
            chronicle_platform::database::connect(&config.database_url, &Default::default())?;
        let (user_id, version) = command_service::operator::set_role(&pool, email, *role)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        println!(
            "{email} ({user_id}) is now {} at version {version}",
            role.as_str()
        );
        return Ok(());
    }
    let shutdown = chronicle_platform::shutdown::on_signal();
    let application = Application::build(config).await?;
    tracing::info!(port = application.port(), "command-service listening");
    application.run_until_stopped(shutdown).await?;
    chronicle_platform::telemetry::flush();
    Ok(())
}
