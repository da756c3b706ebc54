// Ordering of tasks by a fractional position `pos`, so a move is a single patch of one field
// (last writer wins per field, so concurrent moves converge like any other edit).

/** Distance between neighbours when positions are renumbered or added at an end. */
export const STEP = 1024;

/** A task's position (rows written by hand from SQL may lack one). */
export function positionOf(task) {
  const pos = Number(task?.pos);
  return Number.isFinite(pos) ? pos : 0;
}

/** `[key, value]` pairs sorted by position, then key (a total order: every tab agrees). */
export function sortEntries(entries) {
  return entries.sort(([keyA, a], [keyB, b]) => positionOf(a) - positionOf(b) || (keyA < keyB ? -1 : keyA > keyB ? 1 : 0));
}

/** The position of a new task added at the bottom. Time-based, like the SQL default, so
 * rows added from SQL and from browsers interleave in creation order. */
export function positionAtEnd(sorted) {
  const last = sorted.at(-1);
  return Math.max(Date.now(), last ? positionOf(last[1]) + 1 : 0);
}

/**
 * The position that puts an item between `before` and `after` (either may be missing), or
 * `null` when they are too close to split (the caller renumbers).
 */
export function positionBetween(before, after) {
  if (!before && !after) return Date.now();
  if (!before) return positionOf(after) - STEP;
  if (!after) return positionOf(before) + STEP;
  const low = positionOf(before);
  const high = positionOf(after);
  const middle = low + (high - low) / 2;
  return middle > low && middle < high ? middle : null;
}

/**
 * Where `key` must go to land at `index` of `sorted` (its index after removal of itself):
 * `{ pos }`, or `{ renumber: [[key, pos], ...] }` when the neighbours are too close.
 */
export function planMove(sorted, key, index) {
  const others = sorted.filter(([other]) => other !== key);
  const target = Math.max(0, Math.min(index, others.length));
  const pos = positionBetween(others[target - 1]?.[1], others[target]?.[1]);
  if (pos !== null) return { pos };
  const moving = sorted.find(([other]) => other === key);
  others.splice(target, 0, moving);
  const base = positionOf(others[0][1]);
  return { renumber: others.map(([other], position) => [other, base + position * STEP]) };
}
