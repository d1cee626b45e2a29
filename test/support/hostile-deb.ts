// Hand-made .deb archives for the hostile and broken cases: bytes that no proper
// tool would write (`..` names, absolute paths, links out of the root).
import tarStream from 'tar-stream';

export interface TarItem { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; linkname?: string; content?: string }

export async function tarBytes(items: TarItem[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const collecting = (async () => { for await (const c of pack) chunks.push(c as Buffer); })();
  for (const i of items) {
    const type = i.type ?? 'file';
    await new Promise<void>((resolve, reject) => {
      pack.entry({ name: i.name, type, mode: type === 'directory' ? 0o755 : 0o644, mtime: new Date(1700000000000), linkname: i.linkname, uid: 0, gid: 0 },
        type === 'file' ? (i.content ?? 'x') : '', (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await collecting;
  return Buffer.concat(chunks);
}

export function arBytes(members: Array<[string, Buffer]>): Buffer {
  const parts: Buffer[] = [Buffer.from('!<arch>\n')];
  for (const [name, data] of members) {
    const h = Buffer.alloc(60, 0x20);
    h.write(name, 0, 'latin1');
    h.write('1700000000', 16, 'latin1');
    h.write('0', 28, 'latin1');
    h.write('0', 34, 'latin1');
    h.write('100644', 40, 'latin1');
    h.write(String(data.length), 48, 'latin1');
    h.write('`\n', 58, 'latin1');
    parts.push(h, data);
    if (data.length % 2) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

export async function debWith(data: TarItem[], dataName = 'data.tar'): Promise<Buffer> {
  const control = await tarBytes([{ name: './', type: 'directory' }, { name: './control', content: 'Package: evil\nVersion: 1\nArchitecture: all\nDescription: evil\n' }]);
  return arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control], [dataName, await tarBytes(data)]]);
}

