import { OcibuildError } from '../errors.js';
export async function lockCommand(_opts: Record<string, unknown>): Promise<void> {
  throw new OcibuildError('lock is not wired yet');
}
