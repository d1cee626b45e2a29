// A temp directory per test file, removed when the file's tests end, handing out
// numbered subdirectories so that tests never share state.
import { after } from 'node:test';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function scratchDirs(prefix: string): Promise<(label: string) => Promise<string>> {
  const scratch = await mkdtemp(join(tmpdir(), `ocibuild-${prefix}-`));
  after(() => rm(scratch, { recursive: true, force: true }));
  let counter = 0;
  return async (label: string): Promise<string> => {
    const d = join(scratch, `${++counter}-${label}`);
    await mkdir(d, { recursive: true });
    return d;
  };
}
