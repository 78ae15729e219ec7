use clap::Parser;
use projector::cli::AdminClient;
use projector::config::{Cli, Command, ReplayTarget};
use projector::rebuild::Projection;
use projector::{Application, read_models};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Serve);
    if matches!(command, Command::Serve | Command::InitReadModels) {
        chronicle_platform::telemetry::init("projector");
    }
    let token = cli
        .config
        .service_token
        .as_ref()
        .map(|token| token.expose().to_owned())
        .unwrap_or_default();
    match command {
        Command::Serve => {
            let shutdown = chronicle_platform::shutdown::on_signal();
            let application = Application::build(cli.config).await?;
            tracing::info!(port = application.port(), "projector listening");
            application.run_until_stopped(shutdown).await?;
            chronicle_platform::telemetry::flush();
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
        Command::Replay {
            projection,
            no_swap,
            url,
        } => {
            let client = AdminClient::new(&url, &token);
            let projections = match projection {
                ReplayTarget::All => vec![Projection::ReadModels, Projection::Search],
                ReplayTarget::ReadModels => vec![Projection::ReadModels],
                ReplayTarget::Search => vec![Projection::Search],
            };
            for projection in projections {
                let done = client.replay(projection, !no_swap).await?;
                let seconds = match (done.started_at, done.finished_at) {
                    (Some(started), Some(finished)) => {
                        (finished - started).num_milliseconds() as f64 / 1000.0
                    }
                    _ => 0.0,
                };
                println!(
                    "{}: rebuilt from {} events in {seconds:.1} s ({:.0} events/s){}",
                    done.projection,
                    done.processed,
                    done.processed as f64 / seconds.max(0.001),
                    if no_swap {
                        ", left beside the live one"
                    } else {
                        ", now live"
                    },
                );
                let phases: Vec<String> = done
                    .phases
                    .iter()
                    .map(|phase| format!("{} {:.1} s", phase.phase, phase.seconds))
                    .collect();
                println!("  {}", phases.join(", "));
            }
        }
        Command::Redrive { url } => {
            let report = AdminClient::new(&url, &token).redrive().await?;
            println!(
                "dead letters: {} re-applied, {} still failing, {} undecodable (skipped)",
                report.redriven, report.still_failing, report.skipped
            );
        }
    }
    Ok(())
}
