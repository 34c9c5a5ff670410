//! `idle`: N joined connections held open; the server's resident memory per
//! connection (VmRSS after, minus VmRSS before connecting, over N).

use std::time::Duration;

use serde_json::json;

use crate::{Env, procfs, report, scenarios::connect};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub crowd: connect::Crowd,
    /// Seconds to wait after the last connection before reading memory.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let load = procfs::loadavg();
    let pid = env.server_pid().ok_or_else(|| anyhow::anyhow!("idle needs --server-pid to read the server's memory"))?;
    let (courses, course_of) = connect::layout(env, args.crowd.connections, args.crowd.course_size).await?;
    let course_count = courses.len();
    let own_before = procfs::rss_kib(None);
    let before = procfs::rss_kib(Some(pid)).ok_or_else(|| anyhow::anyhow!("no process {pid}"))?;
    let opened =
        connect::open_many(env, &format!("{} idle", env.label), courses, course_of, args.crowd.concurrency).await?;
    let held = opened.latency.count();
    eprintln!("{held} connections open; settling {} s", args.settle_secs);
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after = procfs::rss_kib(Some(pid)).ok_or_else(|| anyhow::anyhow!("the server ({pid}) is gone"))?;
    let own_after = procfs::rss_kib(None);
    let dropped = opened.holders.counters.disconnects.get();
    let live = held.saturating_sub(dropped);
    opened.holders.close().await;
    let per_conn = |a: u64, b: u64| {
        if live > 0 { ((a.saturating_sub(b)) as f64 / live as f64 * 100.0).round() / 100.0 } else { 0.0 }
    };
    let kib = per_conn(after, before);
    report(
        env,
        "idle",
        json!({"connections": args.crowd.connections, "settleSecs": args.settle_secs, "courses": course_count, "courseSize": args.crowd.course_size}),
        json!({
            "held": live,
            "failed": opened.failures.values().sum::<u64>(),
            "failures": opened.failures,
            "droppedWhileHeld": dropped,
            "serverRssBeforeKiB": before,
            "serverRssAfterKiB": after,
            "serverKiBPerConnection": kib,
            "generatorKiBPerConnection": match (own_after, own_before) { (Some(a), Some(b)) => Some(per_conn(a, b)), _ => None },
            "met": kib <= 10.0 && live as usize == args.crowd.connections,
        }),
        load,
    );
    Ok(())
}
