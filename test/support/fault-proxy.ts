// An HTTP proxy on 127.0.0.1 that stands in for a registry (or any HTTP server) and
// breaks some exchanges on purpose: error statuses, connections dropped in the middle
// of a request or response body, bodies cut short under a full Content-Length, delays.
// Which exchanges break is decided by explicit rules or by a seeded schedule, so a test
// run is repeatable. Absolute `Location` headers pointing at the upstream are rewritten
// to the proxy so that uploads keep going through it.
import { createHash } from 'node:crypto';
import { Agent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { listenOnFreePort } from './http.js';

export type Fault =
  /** Answered by the proxy, the upstream never sees the request (its body is read first). */
  | { kind: 'status'; status: number; retryAfter?: number | string; body?: string }
  /** Forward `afterBytes` bytes of the request body (default: half of Content-Length,
   *  else the first chunk; none for a bodiless request), then reset both connections. */
  | { kind: 'drop-request'; afterBytes?: number }
  /** Forward the status, headers and `afterBytes` bytes of the response body (default:
   *  half), then reset the connection (RST). A bodiless response is reset before its headers. */
  | { kind: 'drop-response'; afterBytes?: number }
  /** Forward the headers, Content-Length untouched, and only `keepBytes` bytes of the body
   *  (default: half), then close the connection cleanly (FIN). No effect without a body. */
  | { kind: 'truncate'; keepBytes?: number }
  /** Hold the request `ms` milliseconds before forwarding it. */
  | { kind: 'delay'; ms: number };

export type FaultKind = Fault['kind'];

export interface FaultMatch {
  /** One method or several, e.g. 'PATCH' or ['PUT', 'PATCH']. */
  method?: string | string[];
  /** A substring of, or a pattern for, the path with its query. */
  path?: string | RegExp;
}

export interface FaultRule {
  match?: FaultMatch;
  fault: Fault;
  /** Let this many matching requests go by first (every request matching counts, whichever
   *  rule breaks it); default 0. The first rule able to fire, in order, breaks a request. */
  skip?: number;
  /** Apply to this many matching requests, then retire; default 1. Infinity for always. */
  times?: number;
}

/** For each request matching `match`, a pseudo-random draw from `seed` decides whether to
 *  inject (probability `rate`) and which of `faults`. Rules are consulted first. */
export interface FaultSchedule {
  seed: number | string;
  rate: number;
  faults: Fault[];
  match?: FaultMatch;
}

export interface FaultProxyOptions {
  /** Base URL of the server behind the proxy, e.g. a TestRegistry's url. */
  upstream: string;
  rules?: FaultRule[];
  schedule?: FaultSchedule;
}

export interface ProxiedRequest {
  /** 1-based arrival number. */
  n: number;
  method: string;
  /** Path and query. */
  path: string;
  /** Status the client was sent; 0 when the connection was dropped before any. */
  status: number;
  fault?: FaultKind;
}

export interface InjectedFault {
  n: number;
  method: string;
  path: string;
  fault: Fault;
  /** False when the fault could not bite (a truncation of an empty body). */
  effective: boolean;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT` without a trailing slash. */
  url: string;
  /** `127.0.0.1:PORT`, for image references. */
  host: string;
  port: number;
  upstream: string;
  requests: ProxiedRequest[];
  injected: InjectedFault[];
  /** Effective injections by kind. */
  counts(): Record<FaultKind, number>;
  /** How many Location headers were pointed back at the proxy. */
  locationRewrites(): number;
  addRule(rule: FaultRule): void;
  clearRules(): void;
  setSchedule(schedule: FaultSchedule | null): void;
  close(): Promise<void>;
}

/** The schedule's draw for its i-th matching request (0-based): a fault or nothing.
 *  Pure, so a test can predict what a schedule will do. */
export function scheduledFault(schedule: FaultSchedule, i: number): Fault | undefined {
  const h = createHash('sha256').update(`${String(schedule.seed)}:${i}`).digest();
  const p = h.readUInt32BE(0) / 2 ** 32;
  if (p >= schedule.rate || schedule.faults.length === 0) return undefined;
  return schedule.faults[h.readUInt32BE(4) % schedule.faults.length];
}

function matches(m: FaultMatch | undefined, method: string, path: string): boolean {
  if (m === undefined) return true;
  if (m.method !== undefined && !(Array.isArray(m.method) ? m.method : [m.method]).some((x) => x.toUpperCase() === method)) return false;
  if (m.path !== undefined && !(typeof m.path === 'string' ? path.includes(m.path) : m.path.test(path))) return false;
  return true;
}

// RFC 9110 7.6.1: connection-specific fields are not forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const STATUS_CODES: Record<number, string> = { 429: 'TOOMANYREQUESTS', 503: 'UNAVAILABLE' };

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const upstreamOrigin = upstream.origin;
  interface ActiveRule { rule: FaultRule; seen: number; used: number }
  let rules: ActiveRule[] = (options.rules ?? []).map((rule) => ({ rule, seen: 0, used: 0 }));
  let schedule = options.schedule ?? null;
  let scheduleIndex = 0;
  let rewrites = 0;
  let arrivals = 0;
  const requests: ProxiedRequest[] = [];
  const injected: InjectedFault[] = [];
  const agent = new Agent({ keepAlive: true });
  let proxyOrigin = '';

  const pick = (method: string, path: string): Fault | undefined => {
    let chosen: ActiveRule | undefined;
    for (const active of rules) {
      if (!matches(active.rule.match, method, path)) continue;
      active.seen++;
      if (chosen === undefined && active.seen > (active.rule.skip ?? 0) && active.used < (active.rule.times ?? 1)) chosen = active;
    }
    if (chosen !== undefined) {
      chosen.used++;
      return chosen.rule.fault;
    }
    if (schedule !== null && matches(schedule.match, method, path)) return scheduledFault(schedule, scheduleIndex++);
    return undefined;
  };

  const reset = (socket: Socket | null): void => {
    if (socket !== null && !socket.destroyed) socket.resetAndDestroy();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = req.url ?? '/';
    const entry: ProxiedRequest = { n: ++arrivals, method, path, status: 0 };
    requests.push(entry);
    const fault = pick(method, path);
    let record: InjectedFault | undefined;
    if (fault !== undefined) {
      entry.fault = fault.kind;
      record = { n: entry.n, method, path, fault, effective: true };
      injected.push(record);
    }

    if (fault?.kind === 'delay') {
      await new Promise((r) => setTimeout(r, fault.ms));
      if (req.destroyed) return; // the client gave up while we held its request
    }

    if (fault?.kind === 'status') {
      req.resume();
      await new Promise<void>((ok) => {
        req.once('end', ok);
        req.once('close', ok);
      });
      const code = STATUS_CODES[fault.status] ?? (fault.status >= 500 ? 'UNKNOWN' : 'DENIED');
      const body = Buffer.from(fault.body ?? JSON.stringify({ errors: [{ code, message: `injected ${fault.status} by the fault proxy` }] }));
      const headers: OutgoingHttpHeaders = { 'Content-Type': 'application/json', 'Content-Length': body.length };
      if (fault.retryAfter !== undefined) headers['Retry-After'] = String(fault.retryAfter);
      entry.status = fault.status;
      res.writeHead(fault.status, headers);
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }

    const headers: OutgoingHttpHeaders = {};
    for (const [name, values] of Object.entries(req.headersDistinct)) {
      // Node's server already answered `Expect: 100-continue`; the upstream must not answer it again.
      if (!HOP_BY_HOP.has(name) && name !== 'expect' && values !== undefined) headers[name] = values.length === 1 ? values[0] : values;
    }
    headers.host = upstream.host;
    const up = httpRequest({ agent, host: upstream.hostname, port: upstream.port, method, path, headers });
    // Dropping a bodiless request destroys `up` before the real handler below is attached.
    up.on('error', () => undefined);

    // The request body, possibly cut.
    const declared = Number(req.headers['content-length'] ?? NaN);
    const hasBody = req.headers['transfer-encoding'] !== undefined || declared > 0;
    let dropAt: number | undefined;
    if (fault?.kind === 'drop-request') dropAt = fault.afterBytes ?? (Number.isFinite(declared) ? Math.floor(declared / 2) : undefined);
    let dropped = false;
    const dropRequest = (): void => {
      dropped = true;
      up.destroy();
      reset(req.socket);
    };
    if (fault?.kind === 'drop-request' && (!hasBody || dropAt === 0)) {
      dropRequest();
      return;
    }
    let sent = 0;
    req.on('data', (chunk: Buffer) => {
      if (dropped) return;
      if (fault?.kind === 'drop-request') {
        const room = (dropAt ?? chunk.length) - sent;
        if (chunk.length >= room) {
          up.write(chunk.subarray(0, room), () => dropRequest());
          req.pause();
          return;
        }
      }
      sent += chunk.length;
      if (!up.write(chunk)) {
        req.pause();
        up.once('drain', () => req.resume());
      }
    });
    req.on('end', () => {
      if (dropped) return;
      if (fault?.kind === 'drop-request') return dropRequest(); // the body was shorter than afterBytes
      up.end();
    });
    req.on('close', () => {
      if (!req.complete) up.destroy();
    });
    up.on('error', () => {
      if (dropped) return;
      if (!res.headersSent) {
        entry.status = 502;
        res.writeHead(502, { 'Content-Type': 'text/plain', 'Content-Length': 19 });
        res.end('upstream unreachable');
      } else {
        reset(res.socket);
      }
    });

    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });

    up.on('response', (upRes) => {
      if (dropped) {
        upRes.destroy();
        return;
      }
      const out: OutgoingHttpHeaders = {};
      for (const [name, values] of Object.entries(upRes.headersDistinct)) {
        if (HOP_BY_HOP.has(name) || values === undefined) continue;
        out[name] = values.length === 1 ? values[0] : values;
      }
      const location = upRes.headers.location;
      if (location !== undefined) {
        const target = new URL(location, upstream);
        if (/^[a-z][a-z0-9+.-]*:/i.test(location) && target.origin === upstreamOrigin) {
          out.location = proxyOrigin + target.pathname + target.search + target.hash;
          rewrites++;
        }
      }
      const status = upRes.statusCode ?? 502;
      const length = Number(upRes.headers['content-length'] ?? NaN);
      const bodiless = method === 'HEAD' || status === 204 || status === 304 || length === 0;

      let cutAt: number | undefined;
      if (fault?.kind === 'drop-response') {
        if (bodiless) {
          upRes.resume();
          reset(res.socket);
          return;
        }
        cutAt = fault.afterBytes ?? (Number.isFinite(length) ? Math.floor(length / 2) : 0);
      }
      if (fault?.kind === 'truncate') {
        if (bodiless) {
          if (record) record.effective = false;
        } else {
          cutAt = fault.keepBytes ?? (Number.isFinite(length) ? Math.floor(length / 2) : 0);
          if (Number.isFinite(length)) cutAt = Math.min(cutAt, length - 1);
        }
      }
      entry.status = status;
      res.writeHead(status, upRes.statusMessage, out);
      if (cutAt === undefined) {
        upRes.pipe(res);
        return;
      }

      const cut = (): void => {
        upRes.destroy();
        if (fault?.kind === 'truncate') res.socket?.end();
        else reset(res.socket);
      };
      let forwarded = 0;
      let cutting = false;
      res.flushHeaders();
      const step = (chunk: Buffer): void => {
        if (cutting) return;
        const room = (cutAt ?? 0) - forwarded;
        if (chunk.length >= room) {
          cutting = true;
          if (room > 0) res.write(chunk.subarray(0, room), cut);
          else cut();
          return;
        }
        forwarded += chunk.length;
        if (!res.write(chunk)) {
          upRes.pause();
          res.once('drain', () => upRes.resume());
        }
      };
      if (cutAt === 0) {
        cutting = true;
        // Let the headers reach the client before the connection goes.
        res.write('', cut);
        return;
      }
      upRes.on('data', step);
      upRes.on('end', () => {
        // A chunked body shorter than the cut: end it without its terminating chunk.
        if (!cutting) {
          cutting = true;
          cut();
        }
      });
    });
  };

  const { server, port } = await listenOnFreePort(handle);
  proxyOrigin = `http://127.0.0.1:${port}`;

  return {
    url: proxyOrigin,
    host: `127.0.0.1:${port}`,
    port,
    upstream: upstreamOrigin,
    requests,
    injected,
    counts() {
      const c: Record<FaultKind, number> = { status: 0, 'drop-request': 0, 'drop-response': 0, truncate: 0, delay: 0 };
      for (const i of injected) if (i.effective) c[i.fault.kind]++;
      return c;
    },
    locationRewrites: () => rewrites,
    addRule(rule) {
      rules.push({ rule, seen: 0, used: 0 });
    },
    clearRules() {
      rules = [];
    },
    setSchedule(s) {
      schedule = s;
      scheduleIndex = 0;
    },
    close: () =>
      new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
