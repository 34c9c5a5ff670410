// The namespace APIs of the client: thin wrappers that turn calls into outbox writes,
// subscriptions and ephemeral events of the facade, and re-emit its events.
import type { CoursecastClient, CourseNs } from "./client.js";
import { Emitter, type EventMap } from "./emitter.js";
import type {
  AnnotationEvent,
  CursorEvent,
  EventAck,
  JoinResult,
  MessageEvent,
  NotificationEvent,
  OnlinePage,
  PresenceEvent,
  ProgressEvent,
  RosterEvent,
  TypingEvent,
} from "./types.js";

/** A fresh `clientMsgId` (1-64 of `A-Z a-z 0-9 _ -`). */
export function newClientMsgId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

const enc = encodeURIComponent;

/** What every namespace API holds: the client whose transports carry its calls. */
class NamespaceApi<E extends EventMap> extends Emitter<E> {
  protected readonly client: CoursecastClient;
  constructor(client: CoursecastClient) {
    super();
    this.client = client;
  }
}

/** `/chat` and `/collaboration`: course rooms, joined and left the same way. */
class CourseRoomApi<E extends EventMap> extends NamespaceApi<E> {
  readonly #ns: CourseNs;
  constructor(client: CoursecastClient, ns: CourseNs) {
    super(client);
    this.#ns = ns;
  }

  /** Joins the course room; replays from `since`, from the stream's cursor, or (first time) from now. */
  join(courseId: string, options: { since?: number } = {}): Promise<JoinResult> {
    return this.client._join(this.#ns, courseId, options.since);
  }

  leave(courseId: string): Promise<{ ok: true }> {
    return this.client._leave(this.#ns, courseId);
  }

  /** A page of the room's online users after user id `after`, over sockets or HTTP. */
  presence(courseId: string, options: { after?: string; limit?: number } = {}): Promise<OnlinePage> {
    return this.client._presence(this.#ns, courseId, options);
  }
}

export class ChatApi extends CourseRoomApi<{
  message: [MessageEvent];
  presence: [PresenceEvent];
  typing: [TypingEvent];
  roster: [RosterEvent];
}> {
  constructor(client: CoursecastClient) {
    super(client, "chat");
  }

  /** Queued until a transport carries it; retried with the same `clientMsgId` until answered. */
  send(
    courseId: string,
    content: string,
    options: { channelId?: string; clientMsgId?: string } = {},
  ): Promise<EventAck<MessageEvent>> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    const body: Record<string, unknown> = { content, clientMsgId };
    if (options.channelId !== undefined) body.channelId = options.channelId;
    return this.client._write({
      namespace: "chat",
      event: "send",
      payload: { courseId, ...body },
      http: { method: "POST", path: `/api/realtime/messages/${enc(courseId)}`, body },
    });
  }

  edit(courseId: string, messageId: string, content: string): Promise<EventAck<MessageEvent>> {
    return this.client._write({
      namespace: "chat",
      event: "edit",
      payload: { courseId, messageId, content },
      http: { method: "PATCH", path: `/api/realtime/messages/${enc(courseId)}/${enc(messageId)}`, body: { content } },
    });
  }

  delete(courseId: string, messageId: string): Promise<EventAck<MessageEvent>> {
    return this.client._write({
      namespace: "chat",
      event: "delete",
      payload: { courseId, messageId },
      http: { method: "DELETE", path: `/api/realtime/messages/${enc(courseId)}/${enc(messageId)}` },
    });
  }

  /**
   * Tells the room you are typing. Resolves false when it was not relayed: not on
   * sockets, or throttled by the server (one per user per course every few seconds).
   */
  typing(courseId: string): Promise<boolean> {
    return this.client._ephemeral("chat", "typing", { courseId });
  }
}

export class NotificationsApi extends NamespaceApi<{ notification: [NotificationEvent] }> {
  read(notificationId: string): Promise<EventAck<NotificationEvent>> {
    return this.client._write({
      namespace: "notifications",
      event: "read",
      payload: { notificationId },
      http: { method: "POST", path: `/api/realtime/notifications/${enc(notificationId)}/read` },
    });
  }
}

export class AnalyticsApi extends NamespaceApi<{ progress: [ProgressEvent] }> {
  /**
   * Receive the progress of a course's analyses (its professor, ADMIN). Renewed on every
   * reconnect; sockets only (the contract has no polling endpoint for a course's progress).
   */
  watch(courseId: string): Promise<{ ok: true }> {
    return this.client._watch(courseId);
  }
}

export class CollaborationApi extends CourseRoomApi<{
  annotation: [AnnotationEvent];
  cursor: [CursorEvent];
  presence: [PresenceEvent];
  roster: [RosterEvent];
}> {
  constructor(client: CoursecastClient) {
    super(client, "collaboration");
  }

  annotate(
    courseId: string,
    documentId: string,
    annotation: Record<string, unknown>,
    options: { clientMsgId?: string } = {},
  ): Promise<EventAck<AnnotationEvent>> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    return this.client._write({
      namespace: "collaboration",
      event: "annotate",
      payload: { courseId, documentId, annotation, clientMsgId },
      http: { method: "POST", path: `/api/realtime/annotations/${enc(courseId)}`, body: { documentId, annotation, clientMsgId } },
    });
  }

  /** Shares a cursor position (sockets only: resolves false when not sent). */
  cursor(courseId: string, documentId: string, position: unknown): Promise<boolean> {
    return this.client._ephemeral("collaboration", "cursor", { courseId, documentId, position });
  }
}
