// packetflix page: targets, live captures, and a capture streamed into the
// page over /capture, parsed and decoded here. No framework, no build step.
//
// The token, when the service needs one, lives in the variable `token`
// only: not in storage, cookies or URLs. fetch() sends it as
// "Authorization: Bearer"; the WebSocket, which cannot send headers, offers
// it as the subprotocol "packetflix.token.<base64url>" next to "packetflix".
//
// The parser, the decoders and the ring are exported, so a test can feed
// them bytes in the browser (server/page_linux_test.go).

// ---------------------------------------------------------------- pcapng

export const BLOCK_SHB = 0x0a0d0d0a;
export const BLOCK_IDB = 1;
export const BLOCK_SPB = 3;
export const BLOCK_ISB = 5;
export const BLOCK_EPB = 6;

// A block bigger than this is taken for garbage: the service's largest
// packet (snaplen 262144) with options fits many times over.
const MAX_BLOCK = 16 << 20;

const pad4 = (n) => (n + 3) & ~3;
const utf8 = new TextDecoder();

// PcapngParser reads one pcapng stream fed in pieces of any size (a block
// may span WebSocket messages), in either byte order (the SHB's magic
// says which), and calls the handlers for each block:
//   onSection({userappl, comment}), onInterface(iface),
//   onPacket({iface, ts, cap, len, flags, data}),
//   onStats({iface, recv, drop, deliv}), onBlock(end).
// ts is a BigInt in the interface's units (iface.toTime turns it into
// seconds and nanoseconds); data is a view into the input, valid only
// during the call. offset is the stream offset where the last complete
// block ended: everything before it is whole blocks.
export class PcapngParser {
  constructor(handlers = {}) {
    this.h = handlers;
    this.le = true;
    this.inSection = false;
    this.ifaces = [];
    this.offset = 0;
    this.error = null;
    // A block that spans pieces: its first 12 bytes, then the whole block.
    this.hdr = new Uint8Array(12);
    this.have = 0;
    this.need = 0;
    this.buf = null;
  }

  // push parses a piece; after an error (kept in .error) it ignores the rest.
  push(chunk) {
    if (this.error) return;
    try {
      this.#push(chunk);
    } catch (e) {
      this.error = e instanceof RangeError ? 'malformed pcapng block' : e.message;
    }
  }

  #push(chunk) {
    const n = chunk.length;
    let off = 0;
    while (off < n) {
      if (this.have > 0) {
        if (this.buf === null) {
          const take = Math.min(12 - this.have, n - off);
          this.hdr.set(chunk.subarray(off, off + take), this.have);
          this.have += take;
          off += take;
          if (this.have < 12) return;
          this.need = this.#blockLength(this.hdr, 0);
          this.buf = new Uint8Array(this.need);
          this.buf.set(this.hdr);
        }
        const take = Math.min(this.need - this.have, n - off);
        this.buf.set(chunk.subarray(off, off + take), this.have);
        this.have += take;
        off += take;
        if (this.have < this.need) return;
        const b = this.buf;
        this.buf = null;
        this.have = 0;
        this.#block(b);
        continue;
      }
      if (n - off < 12) {
        this.hdr.set(chunk.subarray(off), 0);
        this.have = n - off;
        return;
      }
      const len = this.#blockLength(chunk, off);
      if (n - off < len) {
        this.buf = new Uint8Array(len);
        this.buf.set(chunk.subarray(off));
        this.need = len;
        this.have = n - off;
        return;
      }
      this.#block(chunk.subarray(off, off + len));
      off += len;
    }
  }

  // blockLength reads a block's total length from its first 12 bytes; an
  // SHB sets the byte order first.
  #blockLength(u8, off) {
    const v = new DataView(u8.buffer, u8.byteOffset + off, 12);
    if (v.getUint32(0) === BLOCK_SHB) {
      const magic = v.getUint32(8, true);
      if (magic === 0x1a2b3c4d) this.le = true;
      else if (magic === 0x4d3c2b1a) this.le = false;
      else throw new Error('not a pcapng stream: bad byte-order magic');
      this.inSection = true;
    } else if (!this.inSection) {
      throw new Error('not a pcapng stream: no Section Header Block first');
    }
    const len = v.getUint32(4, this.le);
    if (len < 12 || len % 4 !== 0 || len > MAX_BLOCK) throw new Error(`bad pcapng block length ${len}`);
    return len;
  }

  #options(v, p, end, fn) {
    while (p + 4 <= end) {
      const code = v.getUint16(p, this.le);
      const n = v.getUint16(p + 2, this.le);
      if (code === 0 || p + 4 + n > end) return;
      fn(code, p + 4, n);
      p += 4 + pad4(n);
    }
  }

  #block(b) {
    const le = this.le;
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const len = b.length;
    if (v.getUint32(len - 4, le) !== len) throw new Error('pcapng block lengths differ');
    const str = (p, n) => utf8.decode(b.subarray(p, p + n)).replace(/\0+$/, '');
    switch (v.getUint32(0, le)) {
      case BLOCK_SHB: {
        this.ifaces = [];
        const info = { userappl: '', comment: '' };
        this.#options(v, 24, len - 4, (code, p, n) => {
          if (code === 1) info.comment = str(p, n);
          else if (code === 4) info.userappl = str(p, n);
        });
        this.h.onSection?.(info);
        break;
      }
      case BLOCK_IDB: {
        const ifc = new Iface(this.ifaces.length, v.getUint16(8, le), v.getUint32(12, le));
        this.#options(v, 16, len - 4, (code, p, n) => {
          if (code === 2) ifc.name = str(p, n);
          else if (code === 3) ifc.description = str(p, n);
          else if (code === 9 && n >= 1) ifc.setResolution(b[p]);
        });
        this.ifaces.push(ifc);
        this.h.onInterface?.(ifc);
        break;
      }
      case BLOCK_EPB: {
        const id = v.getUint32(8, le);
        const ifc = this.ifaces[id];
        if (!ifc) throw new Error(`packet of undeclared interface ${id}`);
        const cap = v.getUint32(20, le);
        if (28 + cap > len - 4) throw new Error('packet longer than its block');
        let flags = 0;
        this.#options(v, 28 + pad4(cap), len - 4, (code, p, n) => {
          if (code === 2 && n === 4) flags = v.getUint32(p, le);
        });
        const ts = (BigInt(v.getUint32(12, le)) << 32n) | BigInt(v.getUint32(16, le));
        this.h.onPacket?.({ iface: ifc, ts, cap, len: v.getUint32(24, le), flags, data: b.subarray(28, 28 + cap) });
        break;
      }
      case BLOCK_SPB: {
        const ifc = this.ifaces[0];
        if (!ifc) throw new Error('packet of undeclared interface 0');
        const orig = v.getUint32(8, le);
        const cap = Math.min(orig, len - 16, ifc.snaplen || orig);
        this.h.onPacket?.({ iface: ifc, ts: null, cap, len: orig, flags: 0, data: b.subarray(12, 12 + cap) });
        break;
      }
      case BLOCK_ISB: {
        const id = v.getUint32(8, le);
        const st = { iface: this.ifaces[id], recv: null, drop: null, deliv: null };
        this.#options(v, 20, len - 4, (code, p, n) => {
          if (n !== 8) return;
          const x = Number(v.getBigUint64(p, le));
          if (code === 4) st.recv = x;
          else if (code === 5) st.drop = x;
          else if (code === 8) st.deliv = x;
        });
        if (st.iface) this.h.onStats?.(st);
        break;
      }
    }
    this.offset += len;
    this.h.onBlock?.(this.offset);
  }
}

// Iface is one IDB: link type, name, and the timestamp resolution.
class Iface {
  constructor(id, link, snaplen) {
    this.id = id;
    this.link = link;
    this.snaplen = snaplen;
    this.name = `if${id}`;
    this.description = '';
    this.setResolution(6);
  }

