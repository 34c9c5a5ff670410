//! `fanout`: N subscribers of one course, K of them also sending at a total rate R
//! (a comma list of rates is a sweep: fresh connections per step). Reports latency
//! send->receive, deliveries, missed live copies, losses after gap repair.

use std::time::Duration;

use serde_json::json;

use crate::{
    Env,
    chat::{self, ChatOutcome, ChatPlan, MemberSpec},
    procfs, report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscribers that also send (the first K).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second, all senders together; `100,200,500` runs a sweep.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rate: Vec<f64>,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 15)]
    pub duration: u64,
    /// Seconds at the start of each step whose messages are not timed.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Characters of message content.
    #[arg(long, default_value_t = 100)]
    pub content_len: usize,
    /// Sockets per generator task.
    #[arg(long, default_value_t = 50)]
    pub group_size: usize,
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to wait for the last acks, and again for repairs, after a step.
    #[arg(long, default_value_t = 15)]
    pub drain: u64,
    /// A step "holds" when p99 is under this (ms), nothing is lost and every send is acked.
    #[arg(long, default_value_t = 200.0)]
    pub p99_limit_ms: f64,
    /// Stop the sweep after the first step that does not hold.
    #[arg(long)]
    pub stop_after_miss: bool,
    /// Seconds between steps (the server closes the previous step's sockets).
    #[arg(long, default_value_t = 3)]
    pub pause: u64,
}

/// Whether a step held its rate: p99 under the limit, no loss, every send acked, rate reached.
pub fn held(outcome: &ChatOutcome, p99_limit_ms: f64) -> bool {
    outcome.latency.p99_ms < p99_limit_ms
        && outcome.lost_after_repair == 0
        && outcome.duplicates == 0
        && outcome.ack_errors.is_empty()
        && outcome.unanswered == 0
        && outcome.connect_failures.is_empty()
        && outcome.disconnects == 0
        && outcome.settled
        && outcome.send_rate >= outcome.target_rate * 0.95
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let users = env.users(args.subscribers)?;
    for (step, &rate) in args.rate.iter().enumerate() {
        if step > 0 {
            tokio::time::sleep(Duration::from_secs(args.pause)).await;
        }
        let load = procfs::loadavg();
        let members = users
            .iter()
            .enumerate()
            .map(|(i, u)| MemberSpec { token: u.token.clone(), course: 0, sender: i < args.senders })
            .collect();
        let plan = ChatPlan {
            courses: vec![env.seed.course_id.clone()],
            members,
            rate,
            duration: Duration::from_secs(args.duration),
            warmup: Duration::from_secs(args.warmup),
            content_len: args.content_len,
            group_size: args.group_size,
            connect_concurrency: args.concurrency,
            drain: Duration::from_secs(args.drain),
        };
        let outcome = chat::run(env, &format!("{} fanout {rate}/s", env.label), plan).await?;
        let ok = held(&outcome, args.p99_limit_ms);
        env.write_svg(&format!("fanout-{rate}"), &outcome.histogram);
        let mut results = serde_json::to_value(&outcome)?;
        results["held"] = json!(ok);
        report(
            env,
            "fanout",
            json!({"subscribers": args.subscribers, "senders": args.senders, "rate": rate, "durationSecs": args.duration,
                   "warmupSecs": args.warmup, "contentLen": args.content_len, "p99LimitMs": args.p99_limit_ms}),
            results,
            load,
        );
        if !ok && args.stop_after_miss {
            eprintln!("{rate}/s did not hold: stopping the sweep");
            break;
        }
    }
    Ok(())
}
