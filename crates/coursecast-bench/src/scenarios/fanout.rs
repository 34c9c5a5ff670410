//! `fanout`: N subscribers of one course, K of them also sending at a total rate R
//! (a comma list of rates is a sweep: fresh connections per step). Reports latency
//! send->receive, deliveries, missed live copies, losses after gap repair.

use std::time::Duration;

use serde_json::json;

use crate::{
    Env,
    chat::{self, ChatOutcome, ChatPlan, MemberSpec, Traffic},
    churn::Churn,
    procfs, report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscribers that also send (the first K).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Messages per second, all senders together; `100,200,500` runs a sweep.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rate: Vec<f64>,
    /// A step "holds" when p99 is under this (ms), nothing is lost and every send is acked.
    #[arg(long, default_value_t = 200.0)]
    pub p99_limit_ms: f64,
    /// Stop the sweep after the first step that does not hold.
    #[arg(long)]
    pub stop_after_miss: bool,
    /// Seconds between steps (the server closes the previous step's sockets).
    #[arg(long, default_value_t = 3)]
    pub pause: u64,
    /// Further members (the students after the subscribers) that keep leaving and
    /// joining the course while the chat runs (presence churn); 0: none.
    #[arg(long, default_value_t = 0)]
    pub churn: usize,
    /// Each churning socket leaves and joins again once per this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub churn_period_ms: u64,
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
    let churners = &env.users(args.subscribers + args.churn)?[args.subscribers..];
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
        let plan = ChatPlan { courses: vec![env.seed.course_id.clone()], members, rate, traffic: args.traffic.clone() };
        let churn = match args.churn {
            0 => None,
            _ => {
                let period = Duration::from_millis(args.churn_period_ms);
                Some(Churn::start(env, churners, &env.seed.course_id, period).await?)
            }
        };
        let outcome = chat::run(env, &format!("{} fanout {rate}/s", env.label), plan).await?;
        let churned = match churn {
            Some(churn) => Some(churn.stop().await),
            None => None,
        };
        let ok = held(&outcome, args.p99_limit_ms) && churned.as_ref().is_none_or(|c| c.dropped == 0 && c.refused == 0);
        // A churn run's plot must not overwrite the plain run's of the same rate.
        let plot = if args.churn > 0 { format!("fanout-{rate}-churn") } else { format!("fanout-{rate}") };
        env.write_svg(&plot, &outcome.histogram);
        let mut results = serde_json::to_value(&outcome)?;
        results["held"] = json!(ok);
        if let Some(churned) = churned {
            results["churn"] = serde_json::to_value(&churned)?;
        }
        report(
            env,
            "fanout",
            args.traffic.with_params(
                json!({"subscribers": args.subscribers, "senders": args.senders, "rate": rate, "p99LimitMs": args.p99_limit_ms,
                       "churn": args.churn, "churnPeriodMs": args.churn_period_ms}),
            ),
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
