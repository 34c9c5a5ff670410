//! `fanout`: N subscribers of one course, K of them also sending at a total rate R
//! (a comma list of rates is a sweep: fresh connections per step). Reports latency
//! send->receive, deliveries, missed live copies, losses after gap repair.
//!
//! Against several nodes of one cluster (several `--url`s) the subscribers are
//! placed on the nodes round-robin, and so are the senders (the first K subscribers:
//! sender k on node k mod n) unless `--senders-on-first-node`, so most copies cross
//! from one node to another; each node's CPU, memory and Redis traffic are reported
//! per delivery.

use std::time::Duration;

use serde_json::json;

use crate::{
    Env,
    chat::{self, ChatOutcome, ChatPlan, MemberSpec, Traffic},
    churn::Churn,
    http, procfs, report,
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
    /// Courses the subscribers are spread over, subscriber i in course i mod N (so the
    /// senders are in distinct courses); 1: the seeded course; more: courses the
    /// seeded professor creates for the run.
    #[arg(long, default_value_t = 1)]
    pub courses: usize,
    /// Which node each subscriber connects to, with several URLs: `spread` puts every
    /// course's members on the nodes round-robin, `by-course` all of course c's on
    /// node c mod n (as a proxy routing by course would).
    #[arg(long, value_enum, default_value_t = Placement::Spread)]
    pub placement: Placement,
    /// Every sender on the first node, whatever the placement: the other nodes then
    /// only relay, and get one node's commits in the order they were made.
    #[arg(long)]
    pub senders_on_first_node: bool,
    /// Also report each node's Redis traffic over the sending, from the cluster
    /// counters of its /metrics (coursecast nodes with REDIS_URL).
    #[arg(long)]
    pub cluster_traffic: bool,
    /// Further members (the students after the subscribers) that keep leaving and
    /// joining the course while the chat runs (presence churn, on the first node and
    /// in the seeded course); 0: none.
    #[arg(long, default_value_t = 0)]
    pub churn: usize,
    /// Each churning socket leaves and joins again once per this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub churn_period_ms: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    Spread,
    ByCourse,
}

impl Placement {
    /// The node of subscriber `i`, the `i / courses`-th member of course `i % courses`.
    fn node_of(self, i: usize, courses: usize, nodes: usize) -> usize {
        let (course, nth) = (i % courses, i / courses);
        match self {
            // Shifted by the course, so each course's first member (its sender) is on
            // a different node too.
            Placement::Spread => (course + nth) % nodes,
            Placement::ByCourse => course % nodes,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::ByCourse => "by-course",
        }
    }
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
    anyhow::ensure!(args.courses >= 1, "--courses must be at least 1");
    anyhow::ensure!(args.churn == 0 || args.courses == 1, "--churn churns the seeded course: use it with --courses 1");
    let courses = match args.courses {
        1 => vec![env.seed.course_id.clone()],
        n => {
            let mut members = vec![Vec::new(); n];
            for (i, user) in users.iter().enumerate() {
                members[i % n].push(user.id.clone());
            }
            eprintln!("creating {n} courses of about {} members", users.len() / n);
            http::create_courses(env, &members).await?
        }
    };
    for (step, &rate) in args.rate.iter().enumerate() {
        if step > 0 {
            tokio::time::sleep(Duration::from_secs(args.pause)).await;
        }
        let load = procfs::loadavg();
        let members = users
            .iter()
            .enumerate()
            .map(|(i, u)| MemberSpec {
                token: u.token.clone(),
                course: i % args.courses,
                sender: i < args.senders,
                node: if i < args.senders && args.senders_on_first_node {
                    0
                } else {
                    args.placement.node_of(i, args.courses, env.nodes.len())
                },
            })
            .collect();
        let plan = ChatPlan {
            courses: courses.clone(),
            members,
            rate,
            traffic: args.traffic.clone(),
            cluster_traffic: args.cluster_traffic,
        };
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
                       "churn": args.churn, "churnPeriodMs": args.churn_period_ms, "courses": args.courses,
                       "nodes": env.nodes.len(), "placement": args.placement.name(),
                       "sendersOnFirstNode": args.senders_on_first_node}),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_course_is_spread_round_robin_and_so_are_its_senders() {
        let nodes: Vec<usize> = (0..6).map(|i| Placement::Spread.node_of(i, 1, 3)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2]);
        assert!((0..7).all(|i| Placement::Spread.node_of(i, 1, 1) == 0), "one node takes everyone");
    }

    #[test]
    fn spread_courses_cover_every_node_and_by_course_keeps_a_course_on_one() {
        let (courses, nodes) = (4, 2);
        for course in 0..courses {
            let members = (0..40).filter(|i| i % courses == course);
            let spread: std::collections::BTreeSet<usize> =
                members.clone().map(|i| Placement::Spread.node_of(i, courses, nodes)).collect();
            assert_eq!(spread.len(), nodes, "course {course} is on every node");
            assert!(members.clone().all(|i| Placement::ByCourse.node_of(i, courses, nodes) == course % nodes));
        }
        let senders: Vec<usize> = (0..4).map(|i| Placement::Spread.node_of(i, courses, nodes)).collect();
        assert_eq!(senders, [0, 1, 0, 1], "each course's sender on its own node in turn");
    }
}
