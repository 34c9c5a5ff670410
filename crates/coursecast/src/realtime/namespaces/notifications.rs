//! `/notifications`: each socket is in its user's room from connect on; `sync`
//! replays the user's stream, `read` marks one read (every socket of the user sees it).

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::extract::SocketRef;

use super::sync_reply;
use crate::{
    error::AppError,
    events::commands::{EventAnswer, event_reply},
    realtime::{
        Session,
        catalog::client,
        dispatch::{Ctx, Reply},
    },
    state::AppState,
    streams::StreamKey,
};

pub fn register(socket: &SocketRef, session: &Arc<Session>, state: &AppState) {
    route!(socket, session, state, client::SYNC => sync);
    route!(socket, session, state, client::READ => read);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPayload {
    pub since: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReadPayload {
    notification_id: String,
}

async fn sync(state: &AppState, ctx: Ctx, payload: SyncPayload) -> Result<Reply, AppError> {
    sync_reply(state, StreamKey::notifications(ctx.session.user.id), payload).await
}

async fn read(state: &AppState, ctx: Ctx, payload: ReadPayload) -> Result<EventAnswer, AppError> {
    event_reply(&state.commands.read_notification(&ctx.session.user, &payload.notification_id).await?)
}
