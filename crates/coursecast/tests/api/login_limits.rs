//! Login limits that stop guessing, not classrooms: only failed logins are charged,
//! per address and per account; `/me` and logout are not charged at all.

use std::net::{IpAddr, Ipv4Addr};

use coursecast::{
    domain::{DisplayName, Email, Role},
    store::NewUser,
};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, password_hash};

/// A server with the login limits a deployment gets by default (tests raise them).
async fn with_default_login_limits() -> TestApp {
    let defaults = coursecast::Settings::defaults();
    TestApp::spawn_with(|s| {
        s.login_failures_per_ip_per_minute = defaults.login_failures_per_ip_per_minute;
        s.login_failures_per_account_per_minute = defaults.login_failures_per_account_per_minute;
    })
    .await
}

/// `n` students created straight in storage; their emails.
async fn students(app: &TestApp, n: usize) -> Vec<String> {
    let batch = Uuid::new_v4().simple().to_string();
    let users: Vec<NewUser> = (0..n)
        .map(|i| NewUser {
            email: Email::parse(&format!("s{i}-{batch}@example.org")).unwrap(),
            password_hash: password_hash().to_owned(),
            display_name: DisplayName::parse(&format!("Student {i}")).unwrap(),
            role: Role::Student,
        })
        .collect();
    app.state.store.ensure_users(&users).await.unwrap().into_iter().map(|u| u.email).collect()
}

/// A client whose connections come from `ip` (another loopback address).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::from(ip))).build().unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, email: &str, password: &str) -> (u16, Value) {
    let res = client
        .post(format!("{}/api/auth/login", app.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_classroom_behind_one_address_signs_in_at_once() {
    let app = with_default_login_limits().await;
    let emails = students(&app, 300).await;
    // A page that asks `/me` on every load costs nothing against logins.
    let (status, body) = login(&app, &app.client, &emails[0], PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    for _ in 0..60 {
        assert_eq!(app.get("/api/auth/me", Some(&token)).await.status, 200);
    }

    // The limits refuse, never delay: "at once" means none of them is refused (how
    // long 300 Argon2 verifications take is the machine's business, not a limit's).
    let statuses: Vec<u16> = stream::iter(&emails)
        .map(|email| async { login(&app, &app.client, email, PASSWORD).await.0 })
        .buffer_unordered(32)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(refused, 0, "{refused} of 300 correct logins refused: {statuses:?}");
}

#[tokio::test]
async fn credential_stuffing_from_one_address_is_stopped() {
    let app = with_default_login_limits().await;
    let real = students(&app, 1).await.remove(0);
    let failures = app.state.settings.login_failures_per_ip_per_minute as usize;
    // The budget refills while the guesses run (each costs an Argon2 verification):
    // a few more than the burst may pass on a slow machine, never many more.
    let mut guesses = 0;
    let refused = loop {
        let guess = json!({"email": format!("victim{guesses}@example.org"), "password": "guess-guess-guess"});
        let res = app.post("/api/auth/login", None, guess).await;
        if res.status == 429 {
            break res;
        }
        assert_eq!(res.status, 401, "guess {guesses}: {}", res.body);
        guesses += 1;
        assert!(guesses <= failures + 10, "{guesses} failed guesses and no refusal");
    };
    assert!(guesses >= failures, "refused after {guesses} guesses, below the budget of {failures}");
    refused.assert_error(429, "RATE_LIMITED");
    assert!(refused.headers.contains_key("retry-after"));
    // The address is stopped, even with the right password; other addresses are not.
    assert_eq!(login(&app, &app.client, &real, PASSWORD).await.0, 429);
    assert_eq!(login(&app, &client_from([127, 0, 0, 2]), &real, PASSWORD).await.0, 200);
}

#[tokio::test]
async fn guessing_one_account_is_stopped_from_every_address() {
    let app = with_default_login_limits().await;
    let mut emails = students(&app, 2).await;
    let (target, other) = (emails.remove(0), emails.remove(0));
    let guesser = client_from([127, 0, 0, 3]);
    let failures = app.state.settings.login_failures_per_account_per_minute as usize;
    for i in 0..failures {
        assert_eq!(login(&app, &guesser, &target, &format!("wrong-password-{i}")).await.0, 401);
    }
    // One failure a minute refills per account: the next guess comes well before that.
    assert_eq!(login(&app, &guesser, &target, "wrong-password-x").await.0, 429);
    assert_eq!(login(&app, &app.client, &target, PASSWORD).await.0, 429, "the account waits, wherever from");
    assert_eq!(login(&app, &app.client, &other, PASSWORD).await.0, 200, "other accounts are untouched");
}
