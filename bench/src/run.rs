//! One benchmark run: a fresh database seeded with a realistic history,
//! Chronicle's release binaries beside each baseline, every comparison
//! repeated side by side (Chronicle, then the baseline, round after round).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chronicle_platform::access_token::AccessTokens;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::Command;
use uuid::Uuid;

use crate::append::{self, CommandApi};
use crate::generator::{Plan, generate};
use crate::report::{Comparison, Figure, Results};
use crate::stack::{Chronicle, Environment, Process, free_port};
use crate::stats::Summary;
use crate::{images, lag, reads, replay, search, store};

pub const DATABASE: &str = "chronicle_bench";
/// Writes per second made during a replay, each waited for until visible.
const REPLAY_WRITES_PER_SECOND: f64 = 20.0;
/// The lag is the median of this many runs (one run's p99 is noisy).
const LAG_ROUNDS: usize = 3;
const CQRS_ES_DATABASE: &str = "chronicle_bench_cqrs";

/// How much of everything: `quick` is a smoke run of a few minutes.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub events: usize,
    pub rounds: usize,
    pub append_seconds: u64,
    pub lag_seconds: u64,
    pub read_seconds: u64,
    pub read_p99_seconds: u64,
    pub search_queries: usize,
    pub replays: usize,
    /// Photos per rendition round, and seconds of uploads at 10/s.
    pub photos: usize,
    pub upload_seconds: u64,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            events: 1_100_000,
            rounds: 3,
            append_seconds: 15,
            lag_seconds: 30,
            read_seconds: 10,
            read_p99_seconds: 30,
            search_queries: 300,
            replays: 3,
            photos: 12,
            upload_seconds: 30,
        }
    }

    pub fn quick() -> Scale {
        Scale {
            events: 100_000,
            rounds: 1,
            append_seconds: 3,
            lag_seconds: 5,
            read_seconds: 3,
            read_p99_seconds: 5,
            search_queries: 100,
            replays: 1,
            photos: 4,
            upload_seconds: 5,
        }
    }
}

/// The external programs the baselines and load need.
#[derive(Clone, Debug)]
pub struct Tools {
    pub oha: PathBuf,
    pub pgbench: PathBuf,
    pub postgraphile: PathBuf,
    pub cqrs_es_baseline: PathBuf,
    pub vipsthumbnail: PathBuf,
}

/// Which phases to run (all for a result to commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Phase {
    Replay,
    Search,
    Reads,
    Append,
    Lag,
    Images,
}

pub struct Bench {
    pub environment: Environment,
    pub tools: Tools,
    pub scale: Scale,
    pub phases: Vec<Phase>,
    pub concurrency: usize,
}

const SEED: u64 = 7;

impl Bench {
    pub async fn run(&self, results: &mut Results) -> anyhow::Result<()> {
        let url = database_url(&self.environment.database_url, DATABASE)?;
        recreate_database(&self.environment.database_url, DATABASE).await?;
        chronicle_platform::database::migrate(&url).await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;

        eprintln!("seeding about {} events", self.scale.events);
        let plan = Plan::for_events(self.scale.events, SEED);
        let history = generate(plan, chrono::Utc::now());
        let written = store::write(&pool, &history, |_| {}).await?;
        let users: Vec<Uuid> = history
            .users
            .iter()
            .take(self.concurrency)
            .copied()
            .collect();
        drop(history);
        mark_history_as_published(&pool).await?;
        // Fresh statistics for every table the history filled (as autovacuum
        // would have by now), so no plan is chosen for an empty table.
        sqlx::raw_sql("VACUUM ANALYZE").execute(&pool).await?;
        results.dataset.events = written as u64;
        results.dataset.users = plan.users as u64;
        results.dataset.posts = plan.posts as u64;
        results.dataset.comments = plan.comments as u64;

        let chronicle = Chronicle::start(&self.environment, &url).await?;
        let outcome = self.phases(&chronicle, &pool, &users, results).await;
        chronicle.stop().await;
        outcome
    }