  // setResolution takes if_tsresol: 10^-n, or 2^-n with the top bit set.
  setResolution(r) {
    const n = r & 0x7f;
    this.binary = (r & 0x80) !== 0;
    this.shift = BigInt(n);
    this.div = this.binary ? 1n << this.shift : 10n ** this.shift;
    this.digits = n;
  }

  // toTime splits a timestamp into whole seconds and nanoseconds.
  toTime(ts) {
    if (ts === null) return [0, 0];
    const sec = Number(ts / this.div);
    const frac = ts % this.div;
    let ns;
    if (this.binary) ns = Number((frac * 1000000000n) >> this.shift);
    else if (this.digits <= 9) ns = Number(frac) * 10 ** (9 - this.digits);
    else ns = Number(frac / 10n ** BigInt(this.digits - 9));
    return [sec, ns];
  }
}

// ---------------------------------------------------------------- decoding

export const LINK_ETHERNET = 1;
export const LINK_RAW = 101;
export const LINK_SLL = 113;
export const LINK_IPV4 = 228;
export const LINK_IPV6 = 229;
export const LINK_SLL2 = 276;

const hex2 = (x) => x.toString(16).padStart(2, '0');
const hex4 = (x) => x.toString(16).padStart(4, '0');

export function formatMAC(b, p) {
  return `${hex2(b[p])}:${hex2(b[p + 1])}:${hex2(b[p + 2])}:${hex2(b[p + 3])}:${hex2(b[p + 4])}:${hex2(b[p + 5])}`;
}

export function formatIPv4(b, p) {
  if (p + 4 > b.length) throw new RangeError('short');
  return `${b[p]}.${b[p + 1]}.${b[p + 2]}.${b[p + 3]}`;
}

// formatIPv6 writes RFC 5952's canonical form: lower case, no leading
// zeros, the longest run of two or more zero groups as "::".
export function formatIPv6(b, p) {
  if (p + 16 > b.length) throw new RangeError('short');
  const g = [];
  for (let i = 0; i < 8; i++) g.push((b[p + 2 * i] << 8) | b[p + 2 * i + 1]);
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const h = (a) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return h(g);
  return `${h(g.slice(0, best))}::${h(g.slice(best + bestLen))}`;
}

const ETHERTYPES = {
  0x0800: 'IPv4', 0x0806: 'ARP', 0x86dd: 'IPv6', 0x8035: 'RARP', 0x88cc: 'LLDP', 0x888e: 'EAPOL',
  0x8847: 'MPLS', 0x8848: 'MPLS', 0x8863: 'PPPoED', 0x8864: 'PPPoES', 0x88e5: 'MACsec', 0x8809: 'Slow', 0x88f7: 'PTP',
};
const IPPROTOS = {
  1: 'ICMP', 2: 'IGMP', 4: 'IPIP', 6: 'TCP', 17: 'UDP', 41: 'IPv6', 47: 'GRE', 50: 'ESP', 51: 'AH',
  58: 'ICMPv6', 89: 'OSPF', 103: 'PIM', 112: 'VRRP', 132: 'SCTP',
};
const ipProtoName = (n) => IPPROTOS[n] || `IP proto ${n}`;

// decodePacket describes a packet of link type link in one line: source,
// destination, protocol (the innermost one recognised), info, and the
// layers for a detail view. A packet cut short (snaplen) is described as
// far as it goes. dirHint is the direction a cooked (SLL) header tells.
export function decodePacket(link, data) {
  const o = { src: '', dst: '', proto: '', info: '', layers: [], dirHint: '' };
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  try {
    switch (link) {
      case LINK_ETHERNET: ethernet(v, data, 0, o); break;
      case LINK_RAW: rawIP(v, data, 0, data.length, o); break;
      case LINK_IPV4: ipv4(v, data, 0, o); break;
      case LINK_IPV6: ipv6(v, data, 0, o); break;
      case LINK_SLL: sll(v, data, o); break;
      case LINK_SLL2: sll2(v, data, o); break;
      default:
        o.proto = `link ${link}`;
        o.info = `${data.length} bytes of link type ${link}`;
    }
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    o.info = o.info ? `${o.info} [cut short]` : '[cut short]';
  }
  return o;
}

function ethernet(v, b, p, o) {
  o.proto = 'Ethernet';
  o.dst = formatMAC(b, p);
  o.src = formatMAC(b, p + 6);
  o.layers.push(`Ethernet ${o.src} → ${o.dst}`);
  let type = v.getUint16(p + 12);
  p += 14;
  const tags = [];
  while (type === 0x8100 || type === 0x88a8 || type === 0x9100) {
    const tci = v.getUint16(p);
    tags.push(tci & 0xfff);
    o.layers.push(`${type === 0x8100 ? '802.1Q' : '802.1ad'} VLAN ${tci & 0xfff}, priority ${tci >> 13}`);
    type = v.getUint16(p + 2);
    p += 4;
  }
  const vlan = tags.length ? `[VLAN ${tags.join('/')}] ` : '';
  if (type < 0x0600) {
    o.proto = b[p] === 0x42 && b[p + 1] === 0x42 ? 'STP' : 'LLC';
    o.info = `${vlan}802.3, length ${type}`;
    o.layers.push(`802.3 LLC, length ${type}`);
    return;
  }
  try {
    etherType(v, b, p, type, o);
  } finally {
    if (vlan) o.info = vlan + o.info;
  }
}

function etherType(v, b, p, type, o) {
  switch (type) {
    case 0x0800: return ipv4(v, b, p, o);
    case 0x86dd: return ipv6(v, b, p, o);
    case 0x0806: return arp(v, b, p, o);
  }
  o.proto = ETHERTYPES[type] || `0x${hex4(type)}`;
  o.info = `EtherType 0x${hex4(type)}${ETHERTYPES[type] ? ` (${ETHERTYPES[type]})` : ''}`;
  o.layers.push(o.info);
}

// sll is Linux cooked capture v1: packet type, ARPHRD type, address length,
// 8 bytes of address, protocol.
function sll(v, b, o) {
  o.proto = 'SLL';
  const ptype = v.getUint16(0), alen = v.getUint16(4);
  o.dirHint = ptype === 4 ? 'out' : 'in';
  if (alen === 6) o.src = formatMAC(b, 6);
  o.layers.push(`Linux cooked capture, packet type ${ptype}`);
  etherType(v, b, 16, v.getUint16(14), o);
}

// sll2 is Linux cooked capture v2: protocol, reserved, ifindex, ARPHRD
// type, packet type, address length, 8 bytes of address.
function sll2(v, b, o) {
  o.proto = 'SLL2';
  const proto = v.getUint16(0), ptype = b[10], alen = b[11];
  if (b.length < 20) throw new RangeError('short');
  o.dirHint = ptype === 4 ? 'out' : 'in';
  if (alen === 6) o.src = formatMAC(b, 12);
  o.layers.push(`Linux cooked capture v2, ifindex ${v.getUint32(4)}, packet type ${ptype}`);
  etherType(v, b, 20, proto, o);
}

function rawIP(v, b, p, end, o) {
  const ver = b[p] >> 4;
  if (ver === 4) return ipv4(v, b, p, o);
  if (ver === 6) return ipv6(v, b, p, o);
  if (p >= b.length) throw new RangeError('short');
  o.proto = 'IP?';
  o.info = `IP version ${ver}`;
}

