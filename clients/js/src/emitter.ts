/**
 * A tiny typed event emitter. `Events` maps each event name to its payload, so a listener of a
 * name that does not exist, or one that reads a field the payload lacks, fails to compile.
 */
export class Emitter<Events extends object> {
  private _listeners = new Map<keyof Events, Set<(payload: never) => void>>();

  /** Listen to `type`; returns a function that removes the listener. */
  on<K extends keyof Events>(type: K, fn: (payload: Events[K]) => void): () => void {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn as (payload: never) => void);
    return () => this.off(type, fn);
  }

  /** Remove a listener added with `on`. */
  off<K extends keyof Events>(type: K, fn: (payload: Events[K]) => void): void {
    this._listeners.get(type)?.delete(fn as (payload: never) => void);
  }

  /** Call every listener of `type` (a listener that throws is logged; the others still run). */
  emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    for (const fn of [...(this._listeners.get(type) ?? [])]) {
      try {
        (fn as (payload: Events[K]) => void)(payload);
      } catch (err) {
        console.error(`liveboard: a "${String(type)}" listener threw`, err);
      }
    }
  }
}
