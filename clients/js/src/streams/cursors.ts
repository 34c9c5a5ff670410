/**
 * Cursors per stream and exactly-once, in-order delivery (PROTOCOL.md sections 3, 5),
 * whichever transport carried the events (sockets, SSE, long polling).
 *
 * A stream is `messages:<courseId>`, `annotations:<courseId>`, `notifications:<userId>`
 * or `progress:<userId>`. Its cursor is the highest `seq` delivered to the app; any
 * event at or below it is a duplicate (live and replayed, or replayed twice) and is
 * dropped. Events come from two kinds of source:
 *
 * - pages (a `join`/`sync` ack, a polling answer, each SSE event: an SSE stream is
 *   complete and ordered from the cursor it was opened with): delivered as they are;
 * - live events (socket broadcasts): held back while the stream is being replayed,
 *   and held back when one skips ahead of the cursor (`seq > cursor + 1`; the server
 *   numbers each stream 1, 2, 3, ...), which asks for a catch-up read (`onGap`) whose
 *   page fills the hole. Were a server to leave holes in its numbering, this costs
 *   one extra read per event, never a lost or repeated one.
 *
 * Streams the client cannot replay (another user's progress seen through `watch`)
 * are only deduplicated.
 */

export interface Sequenced {
  seq: number;
}

export type StreamKind = "messages" | "annotations" | "notifications" | "progress";

export function streamKey(kind: StreamKind, id: string): string {
  return `${kind}:${id}`;
}

export function parseKey(key: string): { kind: StreamKind; id: string } {
  const i = key.indexOf(":");
  return { kind: key.slice(0, i) as StreamKind, id: key.slice(i + 1) };
}

interface State {
  cursor?: number;
  resumable: boolean;
  syncing: boolean;
  gapAsked: boolean;
  held: Map<number, Sequenced>;
}

export class Streams {
  #states = new Map<string, State>();
  #deliver: (key: string, event: Sequenced) => void;
  #onGap: (key: string) => void;

  constructor(deliver: (key: string, event: Sequenced) => void, onGap: (key: string) => void) {
    this.#deliver = deliver;
    this.#onGap = onGap;
  }

  /** Registers a stream the client can replay, optionally with a known cursor. */
  track(key: string, cursor?: number): void {
    const state = this.#state(key);
    state.resumable = true;
    if (cursor !== undefined && (state.cursor === undefined || cursor > state.cursor)) state.cursor = cursor;
  }

  /** Starts a stream over from `cursor` (an explicit `since` from the app). */
  reset(key: string, cursor: number): void {
    const state = this.#state(key);
    state.cursor = cursor;
    state.held.clear();
  }

  cursor(key: string): number | undefined {
    return this.#states.get(key)?.cursor;
  }

  /** Every known cursor, to persist and pass back as `cursors` to a later client. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, state] of this.#states) if (state.resumable && state.cursor !== undefined) out[key] = state.cursor;
    return out;
  }

  /** A live (broadcast) event. */
  live(key: string, event: Sequenced): void {
    const state = this.#state(key);
    if (state.cursor !== undefined && event.seq <= state.cursor) return;
    if (state.syncing) {
      state.held.set(event.seq, event);
      return;
    }
    if (state.resumable && state.cursor !== undefined && event.seq > state.cursor + 1) {
      state.held.set(event.seq, event);
      if (!state.gapAsked) {
        state.gapAsked = true;
        this.#onGap(key);
      }
      return;
    }
    this.#emit(key, state, event);
  }

  /** A replay starts: live events wait until it has caught up. */
  beginSync(key: string): void {
    this.#state(key).syncing = true;
  }

  /** A page of the stored stream; `done` when it reached the head (`!hasMore`). */
  page(key: string, events: Sequenced[], done: boolean): void {
    const state = this.#state(key);
    for (const event of [...events].sort((a, b) => a.seq - b.seq)) {
      if (state.cursor === undefined || event.seq > state.cursor) this.#emit(key, state, event);
    }
    if (done) this.#release(key, state);
  }

  /** The replay failed; held events wait for the next one (or are released by a page). */
  syncFailed(key: string): void {
    const state = this.#state(key);
    state.syncing = false;
    state.gapAsked = false;
  }

  #release(key: string, state: State): void {
    state.syncing = false;
    state.gapAsked = false;
    const held = [...state.held.values()].sort((a, b) => a.seq - b.seq);
    state.held.clear();
    for (const event of held) this.live(key, event);
  }

  #emit(key: string, state: State, event: Sequenced): void {
    state.cursor = event.seq;
    this.#deliver(key, event);
  }

  #state(key: string): State {
    let state = this.#states.get(key);
    if (!state) {
      state = { resumable: false, syncing: false, gapAsked: false, held: new Map() };
      this.#states.set(key, state);
    }
    return state;
  }
}
