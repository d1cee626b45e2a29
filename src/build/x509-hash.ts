/**
 * OpenSSL's subject-name hash (`openssl x509 -subject_hash`, X509_NAME_hash_ex), which
 * names the `HASH.N` links `openssl rehash` makes in a CA directory: the first four
 * bytes, little-endian, of the SHA-1 of the name's canonical encoding. That encoding
 * (x509_name_canon in OpenSSL's crypto/x509/x_name.c) is each RDN's SET re-encoded,
 * without the outer SEQUENCE, where every string value is converted to UTF-8, trimmed,
 * inner whitespace runs collapsed to one space and ASCII lower-cased.
 *
 * Checked against `openssl x509 -subject_hash` for every certificate of Debian's
 * ca-certificates (test/build/x509-hash.test.ts reads them from the host).
 */
import { createHash, X509Certificate } from 'node:crypto';

interface Tlv {
  tag: number;
  /** The whole element. */
  raw: Buffer;
  content: Buffer;
}

function readTlv(buf: Buffer, at: number): Tlv & { end: number } {
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('multi-byte ASN.1 tags are not expected in a certificate name');
  let len = buf[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('unsupported ASN.1 length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[at + 2 + i]!;
    start += n;
  }
  const end = start + len;
  if (end > buf.length) throw new Error('truncated ASN.1 element');
  return { tag, raw: buf.subarray(at, end), content: buf.subarray(start, end), end };
}

function children(content: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < content.length; ) {
    const t = readTlv(content, at);
    out.push(t);
    at = t.end;
  }
  return out;
}

function encode(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

const UTF8 = 0x0c;
/** The string types OpenSSL canonicalises (ASN1_MASK_CANON), as UTF-8 converters. */
const CANON: Record<number, (b: Buffer) => string> = {
  0x0c: (b) => b.toString('utf8'), // UTF8String
  0x13: (b) => b.toString('latin1'), // PrintableString
  0x14: (b) => b.toString('latin1'), // T61String: one byte per character
  0x16: (b) => b.toString('latin1'), // IA5String
  0x1a: (b) => b.toString('latin1'), // VisibleString
  0x1e: (b) => Buffer.from(b).swap16().toString('utf16le'), // BMPString (UTF-16BE)
  0x1c: (b) => String.fromCodePoint(...Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32BE(i * 4))), // UniversalString
};

const isSpace = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d);

/** asn1_string_canon: trim, collapse whitespace runs to one space, lower-case ASCII (bytes of UTF-8). */
function canonText(text: string): Buffer {
  const from = Buffer.from(text, 'utf8');
  let start = 0;
  let end = from.length;
  while (start < end && isSpace(from[start]!)) start++;
  while (end > start && isSpace(from[end - 1]!)) end--;
  const out: number[] = [];
  for (let i = start; i < end; ) {
    const c = from[i]!;
    if (c & 0x80) {
      out.push(c);
      i++;
    } else if (isSpace(c)) {
      out.push(0x20);
      while (i < end && isSpace(from[i]!)) i++;
    } else {
      out.push(c >= 0x41 && c <= 0x5a ? c + 0x20 : c);
      i++;
    }
  }
  return Buffer.from(out);
}

/** The canonical encoding of a Name (the DER of a SEQUENCE OF RDN). */
function canonicalName(name: Tlv): Buffer {
  const parts: Buffer[] = [];
  for (const rdn of children(name.content)) {
    const avas = children(rdn.content).map((ava) => {
      const [oid, value] = children(ava.content);
      if (!oid || !value) throw new Error('malformed name attribute');
      const convert = CANON[value.tag];
      return convert ? encode(0x30, Buffer.concat([oid.raw, encode(UTF8, canonText(convert(value.content)))])) : encode(0x30, Buffer.concat([oid.raw, value.raw]));
    });
    // DER orders a SET OF by the elements' encodings.
    avas.sort((a, b) => Buffer.compare(a, b));
    parts.push(encode(0x31, Buffer.concat(avas)));
  }
  return Buffer.concat(parts);
}

/** The subject Name of a DER certificate. */
function subjectOf(der: Buffer): Tlv {
  const cert = readTlv(der, 0);
  const tbs = children(cert.content)[0];
  if (!tbs) throw new Error('not a certificate');
  const fields = children(tbs.content);
  const i = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version, when present
  // serialNumber, signature, issuer, validity, subject
  const subject = fields[i + 4];
  if (!subject || subject.tag !== 0x30) throw new Error('no subject in the certificate');
  return subject;
}

/** `openssl x509 -subject_hash` of a PEM or DER certificate: 8 hex digits. */
export function subjectHash(cert: Buffer | string): string {
  const der = new X509Certificate(cert).raw;
  const md = createHash('sha1').update(canonicalName(subjectOf(der))).digest();
  return (md.readUInt32LE(0) >>> 0).toString(16).padStart(8, '0');
}

/** SHA-1 of the DER, for telling duplicate certificates apart (as `openssl rehash` does). */
export function certificateFingerprint(cert: Buffer | string): string {
  return createHash('sha1').update(new X509Certificate(cert).raw).digest('hex');
}
