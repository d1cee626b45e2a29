/** Install order for a resolved package set: dependencies before dependants, deterministic. */

/**
 * Dependencies before dependants. Strongly connected components (dependency
 * cycles) are kept together; inside one, Pre-Depends are honoured first, then
 * the order is by name, so the output never depends on hash or insertion order.
 */
export function installOrder(names: string[], edges: Map<string, { pre: string[]; dep: string[] }>): string[] {
  const sccs = tarjan(names, (n) => {
    const e = edges.get(n);
    return e ? [...e.pre, ...e.dep].filter((d) => edges.has(d)) : [];
  });
  // Tarjan emits components in reverse topological order of the "depends on"
  // graph, i.e. dependencies first — exactly the install order we want.
  const out: string[] = [];
  for (const comp of sccs) {
    if (comp.length === 1) {
      out.push(comp[0]!);
      continue;
    }
    const inComp = new Set(comp);
    const sub = tarjan([...comp].sort(), (n) => (edges.get(n)?.pre ?? []).filter((d) => inComp.has(d)));
    for (const c of sub) out.push(...[...c].sort());
  }
  return out;
}

function tarjan(nodes: string[], succ: (n: string) => string[]): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  // Iterative, so that long dependency chains cannot overflow the call stack.
  for (const root of nodes) {
    if (idx.has(root)) continue;
    const work: Array<{ n: string; succs: string[]; i: number }> = [];
    const enter = (n: string): void => {
      idx.set(n, index);
      low.set(n, index);
      index++;
      stack.push(n);
      onStack.add(n);
      work.push({ n, succs: [...succ(n)].sort(), i: 0 });
    };
    enter(root);
    while (work.length) {
      const top = work[work.length - 1]!;
      if (top.i < top.succs.length) {
        const m = top.succs[top.i++]!;
        if (!idx.has(m)) enter(m);
        else if (onStack.has(m)) low.set(top.n, Math.min(low.get(top.n)!, idx.get(m)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1]!;
        low.set(parent.n, Math.min(low.get(parent.n)!, low.get(top.n)!));
      }
      if (low.get(top.n) === idx.get(top.n)) {
        const comp: string[] = [];
        let m: string;
        do {
          m = stack.pop()!;
          onStack.delete(m);
          comp.push(m);
        } while (m !== top.n);
        out.push(comp);
      }
    }
  }
  return out;
}
