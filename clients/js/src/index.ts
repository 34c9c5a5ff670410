export { CoursecastClient, type ClientOptions, type ClientEvents, type FallbackOptions } from "./client.js";
export { ChatApi, NotificationsApi, AnalyticsApi, CollaborationApi, newClientMsgId } from "./api.js";
export { CoursecastError } from "./errors.js";
export type { GetToken } from "./tokens.js";
export type * from "./types.js";

import { type ClientOptions, CoursecastClient } from "./client.js";

/** Creates a client and starts connecting. */
export function createClient(options: ClientOptions): CoursecastClient {
  const client = new CoursecastClient(options);
  void client.connect();
  return client;
}
