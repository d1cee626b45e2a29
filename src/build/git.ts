/**
 * `--revision git` and `--source git`: the commit checked out and the origin remote of
 * the git checkout holding the spec. Asked for explicitly only; nothing here runs
 * unless the user wrote `git`, so a build never picks up a CI checkout by itself.
 */
import { execFile } from 'node:child_process';
import { OcibuildError, EXIT_USAGE } from '../errors.js';

export interface GitRun {
  (args: string[], cwd: string): Promise<string>;
}

// Variables that point git at another repository than the one holding `cwd`: the
// annotation must describe the spec's checkout, whatever the caller's shell has set.
const REPO_SELECTING_ENV = ['GIT_DIR', 'GIT_WORK_TREE', 'GIT_COMMON_DIR', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY', 'GIT_ALTERNATE_OBJECT_DIRECTORIES', 'GIT_NAMESPACE'];

/** Runs git in `cwd`; rejects with a GitError carrying git's own message. */
export const runGit: GitRun = (args, cwd) =>
  new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C' };
    for (const v of REPO_SELECTING_ENV) delete env[v];
    execFile('git', ['-C', cwd, ...args], { env, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(new GitError(code === 'ENOENT' ? 'git is not installed' : stderr.trim() || err.message, code === 'ENOENT'));
      } else resolve(stdout.trim());
    });
  });

export class GitError extends Error {
  constructor(
    message: string,
    readonly missing: boolean,
  ) {
    super(message);
  }
}

/** The full commit hash of HEAD in the checkout holding `dir`. */
export async function gitRevision(dir: string, git: GitRun = runGit): Promise<string> {
  await checkout(dir, '--revision git', git);
  try {
    return await git(['rev-parse', '--verify', 'HEAD^{commit}'], dir);
  } catch (err) {
    throw usage('--revision git: the checkout has no commit yet', dir, 'commit first, or pass --revision REV', err);
  }
}

/** The origin remote's URL, credentials removed, in the checkout holding `dir`. */
export async function gitSourceUrl(dir: string, git: GitRun = runGit): Promise<string> {
  await checkout(dir, '--source git', git);
  let remote: string;
  try {
    remote = await git(['remote', 'get-url', 'origin'], dir);
  } catch (err) {
    throw usage('--source git: the checkout has no remote named origin', dir, 'add one (git remote add origin URL), or pass --source URL', err);
  }
  const url = publicUrl(remote);
  if (url === undefined) {
    throw usage(`--source git: the origin remote ${JSON.stringify(remote)} is not a URL others can fetch from`, dir, 'pass --source URL');
  }
  return url;
}

async function checkout(dir: string, option: string, git: GitRun): Promise<void> {
  try {
    await git(['rev-parse', '--git-dir'], dir);
  } catch (err) {
    if (err instanceof GitError && err.missing) throw usage(`${option}: git is not installed`, dir, `install git, or pass ${option.replace(' git', '')} with a value`, err);
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw usage(`${option}: the spec's directory is not in a git checkout (${detail})`, dir, `pass ${option.replace(' git', '')} with a value, or build from a git checkout`, err);
  }
}

function usage(message: string, where: string, hint: string, cause?: unknown): OcibuildError {
  return new OcibuildError(message, { where, hint, exitCode: EXIT_USAGE, cause });
}

/**
 * A remote URL as it may be published: user and password removed (a token often sits
 * in either), scp-like `user@host:path` written as the ssh:// URL it means (git's
 * urls documentation), an absolute local path as a file:// URL. Undefined for what is
 * no URL at all (a relative path).
 */
export function publicUrl(remote: string): string | undefined {
  const r = remote.trim();
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(r)) {
    let url: URL;
    try {
      url = new URL(r);
    } catch {
      return undefined;
    }
    url.username = '';
    url.password = '';
    return url.href;
  }
  // git: "scp-like syntax ... only if there are no slashes before the first colon".
  const scp = /^(?:[^@/]+@)?([^:/]+):(.+)$/.exec(r);
  if (scp && scp[1] && scp[2]) {
    const path = scp[2].replace(/^\/+/, '');
    return `ssh://${scp[1]}/${path}`;
  }
  if (r.startsWith('/')) return new URL(`file://${r}`).href;
  return undefined;
}
