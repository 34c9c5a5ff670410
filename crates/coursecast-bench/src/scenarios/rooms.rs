//! `rooms`: M courses of P members (created over HTTP as the seeded professor), S
//! senders per course, total rate R: latency as in `fanout`, and stored events per
//! second (a send is acked only after its batch commits).

use serde_json::json;

use crate::{
    Env,
    chat::{self, ChatPlan, MemberSpec, Traffic},
    procfs, report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 200)]
    pub courses: usize,
    /// Members per course (each a distinct seeded student).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Members of each course that send.
    #[arg(long, default_value_t = 1)]
    pub senders_per_course: usize,
    /// Messages per second over all courses.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Stored events per second to call the run a success.
    #[arg(long, default_value_t = 20_000.0)]
    pub target: f64,
}

pub async fn run(env: &Env, args: Args) -> anyhow::Result<()> {
    let load = procfs::loadavg();
    let users = env.users(args.courses * args.members)?;
    let groups: Vec<Vec<String>> =
        users.chunks(args.members).map(|c| c.iter().map(|u| u.id.clone()).collect()).collect();
    eprintln!("creating {} courses of {} members", args.courses, args.members);
    let courses = crate::http::create_courses(env, &groups).await?;
    let members = users
        .iter()
        .enumerate()
        .map(|(i, u)| MemberSpec {
            token: u.token.clone(),
            course: i / args.members,
            sender: i % args.members < args.senders_per_course,
            node: 0,
        })
        .collect();
    let plan = ChatPlan { courses, members, rate: args.rate, traffic: args.traffic.clone(), cluster_traffic: false };
    let outcome = chat::run(env, &format!("{} rooms", env.label), plan).await?;
    env.write_svg("rooms", &outcome.histogram);
    let met = outcome.stored_per_sec >= args.target && outcome.lost_after_repair == 0 && outcome.ack_errors.is_empty();
    let mut results = serde_json::to_value(&outcome)?;
    results["met"] = json!(met);
    report(
        env,
        "rooms",
        args.traffic.with_params(
            json!({"courses": args.courses, "members": args.members, "sendersPerCourse": args.senders_per_course,
                   "rate": args.rate}),
        ),
        results,
        load,
    );
    Ok(())
}