function ipv4(v, b, p, o) {
  o.proto = 'IPv4';
  const ihl = (b[p] & 0x0f) * 4;
  const total = v.getUint16(p + 2);
  const frag = v.getUint16(p + 6);
  const ttl = b[p + 8], proto = b[p + 9];
  o.src = formatIPv4(b, p + 12);
  o.dst = formatIPv4(b, p + 16);
  const offset = (frag & 0x1fff) * 8, more = (frag & 0x2000) !== 0;
  o.layers.push(`IPv4 ${o.src} → ${o.dst}, TTL ${ttl}, ${ipProtoName(proto)}${more || offset ? `, fragment offset ${offset}${more ? ', more' : ''}` : ''}`);
  if ((b[p] >> 4) !== 4 || ihl < 20 || total < ihl) {
    o.info = 'bad IPv4 header';
    return;
  }
  if (offset > 0) {
    o.info = `Fragment of ${ipProtoName(proto)}, offset ${offset}${more ? '' : ' (last)'}`;
    return;
  }
  transport(v, b, p + ihl, total - ihl, proto, o);
  if (more) o.info += ' [first fragment]';
}

function ipv6(v, b, p, o) {
  o.proto = 'IPv6';
  const plen = v.getUint16(p + 4);
  let next = b[p + 6];
  const hops = b[p + 7];
  o.src = formatIPv6(b, p + 8);
  o.dst = formatIPv6(b, p + 24);
  o.layers.push(`IPv6 ${o.src} → ${o.dst}, hop limit ${hops}`);
  let q = p + 40, rem = plen;
  for (let i = 0; i < 8; i++) {
    if (next === 0 || next === 43 || next === 60) {
      if (b.length < q + 2) throw new RangeError('short');
      const n = (b[q + 1] + 1) * 8;
      o.layers.push(`IPv6 ${next === 0 ? 'hop-by-hop options' : next === 43 ? 'routing header' : 'destination options'}`);
      next = b[q]; q += n; rem -= n;
    } else if (next === 44) {
      const off = v.getUint16(q + 2) & 0xfff8, more = (v.getUint16(q + 2) & 1) !== 0;
      const inner = b[q];
      o.layers.push(`IPv6 fragment, offset ${off}${more ? ', more' : ''}`);
      if (off > 0) {
        o.info = `Fragment of ${ipProtoName(inner)}, offset ${off}${more ? '' : ' (last)'}`;
        return;
      }
      next = inner; q += 8; rem -= 8;
    } else if (next === 51) {
      if (b.length < q + 2) throw new RangeError('short');
      const n = (b[q + 1] + 2) * 4;
      o.layers.push('IPv6 authentication header');
      next = b[q]; q += n; rem -= n;
    } else {
      break;
    }
  }
  if (next === 59) {
    o.info = 'No next header';
    return;
  }
  transport(v, b, q, rem, next, o);
}

function transport(v, b, p, len, proto, o) {
  switch (proto) {
    case 1: return icmp(v, b, p, len, o);
    case 58: return icmp6(v, b, p, len, o);
    case 6: return tcp(v, b, p, len, o);
    case 17: return udp(v, b, p, len, o);
    case 4: case 41: {
      o.layers.push(`${proto === 4 ? 'IPv4' : 'IPv6'} in IP`);
      const outer = `${o.src} → ${o.dst}`;
      rawIP(v, b, p, p + len, o);
      o.info = `[tunnel ${outer}] ${o.info}`;
      return;
    }
  }
  o.proto = IPPROTOS[proto] || o.proto;
  o.info = `${ipProtoName(proto)}, ${len} bytes`;
  o.layers.push(o.info);
}

const ICMP_UNREACH = ['network unreachable', 'host unreachable', 'protocol unreachable', 'port unreachable',
  'fragmentation needed', 'source route failed', 'network unknown', 'host unknown', 'source host isolated',
  'network prohibited', 'host prohibited', 'network unreachable for TOS', 'host unreachable for TOS',
  'communication administratively prohibited', 'host precedence violation', 'precedence cutoff'];

// quoted describes the packet an ICMP error carries.
function quoted(b, p, link) {
  try {
    const sub = b.subarray(p);
    const q = decodePacket(link, sub);
    return q.src ? ` (${q.proto} ${q.src} → ${q.dst})` : '';
  } catch {
    return '';
  }
}

function icmp(v, b, p, len, o) {
  o.proto = 'ICMP';
  const type = b[p], code = b[p + 1];
  let s;
  switch (type) {
    case 0: case 8:
      s = `Echo (ping) ${type === 8 ? 'request' : 'reply'} id=0x${hex4(v.getUint16(p + 4))}, seq=${v.getUint16(p + 6)}`;
      break;
    case 3:
      s = `Destination unreachable (${ICMP_UNREACH[code] || `code ${code}`})${quoted(b, p + 8, LINK_RAW)}`;
      break;
    case 5: s = `Redirect to ${formatIPv4(b, p + 4)}`; break;
    case 11: s = `Time-to-live exceeded${code === 1 ? ' (fragment reassembly)' : ' in transit'}${quoted(b, p + 8, LINK_RAW)}`; break;
    case 12: s = 'Parameter problem'; break;
    case 13: case 14: s = `Timestamp ${type === 13 ? 'request' : 'reply'}`; break;
    default: s = `type ${type}, code ${code}`;
  }
  o.info = s;
  o.layers.push(`ICMP ${s}`);
}

const ICMP6_UNREACH = ['no route to destination', 'administratively prohibited', 'beyond scope of source address',
  'address unreachable', 'port unreachable', 'source address failed policy', 'reject route'];

function icmp6(v, b, p, len, o) {
  o.proto = 'ICMPv6';
  const type = b[p], code = b[p + 1];
  let s;
  switch (type) {
    case 1: s = `Destination unreachable (${ICMP6_UNREACH[code] || `code ${code}`})${quoted(b, p + 8, LINK_RAW)}`; break;
    case 2: s = `Packet too big, MTU ${v.getUint32(p + 4)}`; break;
    case 3: s = `Time exceeded${code === 1 ? ' (fragment reassembly)' : ' in transit'}`; break;
    case 4: s = 'Parameter problem'; break;
    case 128: case 129:
      s = `Echo (ping) ${type === 128 ? 'request' : 'reply'} id=0x${hex4(v.getUint16(p + 4))}, seq=${v.getUint16(p + 6)}`;
      break;
    case 130: s = 'Multicast listener query'; break;
    case 131: s = 'Multicast listener report'; break;
    case 132: s = 'Multicast listener done'; break;
    case 133: s = 'Router solicitation'; break;
    case 134: s = `Router advertisement${b[p + 4] ? `, hop limit ${b[p + 4]}` : ''}`; break;
    case 135: s = `Neighbor solicitation for ${formatIPv6(b, p + 8)}`; break;
    case 136: {
      const f = b[p + 4];
      const flags = [f & 0x80 ? 'router' : '', f & 0x40 ? 'solicited' : '', f & 0x20 ? 'override' : ''].filter(Boolean);
      s = `Neighbor advertisement ${formatIPv6(b, p + 8)}${flags.length ? ` (${flags.join(', ')})` : ''}`;
      break;
    }
    case 137: s = `Redirect to ${formatIPv6(b, p + 8)}`; break;
    case 143: s = `Multicast listener report v2, ${v.getUint16(p + 6)} records`; break;
    default: s = `type ${type}, code ${code}`;
  }
  o.info = s;
  o.layers.push(`ICMPv6 ${s}`);
}

const TCP_FLAGS = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'AE'];

function tcp(v, b, p, len, o) {
  o.proto = 'TCP';
  const sport = v.getUint16(p), dport = v.getUint16(p + 2);
  o.info = `${sport} → ${dport}`;
  const seq = v.getUint32(p + 4), ack = v.getUint32(p + 8);
  const word = v.getUint16(p + 12);
  const hlen = (word >> 12) * 4, bits = word & 0x1ff;
  const win = v.getUint16(p + 14);
  const flags = TCP_FLAGS.filter((_, i) => bits & (1 << i));
  const plen = Math.max(0, len - hlen);
  o.info = `${sport} → ${dport} [${flags.join(', ')}] Seq=${seq}${bits & 0x10 ? ` Ack=${ack}` : ''} Win=${win} Len=${plen}`;
  o.layers.push(`TCP ${o.info}`);
  if ((sport === 53 || dport === 53) && plen >= 14) {
    const dnsLen = v.getUint16(p + hlen);
    dns(v, b, p + hlen + 2, Math.min(dnsLen, plen - 2), 'DNS', o);
  }
}

