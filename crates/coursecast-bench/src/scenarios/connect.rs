//! `connect`: N authenticated `/chat` connections, each joining a course, opened with
//! bounded concurrency and kept open: connections per second, connect+join time,
//! failures by kind; then held for a while to see that none drops.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    Env,
    conn::{Dialer, Joined},
    hold::Holders,
    procfs::{self, CpuMeter, CpuUse},
    progress::{Counter, Progress},
    report,
    stats::Latency,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub crowd: Crowd,
    /// Seconds to hold every connection open afterwards.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
}

/// Who connects and how fast; the flags `connect` and `idle` share.
#[derive(clap::Args, Debug, Clone)]
pub struct Crowd {
    /// Connections to open (each needs its own seeded student).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// 0: everyone joins the seeded course; P: courses of P members are created.
    #[arg(long, default_value_t = 0)]
    pub course_size: usize,
}

/// The courses and the course of each connection.
pub async fn layout(env: &Env, n: usize, course_size: usize) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let users = env.users(n)?;
    if course_size == 0 {
        return Ok((vec![env.seed.course_id.clone()], vec![0; n]));
    }
    let members: Vec<Vec<String>> =
        users.chunks(course_size).map(|c| c.iter().map(|u| u.id.clone()).collect()).collect();
    let courses = crate::http::create_courses(env, &members).await?;
    Ok((courses, (0..n).map(|i| i / course_size).collect()))
}

pub struct Opened {
    pub holders: Holders,
    pub latency: Latency,
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub cpu: CpuUse,
}

/// Opens `n` joined connections (student i joins `courses[course_of[i]]`).
pub async fn open_many(
    env: &Env,
    title: &str,
    courses: Vec<String>,
    course_of: Vec<usize>,
    concurrency: usize,
) -> anyhow::Result<Opened> {
    let n = course_of.len();
    let users = env.users(n)?.to_vec();
    let dialer = Arc::new(Dialer::new(env.url(), env.timeout, env.source_ips));
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel::<Result<Joined, String>>();
    let (ok, failed) = (Counter::default(), Counter::default());
    let progress =
        Progress::start(title.to_owned(), vec![("joined", ok.clone()), ("failed", failed.clone())], env.server_pids());
    let cpu = CpuMeter::start(&env.server_pids());
    let started = Instant::now();
    // Two tasks share the handshakes, so both generator threads work on them.
    let tasks = 2usize;
    let courses = Arc::new(courses);
    let course_of = Arc::new(course_of);
    let users = Arc::new(users);
    for t in 0..tasks {
        let (dialer, courses, course_of, users, tx) =
            (dialer.clone(), courses.clone(), course_of.clone(), users.clone(), joined_tx.clone());
        tokio::spawn(async move {
            futures_util::stream::iter((t..n).step_by(tasks))
                .map(|i| {
                    let dialer = dialer.clone();
                    let (token, course) = (users[i].token.clone(), courses[course_of[i]].clone());
                    async move { dialer.connect_join(&token, &course).await }
                })
                .buffer_unordered((concurrency / tasks).max(1))
                .for_each(|r| {
                    let _ = tx.send(r);
                    std::future::ready(())
                })
                .await;
        });
    }
    drop(joined_tx);
    let mut holders = Holders::new(256);
    let mut latency = Latency::new();
    let mut failures = BTreeMap::new();
    while let Some(result) = joined_rx.recv().await {
        match result {
            Ok(joined) => {
                ok.inc();
                latency.record(joined.elapsed);
                holders.add(joined.socket);
            }
            Err(kind) => {
                failed.inc();
                *failures.entry(kind).or_insert(0) += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu.read();
    drop(progress);
    Ok(Opened { holders, latency, failures, elapsed, cpu })
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let load = procfs::loadavg();
    let rss_before = env.server_pid().and_then(|p| procfs::rss_kib(Some(p)));
    let (courses, course_of) = layout(env, args.crowd.connections, args.crowd.course_size).await?;
    let course_count = courses.len();
    let opened = open_many(env, &format!("{} connect", env.label), courses, course_of, args.crowd.concurrency).await?;
    let succeeded = opened.latency.count();
    let rate = succeeded as f64 / opened.elapsed.as_secs_f64();
    let rss_connected = env.server_pid().and_then(|p| procfs::rss_kib(Some(p)));
    eprintln!("holding {} connections for {} s", opened.holders.held, args.hold_secs);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let dropped = opened.holders.counters.disconnects.get();
    let frames = opened.holders.counters.frames.get();
    opened.holders.close().await;
    let failed: u64 = opened.failures.values().sum();
    let hung: u64 = opened.failures.iter().filter(|(k, _)| k.starts_with("timeout")).map(|(_, v)| v).sum();
    report(
        env,
        "connect",
        json!({"connections": args.crowd.connections, "concurrency": args.crowd.concurrency, "holdSecs": args.hold_secs,
               "courses": course_count, "courseSize": args.crowd.course_size}),
        json!({
            "succeeded": succeeded,
            "failed": failed,
            "hung": hung,
            "failures": opened.failures,
            "elapsedSecs": (opened.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "connectsPerSec": rate.round(),
            "connectJoin": opened.latency.summary(),
            "droppedWhileHeld": dropped,
            "framesReceived": frames,
            "serverRssMiB": rss_connected.map(|k| k / 1024),
            "serverRssBeforeKiB": rss_before,
            "serverRssAfterKiB": rss_connected,
            // What each joined connection costs the server (KiB), all joined at once.
            "serverKiBPerConnection": rss_before.zip(rss_connected).filter(|_| succeeded > 0)
                .map(|(before, after)| ((after as f64 - before as f64) / succeeded as f64 * 100.0).round() / 100.0),
            "cpu": opened.cpu,
            "met": failed == 0 && dropped == 0 && rate >= 5000.0,
        }),
        load,
    );
    Ok(())
}
