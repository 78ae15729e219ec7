//! `seed`: fills the event store with a realistic blog history
//! (`./dev seed`); the relay and projector take it from there.

use std::time::Instant;

use chronicle_bench::generator::{Plan, generate};
use chronicle_bench::store::{SEEDED_PASSWORD, write};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Fill Chronicle's event store with a realistic blog history")]
struct Args {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://chronicle:chronicle@127.0.0.1:5432/chronicle"
    )]
    database_url: String,
    /// About how many events to write.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await?;
    let plan = Plan::for_events(args.events, args.seed);
    let started = Instant::now();
    let history = generate(plan, chrono::Utc::now());
    eprintln!(
        "generated {} users, {} posts, {} comments: {} events in {:.1} s",
        plan.users,
        plan.posts,
        plan.comments,
        history.events.len(),
        started.elapsed().as_secs_f64()
    );
    let total = history.events.len();
    let written = write(&pool, &history, |done| {
        if done % 100_000 < 5_000 || done == total {
            eprintln!("  {done}/{total} events written");
        }
    })
    .await?;
    println!(
        "seeded {written} events in {:.1} s; every user's password is \"{SEEDED_PASSWORD}\"",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
