/** Names close to a misspelt one, for "did you mean" hints. */
export function nearestNames(wanted: string, names: Iterable<string>, limit = 5): string[] {
  const max = Math.max(2, Math.floor(wanted.length / 3));
  const scored: Array<{ name: string; score: number }> = [];
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name) || name === wanted) continue;
    seen.add(name);
    if (Math.abs(name.length - wanted.length) > max) {
      // Still offer names that extend the wanted one (python → python3).
      if (name.startsWith(wanted) && name.length - wanted.length <= 3) scored.push({ name, score: max + 0.5 });
      continue;
    }
    const d = editDistance(wanted, name, max);
    if (d <= max) scored.push({ name, score: d });
  }
  scored.sort((a, b) => a.score - b.score || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return scored.slice(0, limit).map((x) => x.name);
}

/** Levenshtein distance, giving up (returning max + 1) once it must exceed max. */
export function editDistance(a: string, b: string, max = Infinity): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      const v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      cur.push(v);
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > max) return max + 1;
    prev = cur;
  }
  return prev[b.length]!;
}
