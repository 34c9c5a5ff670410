/** Payloads of PROTOCOL.md section 3 ("Event payloads") and the acks the client returns. */

export interface MessageEvent {
  type: "message_sent" | "message_edited" | "message_deleted";
  seq: number;
  messageId: string;
  courseId: string;
  channelId?: string;
  senderId: string;
  content?: string;
  timestamp: string;
}

export interface NotificationEvent {
  type: "notification_new" | "notification_read";
  seq: number;
  notificationId: string;
  userId: string;
  notificationType: "CNN_ANALYSIS_COMPLETE" | "PEER_CONNECTION" | "ASSIGNMENT_DUE" | "NEW_MESSAGE" | "SYSTEM_UPDATE";
  title: string;
  message: string;
  priority: "LOW" | "NORMAL" | "HIGH" | "URGENT";
  timestamp: string;
}

export interface ProgressEvent {
  type: "analysis_progress" | "analysis_complete" | "session_update";
  seq: number;
  userId: string;
  analysisId?: string;
  progress?: number;
  data: unknown;
  timestamp: string;
}

export interface AnnotationEvent {
  seq: number;
  annotationId: string;
  courseId: string;
  documentId: string;
  userId: string;
  annotation: Record<string, unknown>;
  timestamp: string;
}

/**
 * The net change of a room's online users over one window. `online` and `offline`
 * are absent in rooms too big to list (then only `count` changed): page the names
 * with `presence()` if needed.
 */
export interface PresenceEvent {
  courseId: string;
  online?: string[];
  offline?: string[];
  count: number;
}

/** A page of a room's online users, ordered by id (`presence()`). */
export interface OnlinePage {
  courseId: string;
  count: number;
  online: string[];
  hasMore: boolean;
}

export interface TypingEvent {
  courseId: string;
  userId: string;
}

export interface CursorEvent {
  courseId: string;
  documentId: string;
  userId: string;
  position: unknown;
}

/**
 * Who is in a course room, from a `join` ack: the first page of online users (at most
 * 100; none in a room of more than the server's `PRESENCE_LIST_MAX`, 200, whose
 * names `presence()` pages) and how many there are (sockets only; empty while polling).
 */
export interface RosterEvent {
  courseId: string;
  online: string[];
  count: number;
}

export interface EventAck<E> {
  ok: true;
  event: E;
}

export interface JoinResult {
  ok: true;
  courseId: string;
  /** The stream's cursor after the replay. */
  cursor: number;
  /** The first page (at most 100) of users online in the room (sockets only; empty on SSE and polling, and in a room of more than 200). */
  online: string[];
  /** How many users are online in the room (0 on SSE and polling). */
  onlineCount: number;
}

/**
 * `connecting`: the current transport is not up (yet); `online`: sockets; `sse`: the
 * server-sent-events fallback; `polling`: the long-polling fallback; `offline`: nothing works.
 */
export type Status = "connecting" | "online" | "sse" | "polling" | "offline";

/** The transport that carries the streams: sockets, server-sent events, or long polling. */
export type Mode = "socket" | "sse" | "polling";

/** A page of a stored stream, as the socket `sync` ack and the polling endpoints answer. */
export interface Page<E> {
  events: E[];
  cursor: number;
  hasMore: boolean;
}
