use clap::Parser;
use image_worker::{Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    chronicle_platform::telemetry::init("image-worker");
    let shutdown = chronicle_platform::shutdown::on_signal();
    let application = Application::build(config).await?;
    tracing::info!(port = application.port(), "image-worker listening");
    application.run_until_stopped(shutdown).await?;
    chronicle_platform::telemetry::flush();
    Ok(())
}
