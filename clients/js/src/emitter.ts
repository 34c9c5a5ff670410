/** A tiny typed event emitter that works the same in browsers and Node. */
export type EventMap = Record<string, unknown[]>;

type AnyListener = (...args: unknown[]) => void;

export class Emitter<E extends EventMap> {
  #listeners = new Map<keyof E, Set<AnyListener>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as unknown as AnyListener);
    return () => this.off(event, listener);
  }

  off<K extends keyof E>(event: K, listener: (...args: E[K]) => void): void {
    this.#listeners.get(event)?.delete(listener as unknown as AnyListener);
  }

  /** Calls every listener; one that throws is reported and does not stop the others. */
  emit<K extends keyof E>(event: K, ...args: E[K]): void {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (err) {
        console.error(`coursecast: a "${String(event)}" listener threw`, err);
      }
    }
  }
}
