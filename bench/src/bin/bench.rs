//! `bench`: measures Chronicle beside the systems users would pick instead
//! and writes `bench/results.json` and `BENCHMARKS.md` (`./dev bench`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chronicle_bench::report::Results;
use chronicle_bench::run::{Bench, Phase, Scale, Tools};
use chronicle_bench::stack::Environment;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Benchmark Chronicle against its baselines")]
struct Args {
    /// A smaller version of everything, in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Only these phases (the results then go to the work directory, not the repository).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// A server's database URL; the bench creates its own databases beside it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: String,
    /// Where Chronicle's release binaries are.
    #[arg(long)]
    bin_dir: PathBuf,
    #[arg(long)]
    oha: PathBuf,
    #[arg(long)]
    pgbench: PathBuf,
    #[arg(long)]
    postgraphile: PathBuf,
    #[arg(long)]
    cqrs_es_baseline: PathBuf,
    /// libvips's vipsthumbnail (the image baseline).
    #[arg(long, default_value = "/usr/bin/vipsthumbnail")]
    vipsthumbnail: PathBuf,
    /// Scratch space: logs, the search index, load files.
    #[arg(long)]
    work_dir: PathBuf,
    /// The repository root (results.json and BENCHMARKS.md are written there).
    #[arg(long)]
    repo: PathBuf,
    #[arg(long, default_value = "")]
    commit: String,
    /// Concurrent clients for the throughput comparisons.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Facts about the machine, as key=value.
    #[arg(long = "machine", value_parser = parse_fact)]
    machine: Vec<(String, String)>,
}

fn parse_fact(fact: &str) -> Result<(String, String), String> {
    fact.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{fact:?} is not key=value"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let phases = if args.only.is_empty() {
        vec![
            Phase::Replay,
            Phase::Search,
            Phase::Reads,
            Phase::Append,
            Phase::Lag,
            Phase::Images,
        ]
    } else {
        args.only.clone()
    };
    let complete = args.only.is_empty();
    let bench = Bench {
        environment: Environment {
            bin_dir: args.bin_dir.clone(),
            database_url: args.database_url.clone(),
            kafka_brokers: args.kafka_brokers.clone(),
            work_dir: args.work_dir.clone(),
        },
        tools: Tools {
            oha: args.oha.clone(),
            pgbench: args.pgbench.clone(),
            postgraphile: args.postgraphile.clone(),
            cqrs_es_baseline: args.cqrs_es_baseline.clone(),
            vipsthumbnail: args.vipsthumbnail.clone(),
        },
        scale: if args.quick {
            Scale::quick()
        } else {
            Scale::full()
        },
        phases,
        concurrency: args.concurrency,
    };
    let mut results = Results::default();
    results.run.mode = if args.quick { "quick" } else { "full" }.to_owned();
    results.run.commit = args.commit.clone();
    results.run.date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    results.run.machine = args.machine.iter().cloned().collect::<BTreeMap<_, _>>();

    let outcome = bench.run(&mut results).await;
    results.run.seconds = started.elapsed().as_secs_f64();
    let (json_path, markdown_path) = if complete {
        (
            args.repo.join("bench/results.json"),
            args.repo.join("BENCHMARKS.md"),
        )
    } else {
        (
            args.work_dir.join("results.json"),
            args.work_dir.join("BENCHMARKS.md"),
        )
    };
    if let Err(error) = outcome {
        let partial = args.work_dir.join("results.partial.json");
        std::fs::write(&partial, serde_json::to_string_pretty(&results.to_json())?)?;
        eprintln!(
            "the run failed; what it measured is in {}",
            partial.display()
        );
        return Err(error);
    }
    let notes = std::fs::read_to_string(args.repo.join("bench/NOTES.md")).unwrap_or_default();
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results.to_json())? + "\n",
    )?;
    std::fs::write(&markdown_path, results.to_markdown(&notes))?;
    println!(
        "wrote {} and {}",
        json_path.display(),
        markdown_path.display()
    );
    for (key, figure) in &results.figures {
        println!(
            "  {key}: {} {} (target {}){}",
            figure.summary.display(2),
            figure.unit,
            if figure.target.is_empty() {
                "none"
            } else {
                &figure.target
            },
            match figure.met {
                Some(false) => "  NOT MET",
                _ => "",
            }
        );
    }
    Ok(())
}