function udp(v, b, p, len, o) {
  o.proto = 'UDP';
  const sport = v.getUint16(p), dport = v.getUint16(p + 2), ulen = v.getUint16(p + 4);
  const plen = Math.max(0, Math.min(ulen, len) - 8);
  o.info = `${sport} → ${dport} Len=${plen}`;
  o.layers.push(`UDP ${o.info}`);
  const port = (x) => sport === x || dport === x;
  if (port(53)) return dns(v, b, p + 8, plen, 'DNS', o);
  if (port(5353)) return dns(v, b, p + 8, plen, 'MDNS', o);
  if (dport === 4789 && plen >= 8 + 14) {
    const vni = (v.getUint32(p + 12) >>> 8);
    const outer = `${o.src} → ${o.dst}`;
    o.layers.push(`VXLAN VNI ${vni} (${outer})`);
    ethernet(v, b, p + 16, o);
    o.info = `[VXLAN ${vni}] ${o.info}`;
    return;
  }
  if (port(67) || port(68)) { o.proto = 'DHCP'; o.info = `DHCP ${o.info}`; }
  else if (port(546) || port(547)) { o.proto = 'DHCPv6'; o.info = `DHCPv6 ${o.info}`; }
  else if (port(123)) o.proto = 'NTP';
}

const DNS_TYPES = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 13: 'HINFO', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV',
  35: 'NAPTR', 41: 'OPT', 43: 'DS', 46: 'RRSIG', 47: 'NSEC', 48: 'DNSKEY', 52: 'TLSA', 64: 'SVCB', 65: 'HTTPS',
  99: 'SPF', 252: 'AXFR', 255: 'ANY', 257: 'CAA',
};
const DNS_RCODES = ['', 'Format error', 'Server failure', 'No such name', 'Not implemented', 'Refused'];
const DNS_OPCODES = ['Standard query', 'Inverse query', 'Server status request', '', 'Zone change notification', 'Dynamic update'];
const dnsType = (t) => DNS_TYPES[t] || `TYPE${t}`;

// dnsName reads a (possibly compressed) name at p of the message starting
// at base; it returns the name and where the name ended at p.
function dnsName(b, base, p, end) {
  const labels = [];
  let after = -1;
  for (let hops = 0; hops < 64; hops++) {
    if (p >= end) throw new RangeError('short');
    const n = b[p];
    if (n === 0) {
      if (after < 0) after = p + 1;
      return [labels.length ? labels.join('.') : '<Root>', after];
    }
    if ((n & 0xc0) === 0xc0) {
      if (p + 1 >= end) throw new RangeError('short');
      if (after < 0) after = p + 2;
      p = base + (((n & 0x3f) << 8) | b[p + 1]);
      continue;
    }
    if (n & 0xc0) throw new RangeError('bad label');
    if (p + 1 + n > end) throw new RangeError('short');
    labels.push(utf8.decode(b.subarray(p + 1, p + 1 + n)));
    p += 1 + n;
  }
  throw new RangeError('name loop');
}

function dns(v, b, p, len, label, o) {
  o.proto = label;
  const end = Math.min(b.length, p + len);
  if (end - p < 12) throw new RangeError('short');
  const id = v.getUint16(p), flags = v.getUint16(p + 2);
  const qd = v.getUint16(p + 4), an = v.getUint16(p + 6);
  const response = (flags & 0x8000) !== 0, opcode = (flags >> 11) & 15, rcode = flags & 15;
  const parts = [`${DNS_OPCODES[opcode] || `Opcode ${opcode}`}${response ? ' response' : ''} 0x${hex4(id)}`];
  if (response && rcode) parts.push(DNS_RCODES[rcode] || `RCODE ${rcode}`);
  o.info = parts.join(' ');
  let q = p + 12;
  for (let i = 0; i < qd; i++) {
    const [name, after] = dnsName(b, p, q, end);
    if (after + 4 > end) throw new RangeError('short');
    if (i < 2) parts.push(`${dnsType(v.getUint16(after))} ${name}`);
    q = after + 4;
  }
  o.info = parts.join(' ');
  for (let i = 0; i < an && i < 4; i++) {
    const [, after] = dnsName(b, p, q, end);
    if (after + 10 > end) break;
    const type = v.getUint16(after), rdlen = v.getUint16(after + 8), rd = after + 10;
    if (rd + rdlen > end) break;
    if (type === 1 && rdlen === 4) parts.push(`A ${formatIPv4(b, rd)}`);
    else if (type === 28 && rdlen === 16) parts.push(`AAAA ${formatIPv6(b, rd)}`);
    else if (type === 5 || type === 12 || type === 2) parts.push(`${dnsType(type)} ${dnsName(b, p, rd, end)[0]}`);
    else parts.push(dnsType(type));
    q = rd + rdlen;
  }
  if (an > 4) parts.push(`(${an} answers)`);
  o.info = parts.join(' ');
  o.layers.push(`${label} ${o.info}`);
}

function arp(v, b, p, o) {
  o.proto = 'ARP';
  const ptype = v.getUint16(p + 2), hlen = b[p + 4], plen = b[p + 5], op = v.getUint16(p + 6);
  if (ptype !== 0x0800 || hlen !== 6 || plen !== 4) {
    o.info = `ARP opcode ${op}, hardware ${v.getUint16(p)}, protocol 0x${hex4(ptype)}`;
    o.layers.push(o.info);
    return;
  }
  const sha = formatMAC(b, p + 8), spa = formatIPv4(b, p + 14), tpa = formatIPv4(b, p + 24);
  if (op === 1) {
    if (spa === tpa) o.info = `Gratuitous ARP for ${spa} (request)`;
    else if (spa === '0.0.0.0') o.info = `Who has ${tpa}? (ARP probe)`;
    else o.info = `Who has ${tpa}? Tell ${spa}`;
  } else if (op === 2) {
    o.info = `${spa} is at ${sha}`;
  } else {
    o.info = `ARP opcode ${op}`;
  }
  o.layers.push(`ARP ${o.info}`);
}

// ---------------------------------------------------------------- history

// Ring keeps the last cap items; dropped counts the ones it let go.
export class Ring {
  constructor(cap) {
    this.cap = cap;
    this.items = new Array(cap);
    this.start = 0;
    this.size = 0;
    this.dropped = 0;
  }

  push(x) {
    if (this.size < this.cap) {
      this.items[(this.start + this.size) % this.cap] = x;
      this.size++;
      return;
    }
    this.items[this.start] = x;
    this.start = (this.start + 1) % this.cap;
    this.dropped++;
  }

  at(i) {
    return this.items[(this.start + i) % this.cap];
  }

