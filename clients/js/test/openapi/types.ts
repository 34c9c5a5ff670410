// The client's public types against the types generated from the server's OpenAPI
// document (openapi/generated/schema.d.ts, made by openapi-types.test.mjs): what the
// server answers fits what the client declares it receives, and what the client sends
// (src/api.ts) fits the server's request bodies. Type-checked only; a mismatch is a
// compile error naming the check.

import type { components, paths } from "../../openapi/generated/schema";
import type { ChatApi, CollaborationApi } from "../../src/api";
import type {
  AnnotationEvent,
  EventAck,
  MessageEvent,
  NotificationEvent,
  OnlinePage,
  Page,
  ProgressEvent,
} from "../../src/types";

type Schemas = components["schemas"];

/** `true` when every `From` is a `To`; `never` (a lookup that found nothing) fits nothing. */
type Fits<From, To> = [From] extends [never] ? false : [From] extends [To] ? true : false;
type Check<T extends true> = T;

type Json<C> = C extends { content: { "application/json": infer B } } ? B : never;
/** The JSON body of `status` from `method path`. */
type Answer<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: infer R;
}
  ? S extends keyof R
    ? Json<R[S]>
    : never
  : never;
/** The JSON request body of `method path`. */
type Body<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends { requestBody: infer B } ? Json<B> : never;

const messages = "/api/realtime/messages/{course_id}";
const message = "/api/realtime/messages/{course_id}/{message_id}";
const annotations = "/api/realtime/annotations/{course_id}";
type Messages = typeof messages;
type Message = typeof message;
type Annotations = typeof annotations;

// What the server answers fits the client's types.
export type ServerToClient = [
  Check<Fits<Schemas["MessageEvent"], MessageEvent>>,
  Check<Fits<Schemas["NotificationEvent"], NotificationEvent>>,
  Check<Fits<Schemas["ProgressEvent"], ProgressEvent>>,
  Check<Fits<Schemas["AnnotationEvent"], AnnotationEvent>>,
  Check<Fits<Answer<Messages, "get", 200>, Page<MessageEvent>>>,
  Check<Fits<Answer<Annotations, "get", 200>, Page<AnnotationEvent>>>,
  Check<Fits<Answer<"/api/realtime/notifications/{user_id}", "get", 200>, Page<NotificationEvent>>>,
  Check<Fits<Answer<"/api/realtime/progress/{user_id}", "get", 200>, Page<ProgressEvent>>>,
  Check<Fits<Answer<"/api/realtime/presence/{course_id}", "get", 200>, OnlinePage>>,
  Check<Fits<Answer<Messages, "post", 201>, EventAck<MessageEvent>>>,
  Check<Fits<Answer<Message, "patch", 200>, EventAck<MessageEvent>>>,
  Check<Fits<Answer<Message, "delete", 200>, EventAck<MessageEvent>>>,
  Check<Fits<Answer<Annotations, "post", 201>, EventAck<AnnotationEvent>>>,
  Check<Fits<Answer<"/api/realtime/notifications/{notification_id}/read", "post", 200>, EventAck<NotificationEvent>>>,
];

// The payloads the client declares are no wider than the server's, except where the
// contract (PROTOCOL.md section 3) names more than this server sends: ProgressEvent's
// `session_update`, and `analysisId`/`progress` as optional.
export type ClientToServerPayloads = [
  Check<Fits<MessageEvent, Schemas["MessageEvent"]>>,
  Check<Fits<NotificationEvent, Schemas["NotificationEvent"]>>,
  Check<Fits<AnnotationEvent, Schemas["AnnotationEvent"]>>,
];

// What the client sends over HTTP (src/api.ts builds these bodies from its
// parameters) fits the server's request bodies.
type Send = Parameters<ChatApi["send"]>;
type Annotate = Parameters<CollaborationApi["annotate"]>;
export type ClientToServer = [
  Check<Fits<{ content: Send[1]; clientMsgId: string; channelId?: NonNullable<Send[2]>["channelId"] }, Body<Messages, "post">>>,
  Check<Fits<{ content: Parameters<ChatApi["edit"]>[2] }, Body<Message, "patch">>>,
  Check<Fits<{ documentId: Annotate[1]; annotation: Annotate[2]; clientMsgId: string }, Body<Annotations, "post">>>,
];
