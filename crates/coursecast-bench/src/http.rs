//! HTTP set-up for scenarios that need more than the seeded course: courses created
//! by the seeded professor, students enrolled.

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Env;

/// Creates one course per entry of `members` and enrols those user ids; returns the
/// course ids in the same order.
pub async fn create_courses(env: &Env, members: &[Vec<String>]) -> anyhow::Result<Vec<String>> {
    let professor = &env.seed.professor.token;
    let mut ids = Vec::with_capacity(members.len());
    for (i, _) in members.iter().enumerate() {
        let response = env
            .http
            .post(format!("{}/api/courses", env.url()))
            .bearer_auth(professor)
            .json(&json!({"title": format!("bench course {i}")}))
            .send()
            .await
            .context("POST /api/courses")?;
        anyhow::ensure!(response.status().as_u16() == 201, "POST /api/courses answered {}", response.status());
        let body: Value = response.json().await?;
        ids.push(body["course"]["id"].as_str().context("no course id")?.to_owned());
    }
    let enrolments: Vec<(String, String)> = ids
        .iter()
        .zip(members)
        .flat_map(|(course, users)| users.iter().map(move |u| (course.clone(), u.clone())))
        .collect();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(enrolments)
        .map(|(course, user)| async move {
            let response = env
                .http
                .post(format!("{}/api/courses/{course}/members", env.url()))
                .bearer_auth(professor)
                .json(&json!({"userId": user}))
                .send()
                .await?;
            let status = response.status().as_u16();
            anyhow::ensure!(status == 201 || status == 409, "enrolment answered {status}");
            Ok(())
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(ids)
}