  // indexOf finds the item whose key is k; items are in ascending key order.
  indexOf(k, key) {
    let lo = 0, hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, x = key(this.at(mid));
      if (x === k) return mid;
      if (x < k) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

// ---------------------------------------------------------------- the page

// HISTORY packets stay listed; KEEP_BYTES of each are kept for the detail
// view; RAW_LIMIT bytes of the stream are kept for "Save".
export const HISTORY = 10000;
const KEEP_BYTES = 512;
export const RAW_LIMIT = 64 << 20;
const RENDER_EVERY_MS = 100;
const OVERSCAN = 8;

const $ = (sel) => document.querySelector(sel);
const fmtInt = new Intl.NumberFormat('en-US').format;

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function fmtTime(sec, ns) {
  const d = new Date(sec * 1000);
  const p2 = (x) => String(x).padStart(2, '0');
  return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}.${String(Math.floor(ns / 1000)).padStart(6, '0')}`;
}

function base64url(s) {
  let bin = '';
  for (const c of new TextEncoder().encode(s)) bin += String.fromCharCode(c);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// wsBase is this service's URL with ws: or wss:, ending in "/".
function wsBase() {
  const u = new URL('.', document.baseURI);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.hash = '';
  return u.href;
}

// wiresharkURL is the link csharg's extcap opens, in the form GhostWire's
// page builds: the target as JSON (netns, interfaces, name, type, prefix)
// and the interfaces separated by "/".
export function wiresharkURL(base, t, nifs) {
  const ref = { netns: t.netns, 'network-interfaces': nifs, name: t.name, type: t.type, prefix: t.prefix || '' };
  return `packetflix:${base}capture?container=${encodeURIComponent(JSON.stringify(ref))}` +
    `&nif=${nifs.map(encodeURIComponent).join('/')}`;
}

function saveBlob(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

function fileName(t, suffix) {
  const d = new Date();
  const p2 = (x) => String(x).padStart(2, '0');
  const stamp = `${d.getFullYear()}${p2(d.getMonth() + 1)}${p2(d.getDate())}-${p2(d.getHours())}${p2(d.getMinutes())}${p2(d.getSeconds())}`;
  const name = (t ? t.name : 'capture').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60);
  return `packetflix-${name}-${stamp}${suffix}.pcapng`;
}

class AuthError extends Error {}

// The one place the token lives.
let token = '';
let authOK = false;

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(new URL(path, document.baseURI), { ...init, headers, cache: 'no-store' });
  if (r.status === 401) throw new AuthError('unauthorized');
  return r;
}

async function errorText(r) {
  const t = (await r.text()).trim();
  try {
    const j = JSON.parse(t);
    if (j && j.error) return j.error;
  } catch { /* plain text */ }
  return t.slice(0, 300) || `HTTP ${r.status}`;
}

// ------------------------------------------------ service, token

function setText(sel, text, state) {
  const el = $(sel);
  el.textContent = text;
  if (state !== undefined) el.dataset.state = state;
}

async function loadService() {
  try {
    const r = await fetch(new URL('version', document.baseURI), { cache: 'no-store' });
    if (r.ok) {
      const j = await r.json();
      $('#version').textContent = j.version ? `version ${j.version}` : '';
    }
  } catch { /* shown by the checks below */ }
  let authOn = false;
  try {
    const r = await fetch(new URL('readyz', document.baseURI), { cache: 'no-store' });
    const j = await r.json();
    const checks = j.checks || {};
    authOn = checks.auth && checks.auth.detail === 'on';
    const bad = Object.entries(checks).filter(([, c]) => !c.ok).map(([k, c]) => `${k}: ${c.detail || 'failing'}`);
    setText('#service-state', bad.length ? `Not ready: ${bad.join('; ')}` : 'Service ready.');
  } catch (e) {
    setText('#service-state', `The service does not answer: ${e.message}`);
  }
  if (authOn && !token) {
    needToken('This service needs its access token.');
    $('#token').focus();
    return;
  }
  authOK = true;
  onAuthorized();
}

function needToken(msg) {
  authOK = false;
  setText('#token-state', msg, 'error');
  setText('#target-count', 'Enter the access token to list targets.');
  setText('#captures-state', 'Enter the access token to see captures.');
}

function onAuthorized() {
  loadTargets();
  refreshCaptures();
}

function handleError(e, where) {
  if (e instanceof AuthError) {
    needToken(token ? 'The service refused this token.' : 'This service needs its access token.');
    token = '';
    $('#token-forget').hidden = true;
    return;
  }
  setText(where, `Failed: ${e.message}`, 'error');
}

function initToken() {
  $('#token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('#token');
    const t = input.value.trim();
    input.value = '';
    if (!t) {
      setText('#token-state', 'The token field is empty.', 'error');
      return;
    }
    token = t;
    setText('#token-state', 'Checking the token…', '');
    try {
      const r = await api('api/v1/info');
      if (!r.ok) throw new Error(await errorText(r));
      authOK = true;
      $('#token-forget').hidden = false;
      setText('#token-state', 'Token accepted; kept in this page only.', 'ok');
      onAuthorized();
    } catch (e) {
      handleError(e, '#token-state');
    }
  });
  $('#token-forget').addEventListener('click', () => {
    token = '';
    $('#token-forget').hidden = true;
    $('#token').focus();
    needToken('Token forgotten.');
  });
}

// ------------------------------------------------ targets

let targets = [];
const targetByName = new Map();

async function loadTargets() {
  setText('#target-count', 'Loading targets…');
  try {
    const r = await api('mobyshark');
    if (!r.ok) throw new Error(await errorText(r));
    const j = await r.json();
    targets = (j.containers || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  } catch (e) {
    handleError(e, '#target-count');
    return;
  }
  targetByName.clear();
  for (const t of targets) targetByName.set(t.name, t);
  renderTargets();
  fillTargetSelect();
}

function renderTargets() {
  const body = $('#target-list');
  const rows = [];
  const base = wsBase();
  for (const t of targets) {
    const tr = document.createElement('tr');
    const nifs = t['network-interfaces'] || [];
    tr.dataset.search = [t.name, t.type, String(t.netns), ...nifs].join(' ').toLowerCase();
    const name = document.createElement('td');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link';
    b.textContent = t.name;
    b.dataset.name = t.name;
    b.setAttribute('aria-describedby', 'choose-hint');
    b.addEventListener('click', () => chooseTarget(t.name, true));
    name.append(b);
    const link = document.createElement('a');
    link.href = wiresharkURL(base, t, nifs);
    link.textContent = 'Open';
    link.setAttribute('aria-label', `Open ${t.name} in Wireshark`);
    const cells = [t.type, String(t.netns), nifs.join(', ') || '—'].map((s) => {
      const td = document.createElement('td');
      td.textContent = s;
      return td;
    });
    const wl = document.createElement('td');
    wl.append(link);
    tr.append(name, ...cells, wl);
    rows.push(tr);
  }
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 5;
    td.className = 'empty';
    td.textContent = 'No capture targets found.';
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  filterTargets();
}

function filterTargets() {
  const words = $('#target-search').value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const tr of $('#target-list').children) {
    if (tr.dataset.search === undefined) continue;
    const ok = words.every((w) => tr.dataset.search.includes(w));
    tr.hidden = !ok;
    if (ok) shown++;
  }
  setText('#target-count', words.length ? `${shown} of ${targets.length} targets` : `${targets.length} targets`);
}

function fillTargetSelect() {
  const sel = $('#target');
  const keep = sel.value;
  const opts = [new Option('Choose a target', '')];
  for (const t of targets) opts.push(new Option(`${t.name} (${t.type}, netns ${t.netns})`, t.name));
  sel.replaceChildren(...opts);
  sel.value = targetByName.has(keep) ? keep : '';
  onTargetChange();
}

function chooseTarget(name, focus) {
  $('#target').value = name;
  onTargetChange();
  if (focus) {
    $('#capture').scrollIntoView({ block: 'start' });
    $('#target').focus();
  }
}

function selectedTarget() {
  return targetByName.get($('#target').value) || null;
}

function selectedNifs() {
  return [...document.querySelectorAll('#nif-list input:checked')].map((i) => i.value);
}

function onTargetChange() {
  const t = selectedTarget();
  const list = $('#nif-list');
  // A refresh of the list keeps what was ticked for the same target.
  const keep = new Set(t && list.dataset.target === t.name ? selectedNifs() : []);
  list.dataset.target = t ? t.name : '';
  const boxes = [];
  for (const n of t ? t['network-interfaces'] || [] : []) {
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.name = 'nif';
    box.value = n;
    box.checked = keep.has(n);
    box.addEventListener('change', updateCaptureControls);
    label.append(box, n);
    boxes.push(label);
  }
  list.replaceChildren(...boxes);
  updateCaptureControls();
}

// ------------------------------------------------ live captures (API)

const captureRows = new Map();

async function refreshCaptures() {
  if (!authOK) return;
  let list;
  try {
    const r = await api('api/v1/captures');
    if (!r.ok) throw new Error(await errorText(r));
    list = (await r.json()).captures || [];
  } catch (e) {
    handleError(e, '#captures-state');
    return;
  }
  const body = $('#capture-list');
  const seen = new Set();
  for (const c of list) {
    seen.add(c.id);
    let tr = captureRows.get(c.id);
    if (!tr) {
      tr = captureRow(c);
      captureRows.set(c.id, tr);
    }
    updateCaptureRow(tr, c);
    // New ones last, as the API lists them (oldest first); rows already
    // there stay put, so a focused Stop button keeps its focus.
    if (!tr.isConnected) body.append(tr);
  }
  for (const [id, tr] of captureRows) {
    if (seen.has(id)) continue;
    const focused = tr.contains(document.activeElement);
    tr.remove();
    captureRows.delete(id);
    if (focused) $('#captures-h').focus();
  }
  let empty = body.querySelector('tr.empty-row');
  if (!list.length && !empty) {
    empty = document.createElement('tr');
    empty.className = 'empty-row';
    const td = document.createElement('td');
    td.colSpan = 7;
    td.className = 'empty';
    td.textContent = 'No capture running.';
    empty.append(td);
    body.append(empty);
  } else if (list.length && empty) {
    empty.remove();
  }
  const st = $('#captures-state');
  if (st.dataset.state === 'error') setText('#captures-state', '', '');
}

function captureRow(c) {
  const tr = document.createElement('tr');
  tr.dataset.id = c.id;
  for (let i = 0; i < 6; i++) tr.append(document.createElement('td'));
  const code = document.createElement('code');
  code.textContent = c.id;
  tr.cells[0].append(code);
  tr.cells[5].className = 'num';
  const td = document.createElement('td');
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'danger stop-capture';
  b.textContent = 'Stop';
  b.setAttribute('aria-label', `Stop capture ${c.id}`);
  b.addEventListener('click', () => stopCapture(c.id, b));
  td.append(b);
  tr.append(td);
  return tr;
}

function updateCaptureRow(tr, c) {
  const names = (c.targets || []).map((t) => t.name || `netns:${t.netns}`);
  const set = (i, s) => {
    if (tr.cells[i].textContent !== s) tr.cells[i].textContent = s;
  };
  set(1, names.join(', '));
  set(2, c.filter || '—');
  set(3, `${c.client} (${c.transport})`);
  set(4, fmtDuration(Date.now() - Date.parse(c.start_time)));
  const ul = document.createElement('ul');
  ul.className = 'ifstats';
  for (const f of c.interfaces || []) {
    const li = document.createElement('li');
    li.dataset.name = f.name;
    li.dataset.received = f.kernel_received;
    li.dataset.delivered = f.packets;
    li.dataset.dropped = f.dropped;
    li.textContent = `${f.name}: ${fmtInt(f.kernel_received)} / ${fmtInt(f.packets)} / ${fmtInt(f.dropped)}`;
    ul.append(li);
  }
  const old = tr.cells[5].firstChild;
  if (!old || old.textContent !== ul.textContent) tr.cells[5].replaceChildren(ul);
}

async function stopCapture(id, button) {
  button.disabled = true;
  try {
    const r = await api(`api/v1/captures/${encodeURIComponent(id)}`, { method: 'DELETE' });
    if (!r.ok) throw new Error(await errorText(r));
    setText('#captures-state', `Capture ${id} stopped.`, 'ok');
  } catch (e) {
    button.disabled = false;
    handleError(e, '#captures-state');
    return;
  }
  refreshCaptures();
}

// ------------------------------------------------ capture in the page

// sess is the capture this page runs, or the last one (kept for Save).
let sess = null;

function newSession(t, nifs, ws) {
  const s = {
    t, nifs, ws,
    hist: new Ring(HISTORY),
    packets: 0, bytes: 0, pausedSkipped: 0,
    raw: [], recent: [], rawBytes: 0, rawCapped: false, saveEnd: 0,
    live: false, ended: false, stoppedByUs: false, paused: false,
    stats: new Map(), started: performance.now(),
    rate: { at: performance.now(), packets: 0, pps: 0 },
  };
  s.parser = new PcapngParser({
    onInterface: (ifc) => {
      if (!s.live && !s.ended) {
        s.live = true;
        setCaptureState();
        refreshCaptures();
      }
    },
    onPacket: (p) => {
      s.packets++;
      s.bytes += p.len;
      if (s.paused) {
        s.pausedSkipped++;
        return;
      }
      const [sec, ns] = p.iface.toTime(p.ts);
      s.hist.push({
        no: s.packets, iface: p.iface, sec, ns, len: p.len, cap: p.cap,
        dir: (p.flags & 3) === 1 ? 'in' : (p.flags & 3) === 2 ? 'out' : '',
        data: p.data.slice(0, KEEP_BYTES), d: null,
      });
    },
    onStats: (st) => s.stats.set(st.iface.id, st),
    onBlock: (end) => {
      if (end <= s.rawBytes) s.saveEnd = end;
    },
  });
  return s;
}

// keepRaw stores a message for Save, up to RAW_LIMIT. Small messages are
// merged now and then, so a Blob of the stream has few parts.
function keepRaw(s, u8) {
  if (s.rawCapped) return;
  let piece = u8;
  if (s.rawBytes + u8.length > RAW_LIMIT) {
    piece = u8.subarray(0, RAW_LIMIT - s.rawBytes);
    s.rawCapped = true;
  }
  s.recent.push(piece);
  s.rawBytes += piece.length;
  if (s.recent.length >= 256) {
    const n = s.recent.reduce((a, c) => a + c.length, 0);
    const m = new Uint8Array(n);
    let o = 0;
    for (const c of s.recent) { m.set(c, o); o += c.length; }
    s.raw.push(m);
    s.recent = [];
  }
}

function captureQuery(t, nifs) {
  const q = new URLSearchParams();
  q.set('container', JSON.stringify(t));
  q.set('nif', nifs.length ? nifs.join('/') : 'all');
  const filter = $('#filter').value.trim();
  if (filter) q.set('filter', filter);
  if ($('#chaste').checked) q.set('chaste', '');
  return q;
}

function startCapture() {
  const t = selectedTarget();
  if (!t) {
    setText('#capture-state', 'Choose a target first.', 'error');
    $('#target').focus();
    return;
  }
  if (sess && !sess.ended) return;
  const nifs = selectedNifs();
  const url = new URL(`capture?${captureQuery(t, nifs)}`, wsBase());
  const protocols = ['packetflix'];
  if (token) protocols.push(`packetflix.token.${base64url(token)}`);
  let ws;
  try {
    ws = new WebSocket(url, protocols);
  } catch (e) {
    setText('#capture-state', `Cannot connect: ${e.message}`, 'error');
    return;
  }
  ws.binaryType = 'arraybuffer';
  const s = newSession(t, nifs, ws);
  sess = s;
  selected = -1;
  follow = true;
  lastDropped = 0;
  for (const row of pool) row.pktNo = 0; // numbers start at 1 again
  $('#pkt-detail').hidden = true;
  grid.scrollTop = 0;
  ws.onmessage = (ev) => {
    if (sess !== s) return;
    const u8 = new Uint8Array(ev.data);
    keepRaw(s, u8);
    s.parser.push(u8);
    if (s.parser.error && !s.stoppedByUs) {
      s.stoppedByUs = true;
      ws.close(1000, 'unreadable stream');
    }
    scheduleRender();
  };
  ws.onclose = (ev) => {
    s.ended = true;
    s.closeCode = ev.code;
    s.closeReason = ev.reason;
    if (sess === s) {
      setCaptureState();
      updateCaptureControls();
      scheduleRender();
      refreshCaptures();
    }
  };
  setCaptureState();
  updateCaptureControls();
  scheduleRender();
}

function stopPageCapture() {
  if (!sess || sess.ended) return;
  sess.stoppedByUs = true;
  sess.ws.close(1000, 'stopped in the page');
  setCaptureState();
}

function togglePause() {
  if (!sess || sess.ended) return;
  sess.paused = !sess.paused;
  if (!sess.paused) follow = true;
  setCaptureState();
  updateCaptureControls();
  scheduleRender();
}

function savePage() {
  const s = sess;
  if (!s || !s.saveEnd) return;
  const parts = [];
  let left = s.saveEnd;
  for (const c of [...s.raw, ...s.recent]) {
    if (left <= 0) break;
    parts.push(c.length <= left ? c : c.subarray(0, left));
    left -= c.length;
  }
  saveBlob(new Blob(parts, { type: 'application/x-pcapng' }), fileName(s.t, ''));
  setText('#download-state', `Saved ${fmtBytes(s.saveEnd)}: ${fmtInt(s.packets)} packets as received${s.rawCapped ? ` (only the first ${fmtBytes(RAW_LIMIT)} of the stream are kept)` : ''}.`);
}

let download = null; // the AbortController of a running download

async function downloadSeconds() {
  if (download) {
    download.abort();
    return;
  }
  const t = selectedTarget();
  if (!t) {
    setText('#download-state', 'Choose a target first.', 'error');
    return;
  }
  const secs = Math.min(3600, Math.max(1, Math.round(Number($('#dl-seconds').value) || 10)));
  const q = captureQuery(t, selectedNifs());
  q.set('duration', `${secs}s`);
  download = new AbortController();
  updateCaptureControls();
  setText('#download-state', `Capturing ${secs} seconds of ${t.name} for the download…`, 'busy');
  try {
    const r = await api(`capture.pcapng?${q}`, { signal: download.signal });
    if (!r.ok) throw new Error(await errorText(r));
    const blob = await r.blob();
    saveBlob(new Blob([blob], { type: 'application/x-pcapng' }), fileName(t, `-${secs}s`));
    const why = r.headers.get('Packetflix-End-Reason');
    setText('#download-state', `Downloaded ${fmtBytes(blob.size)} (${secs} seconds of ${t.name})${why ? `: ${why}` : ''}.`, 'ok');
  } catch (e) {
    if (e.name === 'AbortError') setText('#download-state', 'Download cancelled.', '');
    else handleError(e, '#download-state');
  } finally {
    download = null;
    updateCaptureControls();
  }
}

function closeText(code) {
  return {
    1000: 'normal end', 1001: 'the service is going away', 1006: 'the connection was lost',
    1008: 'refused', 1011: 'internal error in the service',
  }[code] || `code ${code}`;
}

function setCaptureState() {
  const s = sess;
  if (!s) {
    setText('#capture-state', 'No capture running.', 'idle');
    return;
  }
  const what = `${s.t.name}${s.nifs.length ? ` (${s.nifs.join(', ')})` : ''}`;
  if (!s.ended) {
    if (s.stoppedByUs) setText('#capture-state', `Stopping the capture of ${what}…`, 'stopping');
    else if (!s.live) setText('#capture-state', `Connecting to ${what}…`, 'connecting');
    else if (s.paused) setText('#capture-state', `Paused: the list holds still while ${what} is still captured (and kept for Save).`, 'paused');
    else setText('#capture-state', `Live: capturing ${what}.`, 'live');
    return;
  }
  const stats = [...s.stats.values()].map((st) =>
    `${st.iface.name}: ${st.recv ?? '?'} received, ${st.drop ?? '?'} dropped by the kernel`).join('; ');
  const tail = stats ? ` ${stats}.` : '';
  const reason = s.closeReason || closeText(s.closeCode);
  if (s.parser.error) setText('#capture-state', `The stream could not be read (${s.parser.error}); the capture was stopped.`, 'error');
  else if (s.stoppedByUs) setText('#capture-state', `Stopped: ${fmtInt(s.packets)} packets.${tail}`, 'ended');
  else if (s.closeCode === 1000) setText('#capture-state', `The capture ended: ${reason}.${tail}`, 'ended');
  else if (s.closeCode === 1006 && !s.live) {
    setText('#capture-state', `Could not connect to the capture service${token ? ' (is the token right?)' : ''}.`, 'error');
  } else setText('#capture-state', `The capture ended: ${reason} (${s.closeCode}).${tail}`, 'error');
}

function updateCaptureControls() {
  const t = selectedTarget();
  const running = !!sess && !sess.ended;
  $('#start').disabled = running;
  $('#stop').disabled = !running || sess.stoppedByUs;
  const pause = $('#pause');
  pause.disabled = !running;
  pause.setAttribute('aria-pressed', String(!!sess?.paused && running));
  const pauseText = sess?.paused && running ? 'Resume' : 'Pause';
  if (pause.textContent !== pauseText) pause.textContent = pauseText;
  $('#save').disabled = !sess || !sess.saveEnd;
  const secs = Math.min(3600, Math.max(1, Math.round(Number($('#dl-seconds').value) || 10)));
  const dl = $('#download');
  const dlText = download ? 'Cancel download' : `Download ${secs} seconds`;
  if (dl.textContent !== dlText) dl.textContent = dlText;
  dl.disabled = !t && !download;
  const link = $('#wireshark');
  if (t) {
    const nifs = selectedNifs();
    link.href = wiresharkURL(wsBase(), t, nifs.length ? nifs : t['network-interfaces'] || []);
    link.removeAttribute('aria-disabled');
  } else {
    link.removeAttribute('href');
    link.setAttribute('aria-disabled', 'true');
  }
}

// ------------------------------------------------ packet list

const COLS = 9;
let grid, space, rowsEl;
let rowH = 24, headH = 24;
let follow = true;
let selected = -1; // packet number
const pool = [];
let lastDropped = 0;
let renderQueued = false, scrollQueued = false, lastRender = 0;

function measure() {
  const head = grid.querySelector('.grid-head');
  headH = head.getBoundingClientRect().height || 24;
  rowH = head.querySelector('.grid-row').getBoundingClientRect().height || 24;
}

function makeRow() {
  const row = document.createElement('div');
  row.className = 'grid-row';
  row.setAttribute('role', 'row');
  for (let i = 0; i < COLS; i++) {
    const c = document.createElement('span');
    c.setAttribute('role', 'gridcell');
    if (i === 0 || i === 7) c.className = 'r';
    row.append(c);
  }
  row.addEventListener('click', () => {
    if (row.pktNo) select(row.pktNo, false);
  });
  rowsEl.append(row);
  return row;
}

function fillRow(row, p, idx) {
  const sel = p.no === selected;
  if (row.pktNo === p.no && row.isSel === sel) return;
  if (!p.d) p.d = decodePacket(p.iface.link, p.data);
  const d = p.d;
  const cells = row.children;
  const vals = [String(p.no), fmtTime(p.sec, p.ns), p.iface.name, p.dir || d.dirHint, d.src, d.dst, d.proto, String(p.len), d.info];
  for (let i = 0; i < COLS; i++) if (cells[i].textContent !== vals[i]) cells[i].textContent = vals[i];
  cells[8].title = d.info;
  row.id = `pkt-${p.no}`;
  row.setAttribute('aria-rowindex', String(idx + 2));
  row.setAttribute('aria-selected', String(sel));
  row.classList.toggle('odd', p.no % 2 === 1);
  row.pktNo = p.no;
  row.isSel = sel;
}

function renderList() {
  const s = sess;
  const hist = s ? s.hist : null;
  const total = hist ? hist.size : 0;
  if (hist && !follow && hist.dropped > lastDropped) {
    grid.scrollTop = Math.max(0, grid.scrollTop - (hist.dropped - lastDropped) * rowH);
  }
  lastDropped = hist ? hist.dropped : 0;
  space.style.height = `${total * rowH}px`;
  if (grid.getAttribute('aria-rowcount') !== String(total + 1)) grid.setAttribute('aria-rowcount', String(total + 1));
  if (follow && !(s && s.paused)) grid.scrollTop = grid.scrollHeight;
  const top = grid.scrollTop;
  const view = Math.max(0, grid.clientHeight - headH);
  const first = Math.max(0, Math.floor(top / rowH) - OVERSCAN);
  const last = Math.min(total, Math.ceil((top + view) / rowH) + OVERSCAN);
  rowsEl.style.transform = `translateY(${first * rowH}px)`;
  while (pool.length < last - first) pool.push(makeRow());
  for (let i = 0; i < pool.length; i++) {
    const row = pool[i];
    if (first + i >= last) {
      if (!row.hidden) {
        row.hidden = true;
        row.pktNo = 0;
        row.removeAttribute('id');
      }
      continue;
    }
    row.hidden = false;
    fillRow(row, hist.at(first + i), first + i);
  }
  const active = selected > 0 && document.getElementById(`pkt-${selected}`);
  if (active) grid.setAttribute('aria-activedescendant', active.id);
  else grid.removeAttribute('aria-activedescendant');
}

function renderStats() {
  const s = sess;
  if (!s) {
    $('#capture-stats').textContent = '';
    return;
  }
  const now = performance.now();
  if (now - s.rate.at >= 1000) {
    s.rate.pps = ((s.packets - s.rate.packets) * 1000) / (now - s.rate.at);
    s.rate.at = now;
    s.rate.packets = s.packets;
  }
  const parts = [`${fmtInt(s.packets)} packets, ${fmtBytes(s.bytes)}`];
  if (!s.ended) parts.push(`${fmtInt(Math.round(s.rate.pps))} packets/s`);
  parts.push(`listed: the last ${fmtInt(s.hist.size)}`);
  if (s.hist.dropped) parts.push(`${fmtInt(s.hist.dropped)} older ones no longer listed`);
  if (s.pausedSkipped) parts.push(`${fmtInt(s.pausedSkipped)} not listed because the list was paused`);
  parts.push(s.rawCapped ? `Save keeps only the first ${fmtBytes(RAW_LIMIT)}: later packets are not in the file`
    : `${fmtBytes(s.rawBytes)} kept for Save`);
  if (s.parser.error) parts.push(`stream error: ${s.parser.error}`);
  const text = parts.join(' · ');
  const el = $('#capture-stats');
  if (el.textContent !== text) el.textContent = text;
  // For tests and tools: the counts behind the sentence.
  el.dataset.packets = String(s.packets);
  el.dataset.listed = String(s.hist.size);
  el.dataset.unlisted = String(s.hist.dropped);
  el.dataset.paused = String(s.pausedSkipped);
}

function render() {
  renderList();
  renderStats();
  updateCaptureControls();
}

// scheduleRender draws at most every RENDER_EVERY_MS, in an animation frame.
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const wait = Math.max(0, lastRender + RENDER_EVERY_MS - performance.now());
  setTimeout(() => requestAnimationFrame(() => {
    renderQueued = false;
    lastRender = performance.now();
    render();
  }), wait);
}

function onScroll() {
  follow = grid.scrollTop + grid.clientHeight >= grid.scrollHeight - rowH / 2 - 1;
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => {
    scrollQueued = false;
    renderList();
  });
}

function select(no, scroll) {
  const s = sess;
  if (!s) return;
  const idx = s.hist.indexOf(no, (p) => p.no);
  if (idx < 0) return;
  selected = no;
  const p = s.hist.at(idx);
  if (scroll) {
    const top = idx * rowH, view = grid.clientHeight - headH;
    if (top < grid.scrollTop) grid.scrollTop = top;
    else if (top + rowH > grid.scrollTop + view) grid.scrollTop = top + rowH - view;
    follow = idx === s.hist.size - 1;
  } else {
    follow = false;
  }
  showDetail(p);
  renderList();
}

function showDetail(p) {
  if (!p.d) p.d = decodePacket(p.iface.link, p.data);
  $('#pkt-detail').hidden = false;
  $('#pkt-detail-h').textContent = `Packet ${p.no}: ${fmtTime(p.sec, p.ns)}, ${p.iface.name}` +
    `${p.dir ? `, ${p.dir === 'in' ? 'inbound' : 'outbound'}` : ''}, ${p.len} bytes (${p.cap} captured)`;
  const items = p.d.layers.map((l) => {
    const li = document.createElement('li');
    li.textContent = l;
    return li;
  });
  $('#pkt-layers').replaceChildren(...items);
  const lines = [];
  for (let o = 0; o < p.data.length; o += 16) {
    const row = p.data.subarray(o, o + 16);
    const hex = [...row].map(hex2).join(' ').padEnd(47, ' ');
    const asc = [...row].map((c) => (c >= 32 && c < 127 ? String.fromCharCode(c) : '.')).join('');
    lines.push(`${o.toString(16).padStart(4, '0')}  ${hex}  ${asc}`);
  }
  if (p.cap > p.data.length) lines.push(`… the first ${p.data.length} of ${p.cap} captured bytes`);
  $('#pkt-hex').textContent = lines.join('\n');
}

function onGridKey(ev) {
  const s = sess;
  if (!s || !s.hist.size) return;
  const last = s.hist.size - 1;
  let idx = selected > 0 ? s.hist.indexOf(selected, (p) => p.no) : -1;
  const page = Math.max(1, Math.floor((grid.clientHeight - headH) / rowH) - 1);
  switch (ev.key) {
    case 'ArrowDown': idx = idx < 0 ? Math.floor(grid.scrollTop / rowH) : Math.min(last, idx + 1); break;
    case 'ArrowUp': idx = idx < 0 ? Math.floor(grid.scrollTop / rowH) : Math.max(0, idx - 1); break;
    case 'PageDown': idx = Math.min(last, Math.max(0, idx) + page); break;
    case 'PageUp': idx = Math.max(0, idx - page); break;
    case 'Home': idx = 0; break;
    case 'End': idx = last; break;
    case 'Escape':
      selected = -1;
      $('#pkt-detail').hidden = true;
      renderList();
      return;
    default: return;
  }
  ev.preventDefault();
  select(s.hist.at(Math.min(last, Math.max(0, idx))).no, true);
}

// ------------------------------------------------ start

function init() {
  grid = $('#pkt-grid');
  space = $('#pkt-space');
  rowsEl = $('#pkt-rows');
  const hint = document.createElement('span');
  hint.id = 'choose-hint';
  hint.hidden = true;
  hint.textContent = 'Chooses this target for the capture in this page';
  document.body.append(hint);
  measure();
  grid.addEventListener('scroll', onScroll, { passive: true });
  grid.addEventListener('keydown', onGridKey);
  new ResizeObserver(() => {
    measure();
    renderList();
  }).observe(grid);

  initToken();
  $('#target-search').addEventListener('input', filterTargets);
  $('#targets-refresh').addEventListener('click', loadTargets);
  $('#target').addEventListener('change', onTargetChange);
  $('#capture-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    startCapture();
  });
  $('#stop').addEventListener('click', stopPageCapture);
  $('#pause').addEventListener('click', togglePause);
  $('#save').addEventListener('click', savePage);
  $('#download').addEventListener('click', downloadSeconds);
  $('#dl-seconds').addEventListener('input', updateCaptureControls);
  setInterval(() => {
    if (!document.hidden) refreshCaptures();
  }, 2000);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refreshCaptures();
  });
  updateCaptureControls();
  loadService();
}

if (typeof document !== 'undefined' && document.getElementById('pkt-grid')) init();