    async fn phases(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        users: &[Uuid],
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let tokens = AccessTokens::new(&chronicle.jwt_secret, Duration::from_secs(24 * 3600));
        // One signed-in session per client, as a login would open it.
        let sessions: Vec<Uuid> = users.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            "INSERT INTO auth.sessions (id, user_id) SELECT * FROM UNNEST($1::uuid[], $2::uuid[])",
        )
        .bind(&sessions)
        .bind(users)
        .execute(pool)
        .await?;
        let bearers: Vec<String> = users
            .iter()
            .zip(&sessions)
            .map(|(user, session)| tokens.issue(*user, "user", *session))
            .collect();
        let api = CommandApi::new(
            &chronicle.command_service.url,
            &chronicle.service_token,
            &bearers,
            append::drafts(256, SEED),
        );
        // Replay first: it builds the read models and index the reads query.
        self.replay(chronicle, pool, &api, results).await?;
        if self.phases.contains(&Phase::Search) {
            self.search(chronicle, pool, results).await?;
        }
        if self.phases.contains(&Phase::Reads) {
            self.reads(chronicle, pool, results).await?;
        }
        if self.phases.contains(&Phase::Append) {
            self.append(chronicle, pool, &api, results).await?;
        }
        if self.phases.contains(&Phase::Lag) {
            self.lag(chronicle, pool, &api, results).await?;
        }
        if self.phases.contains(&Phase::Images) {
            let worker = chronicle
                .start_image_worker("chronicle-bench-images")
                .await?;
            let measured = self
                .images(chronicle, pool, &api, &bearers[0], &worker, results)
                .await;
            worker.stop().await;
            measured?;
        }
        Ok(())
    }

    /// The image worker beside vipsthumbnail, then upload-to-ready at 10/s.
    async fn images(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        api: &CommandApi,
        bearer: &str,
        worker: &Process,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        const UPLOADS_PER_SECOND: f64 = 10.0;
        eprintln!("images: generating photos");
        let large = images::photos(self.scale.photos, 3000, 2000, SEED);
        let blog = images::photos(8, 1600, 1200, SEED + 100);
        let uploader = images::Uploader::new(&chronicle.query_service.url, bearer);
        let per_post = chronicle_schema::images::MAX_IMAGES_PER_POST;
        let rounds: Vec<Uuid> = self.posts(api, self.scale.rounds).await?;
        let uploads = (UPLOADS_PER_SECOND * self.scale.upload_seconds as f64) as usize;
        let latency_posts = self.posts(api, uploads.div_ceil(per_post - 1)).await?;
        // One image into every post first: once each has its outcome, the
        // worker's group is past everything before, on every partition used.
        let mut warm = Vec::new();
        for post in rounds.iter().chain(&latency_posts) {
            warm.push(
                uploader
                    .upload(*post, blog[0].variant(&format!("warm {post}")))
                    .await?,
            );
        }
        images::wait_for_outcomes(pool, &warm, Duration::from_secs(300)).await?;
        let (mut rates, mut ratios) = (Vec::new(), Vec::new());
        for (round, post) in rounds.iter().enumerate() {
            // The worker waits while the round is uploaded, then is timed
            // from when it resumes to the last outcome.
            worker.pause()?;
            let mut uploaded = Vec::new();
            for photo in &large {
                uploaded.push(
                    uploader
                        .upload(*post, photo.variant(&format!("round {round}")))
                        .await?,
                );
            }
            let started = std::time::Instant::now();
            worker.resume()?;
            images::wait_for_outcomes(pool, &uploaded, Duration::from_secs(600)).await?;
            let renditions = large.iter().map(images::Photo::renditions).sum();
            let ours = images::RenditionRun::of(large.len(), renditions, started.elapsed());
            let theirs = images::vips(
                &self.tools.vipsthumbnail,
                &large,
                &self.environment.work_dir,
                round,
                available_cores(),
            )
            .await?;
            eprintln!(
                "images round {}: image worker {:.1} renditions/s ({} in {:.1} s), vipsthumbnail {:.1} renditions/s ({:.1} s)",
                round + 1,
                ours.renditions_per_second,
                ours.renditions,
                ours.seconds,
                theirs.renditions_per_second,
                theirs.seconds
            );
            rates.push(ours.renditions_per_second);
            ratios.push(ours.renditions_per_second / theirs.renditions_per_second);
            results.details.images.push(Comparison {
                chronicle: serde_json::to_value(&ours)?,
                baseline: serde_json::to_value(&theirs)?,
                extra: None,
            });
        }
        let ready = images::upload_to_ready(
            &uploader,
            pool,
            &latency_posts,
            per_post - 1,
            &blog,
            images::Schedule {
                rate: UPLOADS_PER_SECOND,
                duration: Duration::from_secs(self.scale.upload_seconds),
            },
            "ready",
        )
        .await?;
        eprintln!(
            "images: {} uploads at {:.1}/s, upload to READY p50 {:.0} ms p99 {:.0} ms max {:.0} ms, {} failed",
            ready.uploads,
            ready.uploads_per_second,
            ready.upload_to_ready.p50_ms,
            ready.upload_to_ready.p99_ms,
            ready.upload_to_ready.max_ms,
            ready.failed
        );
        if ready.failed > 0 {
            bail!("{} uploads FAILED under load", ready.failed);
        }
        results.figure(
            "image_renditions_per_s",
            Figure::info(Summary::of(&rates), "renditions/s"),
        );
        results.figure(
            "image_ratio_vs_vips",
            Figure::at_least(0.5, Summary::of(&ratios), "×"),
        );
        results.figure(
            "image_upload_to_ready_p99_ms",
            Figure::info(Summary::of(&[ready.upload_to_ready.p99_ms]), "ms"),
        );
        results.details.image_uploads = Some(ready);
        Ok(())
    }

    /// `count` new posts by the first client (images go to their author's posts).
    async fn posts(&self, api: &CommandApi, count: usize) -> anyhow::Result<Vec<Uuid>> {
        let mut posts = Vec::with_capacity(count);
        for _ in 0..count {
            posts.push(api.create_post(0).await?.stream_id);
        }
        Ok(posts)
    }

    async fn replay(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        api: &CommandApi,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let runs = if self.phases.contains(&Phase::Replay) {
            self.scale.replays
        } else {
            1
        };
        let (mut rates, mut visibility_p99s, mut never_visible) = (Vec::new(), Vec::new(), 0);
        chronicle.reset_peaks();
        let bus = chronicle.bus();
        for run in 0..runs {
            // Writes go on during the replay, each waited for until visible:
            // a rebuild must not hold them back.
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            let writes = lag::measure_until(
                api,
                &chronicle.database_url,
                &bus,
                REPLAY_WRITES_PER_SECOND,
                async {
                    let _ = finished.await;
                },
            );
            let replay = async {
                let replayed =
                    replay::rebuild_all(&chronicle.projector.url, &chronicle.service_token).await;
                let _ = done.send(());
                replayed
            };
            let (replayed, writes) = tokio::join!(replay, writes);
            let (replayed, writes) = (replayed?, writes?);
            eprintln!(
                "replay {}/{runs}: {} events in {:.1} s = {:.0} events/s {:?}; writes meanwhile: {} at {:.1}/s, visible p50 {:.1} ms p99 {:.1} ms, never visible {}",
                run + 1,
                replayed.events,
                replayed.seconds,
                replayed.events_per_second,
                replayed.projections,
                writes.acknowledged,
                writes.achieved_commands_per_second,
                writes.lag.p50_ms,
                writes.lag.p99_ms,
                writes.never_visible
            );
            for (projection, phases) in &replayed.phases {
                let phases: Vec<String> = phases
                    .iter()
                    .map(|(phase, seconds)| format!("{phase} {seconds:.1} s"))
                    .collect();
                eprintln!("  {projection}: {}", phases.join(", "));
            }
            rates.push(replayed.events_per_second);
            visibility_p99s.push(writes.lag.p99_ms);
            never_visible += writes.never_visible;
            results.details.replay.push(replayed);
            results.details.replay_writes.push(writes);
        }
        let peaks = chronicle.peaks();
        let projector_peak = peaks.get("projector").copied().unwrap_or_default();
        results.peak_rss("replay", peaks);
        if self.phases.contains(&Phase::Replay) {
            results.figure(
                "replay_events_per_s",
                Figure::at_least(50_000.0, Summary::of(&rates), "events/s"),
            );
            results.figure(
                "replay_peak_rss_mib",
                Figure::at_most(512.0, Summary::of(&[projector_peak]), "MiB"),
            );
            if never_visible > 0 {
                bail!("{never_visible} writes made during a replay never became visible");
            }
            results.figure(
                "write_visibility_p99_ms_during_replay",
                Figure::at_most(250.0, Summary::of(&visibility_p99s), "ms"),
            );
        }
        results.dataset.published_posts =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM read.posts WHERE public")
                .fetch_one(pool)
                .await? as u64;
        Ok(())
    }

    async fn search(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        eprintln!("search: building the Postgres full-text corpus");
        let corpus = search::create_postgres_corpus(pool).await?;
        let queries = search::queries(self.scale.search_queries, SEED);
        let url = &chronicle.query_service.url;
        search::warm_up(url, pool, &queries).await?;
        chronicle.reset_peaks();
        let (mut p99s, mut speedups, mut plain_speedups) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..self.scale.rounds {
            let ours = search::chronicle(url, &queries, 1).await?;
            let theirs = search::postgres(pool, &queries, 1, true).await?;
            let plain = search::postgres(pool, &queries, 1, false).await?;
            eprintln!(
                "search round {}: chronicle p50 {:.2} ms p99 {:.2} ms mean {:.2} ms; postgres (highlighted) mean {:.2} ms, (plain) mean {:.2} ms",
                round + 1,
                ours.latency.p50_ms,
                ours.latency.p99_ms,
                ours.latency.mean_ms,
                theirs.latency.mean_ms,
                plain.latency.mean_ms
            );
            p99s.push(ours.latency.p99_ms);
            speedups.push(theirs.latency.mean_ms / ours.latency.mean_ms);
            plain_speedups.push(plain.latency.mean_ms / ours.latency.mean_ms);
            results.details.search.push(Comparison {
                chronicle: serde_json::to_value(&ours)?,
                baseline: serde_json::to_value(&theirs)?,
                extra: Some(serde_json::to_value(&plain)?),
            });
        }
        results.peak_rss("search", chronicle.peaks());
        results.dataset.search_corpus = corpus as u64;
        results.figure(
            "search_p99_ms_100k_posts",
            Figure::at_most(10.0, Summary::of(&p99s), "ms"),
        );
        results.figure(
            "search_speedup_vs_postgres_fts",
            Figure::at_least(5.0, Summary::of(&speedups), "×"),
        );
        results.figure(
            "search_speedup_vs_postgres_fts_without_highlights",
            Figure::info(Summary::of(&plain_speedups), "×"),
        );
        Ok(())
    }

    async fn reads(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let work = &self.environment.work_dir;
        let workload = reads::ReadWorkload::prepare(pool, work, 1000).await?;
        reads::declare_relations_for_postgraphile(pool).await?;
        let port = free_port()?;
        let mut command = Command::new(&self.tools.postgraphile);
        command
            // It would read Chronicle's secret from the environment otherwise.
            .env_remove("JWT_SECRET")
            .args(["--connection", &chronicle.database_url])
            .args(["--schema", "read"])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .arg("--disable-graphiql")
            .arg("--disable-query-log")
            // One Node process per core: PostGraphile at its best here.
            .args(["--cluster-workers", &available_cores().to_string()]);
        let logs = work.join("logs");
        let postgraphile = Process::start("postgraphile", command, port, "/graphql", &logs)
            .await
            .context("start PostGraphile")?;
        let result = self
            .compare_reads(chronicle, &postgraphile, &workload, results)
            .await;
        postgraphile.stop().await;
        result
    }

    async fn compare_reads(
        &self,
        chronicle: &Chronicle,
        postgraphile: &Process,
        workload: &reads::ReadWorkload,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let ours_url = format!("{}/graphql", chronicle.query_service.url);
        let theirs_url = format!("{}/graphql", postgraphile.url);
        reads::check_answers(&ours_url, &workload.chronicle_bodies, "post").await?;
        reads::check_answers(&theirs_url, &workload.postgraphile_bodies, "postById").await?;
        let duration = Duration::from_secs(self.scale.read_seconds);
        let warmup = Duration::from_secs(2);
        let oha = &self.tools.oha;
        reads::oha(
            oha,
            &ours_url,
            &workload.chronicle_bodies,
            self.concurrency,
            warmup,
            None,
        )
        .await?;
        reads::oha(
            oha,
            &theirs_url,
            &workload.postgraphile_bodies,
            self.concurrency,
            warmup,
            None,
        )
        .await?;
        chronicle.reset_peaks();
        let mut ratios = Vec::new();
        for round in 0..self.scale.rounds {
            let ours = reads::oha(
                oha,
                &ours_url,
                &workload.chronicle_bodies,
                self.concurrency,
                duration,
                None,
            )
            .await?;
            let theirs = reads::oha(
                oha,
                &theirs_url,
                &workload.postgraphile_bodies,
                self.concurrency,
                duration,
                None,
            )
            .await?;
            eprintln!(
                "reads round {}: chronicle {:.0} req/s (p99 {:.1} ms), postgraphile {:.0} req/s (p99 {:.1} ms)",
                round + 1,
                ours.requests_per_second,
                ours.p99_ms,
                theirs.requests_per_second,
                theirs.p99_ms
            );
            if ours.non_200 > 0 || theirs.non_200 > 0 {
                bail!(
                    "non-200 answers under read load: chronicle {}, postgraphile {}",
                    ours.non_200,
                    theirs.non_200
                );
            }
            ratios.push(ours.requests_per_second / theirs.requests_per_second);
            results.details.reads.push(Comparison {
                chronicle: serde_json::to_value(&ours)?,
                baseline: serde_json::to_value(&theirs)?,
                extra: None,
            });
        }
        results.figure(
            "graphql_read_ratio_vs_postgraphile",
            Figure::at_least(2.0, Summary::of(&ratios), "×"),
        );

        let mut p99s = Vec::new();
        for _ in 0..self.scale.rounds {
            let steady = reads::oha(
                oha,
                &ours_url,
                &workload.chronicle_bodies,
                32,
                Duration::from_secs(self.scale.read_p99_seconds),
                Some(1000),
            )
            .await?;
            eprintln!(
                "reads at 1000 req/s: achieved {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                steady.requests_per_second, steady.p50_ms, steady.p99_ms
            );
            if steady.non_200 > 0 {
                bail!("{} non-200 answers at 1000 req/s", steady.non_200);
            }
            p99s.push(steady.p99_ms);
            results.details.reads_at_1000_rps.push(steady);
        }
        results.figure(
            "graphql_read_p99_ms_at_1000_rps",
            Figure::at_most(10.0, Summary::of(&p99s), "ms"),
        );
        results.peak_rss("reads", chronicle.peaks());
        Ok(())
    }

    async fn append(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        api: &CommandApi,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let work = &self.environment.work_dir;
        append::create_raw_table(pool).await?;
        let script = work.join("raw-insert.sql");
        std::fs::write(
            &script,
            append::raw_insert_script(&append::drafts(1, SEED)[0]),
        )?;

        let cqrs_url = database_url(&self.environment.database_url, CQRS_ES_DATABASE)?;
        recreate_database(&self.environment.database_url, CQRS_ES_DATABASE).await?;
        let port = free_port()?;
        let mut command = Command::new(&self.tools.cqrs_es_baseline);
        command
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &cqrs_url)
            .env("DATABASE_MAX_CONNECTIONS", "40");
        let baseline = Process::start(
            "cqrs-es-baseline",
            command,
            port,
            "/health/ready",
            &work.join("logs"),
        )
        .await?;
        let baseline_api = CommandApi::new(
            &baseline.url,
            "unused",
            &vec!["unused".to_owned(); self.concurrency],
            append::drafts(256, SEED),
        );

        let duration = Duration::from_secs(self.scale.append_seconds);
        let warmup = Duration::from_secs(2);
        let database = database_url(&self.environment.database_url, DATABASE)?;
        chronicle.reset_peaks();
        let write_only = chronicle.start_write_only_command_service().await?;
        let write_only_api = api.at(&write_only.url);
        let (mut raw_ratios, mut cqrs_ratios, mut only_ratios) =
            (Vec::new(), Vec::new(), Vec::new());
        for round in 0..self.scale.rounds {
            wait_until_caught_up(pool).await?;
            let ours = append::closed_loop(api, warmup, duration).await;
            wait_until_caught_up(pool).await?;
            let raw = append::pgbench(
                &self.tools.pgbench,
                &database,
                &script,
                self.concurrency,
                duration,
            )
            .await?;
            let theirs = append::closed_loop(&baseline_api, warmup, duration).await;
            // The write path alone: relay and projector paused, as cqrs-es
            // has neither.
            chronicle.command_service.pause()?;
            chronicle.projector.pause()?;
            let only = append::closed_loop(&write_only_api, warmup, duration).await;
            chronicle.command_service.resume()?;
            chronicle.projector.resume()?;
            eprintln!(
                "append round {}: chronicle {:.0} commands/s (p99 {:.1} ms, {} errors), write path alone {:.0} commands/s (p99 {:.1} ms), raw postgres {:.0} inserts/s, cqrs-es {:.0} commands/s ({} errors)",
                round + 1,
                ours.commands_per_second,
                ours.latency.p99_ms,
                ours.errors,
                only.commands_per_second,
                only.latency.p99_ms,
                raw,
                theirs.commands_per_second,
                theirs.errors
            );
            if ours.errors > 0 || theirs.errors > 0 || only.errors > 0 {
                bail!(
                    "commands failed under load: chronicle {:?}, write path alone {:?}, cqrs-es {:?}",
                    ours.first_error,
                    only.first_error,
                    theirs.first_error
                );
            }
            raw_ratios.push(ours.commands_per_second / raw);
            cqrs_ratios.push(ours.commands_per_second / theirs.commands_per_second);
            only_ratios.push(only.commands_per_second / theirs.commands_per_second);
            results.details.append.push(Comparison {
                chronicle: serde_json::to_value(&ours)?,
                baseline: serde_json::json!({"raw_postgres_inserts_per_second": raw}),
                extra: Some(serde_json::json!({
                    "cqrs_es": serde_json::to_value(&theirs)?,
                    "write_path_alone": serde_json::to_value(&only)?,
                })),
            });
        }
        write_only.stop().await;
        baseline.stop().await;
        results.peak_rss("append", chronicle.peaks());
        results.figure(
            "append_ratio_vs_raw_postgres",
            Figure::at_least(0.5, Summary::of(&raw_ratios), "×"),
        );
        results.figure(
            "append_ratio_vs_cqrs_es",
            Figure::at_least(1.5, Summary::of(&cqrs_ratios), "×"),
        );
        results.figure(
            "append_only_ratio_vs_cqrs_es",
            Figure::at_least(1.5, Summary::of(&only_ratios), "×"),
        );
        Ok(())
    }

    async fn lag(
        &self,
        chronicle: &Chronicle,
        pool: &PgPool,
        api: &CommandApi,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        chronicle.reset_peaks();
        let mut runs = Vec::new();
        for round in 1..=LAG_ROUNDS {
            wait_until_caught_up(pool).await?;
            let run = lag::measure(
                api,
                &chronicle.database_url,
                &chronicle.bus(),
                500.0,
                Duration::from_secs(self.scale.lag_seconds),
            )
            .await?;
            eprintln!(
                "lag {round}/{LAG_ROUNDS} at {:.0} commands/s for {:.0} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
                 (ack→bus p50 {:.1} p99 {:.1}; bus→visible p50 {:.1} p99 {:.1}); {} never visible, {} errors",
                run.achieved_commands_per_second,
                run.seconds,
                run.lag.p50_ms,
                run.lag.p99_ms,
                run.lag.max_ms,
                run.to_bus.p50_ms,
                run.to_bus.p99_ms,
                run.bus_to_visible.p50_ms,
                run.bus_to_visible.p99_ms,
                run.never_visible,
                run.errors
            );
            if run.never_visible > 0 || run.errors > 0 {
                bail!(
                    "{} acknowledged commands never became visible, {} failed",
                    run.never_visible,
                    run.errors
                );
            }
            runs.push(run);
        }
        let p99s: Vec<f64> = runs.iter().map(|run| run.lag.p99_ms).collect();
        results.figure(
            "e2e_lag_p99_ms_at_500_cps",
            Figure::at_most(50.0, Summary::of(&p99s), "ms"),
        );
        // The details show the median round.
        runs.sort_by(|a, b| a.lag.p99_ms.total_cmp(&b.lag.p99_ms));
        let run = runs.swap_remove(runs.len() / 2);
        results.details.lag = Some(run);
        results.peak_rss("lag", chronicle.peaks());
        Ok(())
    }
}

/// The seeded history predates the bus (as if Kafka's retention had long
/// dropped it): the relay starts after it, and replay builds the projections.
async fn mark_history_as_published(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO event_store.relay_cursor (relay, transaction_id, position, published_total)
         SELECT 'main', transaction_id, position, 0 FROM event_store.events
         ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Until the outbox, read models and search index have everything, so a
/// round does not pay for the previous one's backlog.
async fn wait_until_caught_up(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projector.status
             WHERE lag_events > 0 OR updated_at < now() - interval '3 seconds'",
        )
        .fetch_one(pool)
        .await?;
        if behind == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the projections did not catch up within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `url` with its database replaced by `database`.
pub fn database_url(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).context("DATABASE_URL is not a URL")?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

async fn recreate_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    // The name is the bench's own constant, never user input. An
    // autovacuum worker in it (a superuser's process) cannot be ended by
    // FORCE: it finishes soon, so try again.
    let mut attempts = 0;
    while let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#
    )))
    .execute(&admin)
    .await
    {
        attempts += 1;
        if attempts == 10 {
            return Err(error.into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{database}""#
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}

/// Peak RSS per service, per phase.
pub type Peaks = BTreeMap<String, BTreeMap<String, f64>>;
