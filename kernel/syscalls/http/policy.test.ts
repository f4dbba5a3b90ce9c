/**
 * The HTTP family's rules without a network: URL and host normalisation, the domain and method lists,
 * the SSRF address rule and the header policy (docs/protocol.md §5 HTTP).
 */
import { describe, expect, it } from 'vitest';
import { classify, ipText, parseIp } from './addresses.js';
import { addressRefusal, checkHeaders, checkMethod, checkUrl, parseRules } from './policy.js';

const allowedBy = (list: string[], url: string): boolean => {
  try {
    checkUrl(url, parseRules(list));
    return true;
  } catch {
    return false;
  }
};

describe('domain allow-list', () => {
  const list = ['allowed.com', '*.example.org'];

  it('an exact name; `*.` rules are below the domain, never the apex', () => {
    expect(allowedBy(list, 'https://allowed.com/x')).toBe(true);
    expect(allowedBy(list, 'https://ALLOWED.com./x')).toBe(true); // case, trailing dot
    expect(allowedBy(list, 'https://api.example.org/')).toBe(true);
    expect(allowedBy(list, 'https://a.b.example.org/')).toBe(true);
    expect(allowedBy(list, 'https://example.org/')).toBe(false);
    expect(allowedBy(list, 'https://sub.allowed.com/')).toBe(false);
  });

  it('the host checked is the host a browser connects to', () => {
    for (const u of [
      'https://evil.com?.allowed.com',
      'https://evil.com/?.allowed.com',
      'https://evil.com#.allowed.com',
      'https://allowed.com.evil.com/',
      'https://allowed.com@evil.com/',
      'https://allowed.com:pass@evil.com/',
      'https://evil.com\\@allowed.com/',
      'https://evilexample.org/',
      'https://evil.com%2f.example.org/',
      'https://аllowed.com/', // Cyrillic а: xn--llowed-…, not allowed.com
      'https://allowed.com%00.evil.com/',
    ])
      expect(allowedBy(list, u), u).toBe(false);
    // Fullwidth letters are the same name after IDNA mapping: the request goes to allowed.com.
    expect(allowedBy(list, 'https://ａllowed.com/')).toBe(true);
  });

  it('IDN rules are compared in punycode', () => {
    expect(allowedBy(['bücher.de'], 'https://xn--bcher-kva.de/')).toBe(true);
    expect(allowedBy(['bücher.de'], 'https://BÜCHER.de/')).toBe(true);
    expect(allowedBy(['*.bücher.de'], 'https://www.bücher.de/')).toBe(true);
  });

  it('numeric addresses match only a rule that names the address, in any spelling', () => {
    expect(allowedBy(['*.0.0.1', '*.1'], 'http://127.0.0.1/')).toBe(false);
    expect(allowedBy(['localhost'], 'http://127.0.0.1/')).toBe(false);
    for (const u of ['http://127.1/', 'http://2130706433/', 'http://0x7f000001/', 'http://0177.0.0.1/'])
      expect(allowedBy(['127.0.0.1'], u), u).toBe(true);
    expect(allowedBy(['127.0.0.1'], 'http://127.0.0.2/')).toBe(false);
    expect(allowedBy(['10.0.0.0/8'], 'http://10.1.2.3/')).toBe(true);
    expect(allowedBy(['[::1]'], 'http://[0:0::1]/')).toBe(true);
    expect(allowedBy(['::1'], 'http://[::1]:8080/')).toBe(true);
    expect(allowedBy(['127.0.0.1'], 'http://[::ffff:127.0.0.1]/')).toBe(false);
  });

  it('a port in a rule restricts it', () => {
    expect(allowedBy(['localhost:8080'], 'http://localhost:8080/')).toBe(true);
    expect(allowedBy(['localhost:8080'], 'http://localhost:8081/')).toBe(false);
    expect(allowedBy(['localhost:80'], 'http://localhost/')).toBe(true);
    expect(allowedBy(['[::1]:8080'], 'http://[::1]:8080/')).toBe(true);
    expect(allowedBy(['[::1]:8080'], 'http://[::1]:8081/')).toBe(false);
  });

  it('`*` allows any host; an empty list none; only http and https', () => {
    expect(allowedBy(['*'], 'https://anything.example/')).toBe(true);
    expect(allowedBy(['*'], 'http://10.0.0.1/')).toBe(true); // the SSRF rule decides at connect
    expect(allowedBy([], 'https://allowed.com/')).toBe(false);
    for (const u of ['file:///etc/passwd', 'ftp://allowed.com/', 'gopher://allowed.com/', 'data:,x'])
      expect(() => checkUrl(u, parseRules(['*'])), u).toThrow(/only http and https/);
    expect(() => checkUrl('not a url', parseRules(['*']))).toThrow(/not a valid URL/);
    expect(() => checkUrl('http://u:p@allowed.com/', parseRules(['allowed.com']))).toThrow(/credentials/);
  });
});

describe('addresses', () => {
  it('every spelling of a special address is classified', () => {
    const cases: [string, string | undefined][] = [
      ['127.0.0.1', 'loopback'],
      ['127.255.0.9', 'loopback'],
      ['::1', 'loopback'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['::ffff:7f00:1', 'loopback'],
      ['64:ff9b::7f00:1', 'loopback'],
      ['2002:7f00:1::', 'loopback'],
      ['::127.0.0.1', 'loopback'],
      ['10.1.2.3', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.255', 'private'],
      ['192.168.1.1', 'private'],
      ['fd12::1', 'private'],
      ['169.254.1.1', 'link-local'],
      ['fe80::1%eth0', 'link-local'],
      ['100.64.0.1', 'cgnat'],
      ['0.0.0.0', 'unspecified'],
      ['::', 'unspecified'],
      ['224.0.0.1', 'multicast'],
      ['ff02::1', 'multicast'],
      ['255.255.255.255', 'reserved'],
      ['169.254.169.254', 'metadata'],
      ['::ffff:169.254.169.254', 'metadata'],
      ['fd00:ec2::254', 'metadata'],
      ['8.8.8.8', undefined],
      ['172.32.0.1', undefined],
      ['2606:4700::1111', undefined],
      ['::ffff:8.8.8.8', undefined],
    ];
    for (const [a, want] of cases) expect(classify(parseIp(a)!), a).toBe(want);
  });

  it('canonical text', () => {
    expect(ipText(parseIp('0:0:0:0:0:0:0:1')!)).toBe('::1');
    expect(ipText(parseIp('[FD00:EC2:0::254]')!)).toBe('fd00:ec2::254');
    expect(ipText(parseIp('::ffff:127.0.0.1')!)).toBe('::ffff:7f00:1');
    expect(parseIp('127.1')).toBeUndefined();
  });

  it('a special address is allowed only when the network list names it', () => {
    const refused = (list: string[], a: string, port = 80) => addressRefusal(parseRules(list), a, port);
    expect(refused(['*'], '127.0.0.1')).toMatch(/loopback/);
    expect(refused(['*'], '::ffff:127.0.0.1')).toMatch(/loopback/);
    expect(refused(['*'], '169.254.169.254')).toMatch(/metadata/);
    expect(refused(['*'], '8.8.8.8')).toBeUndefined();
    expect(refused(['127.0.0.1'], '127.0.0.1')).toBeUndefined();
    expect(refused(['127.0.0.1'], '::ffff:127.0.0.1')).toBeUndefined();
    expect(refused(['127.0.0.1'], '127.0.0.2')).toMatch(/loopback/);
    expect(refused(['127.0.0.1:8080'], '127.0.0.1', 8080)).toBeUndefined();
    expect(refused(['127.0.0.1:8080'], '127.0.0.1', 8081)).toMatch(/loopback/);
    expect(refused(['10.0.0.0/8'], '10.9.9.9')).toBeUndefined();
    expect(refused(['localhost'], '127.0.0.1')).toMatch(/loopback/); // a name is not an address
    // Metadata only by its exact address, never by a range.
    expect(refused(['169.254.0.0/16'], '169.254.169.254')).toMatch(/metadata/);
    expect(refused(['169.254.169.254'], '169.254.169.254')).toBeUndefined();
  });
});

describe('methods and headers', () => {
  it('methods: a token, case-insensitive list, `*`', () => {
    expect(checkMethod('get', ['GET'])).toBe('GET');
    expect(checkMethod('PATCH', ['*'])).toBe('PATCH');
    expect(() => checkMethod('DELETE', ['get', 'post'])).toThrow(/method not allowed/);
    expect(() => checkMethod('GET', [])).toThrow(/method not allowed/);
    for (const m of ['GET; rm -rf /', "GET' -d 'x", 'GET / HTTP/1.1\r\nHost: evil', '', '$(id)'])
      expect(() => checkMethod(m, ['*']), m).toThrow(/not an HTTP method/);
  });

  it('headers that could smuggle are refused; values without CR/LF/NUL', () => {
    expect(checkHeaders({ 'X-Test': "'; touch /tmp/x; echo '" })).toEqual({
      'x-test': "'; touch /tmp/x; echo '",
    });
    for (const h of [
      'Host',
      'Transfer-Encoding',
      'Connection',
      'Content-Length',
      'Proxy-Authorization',
      'TE',
    ])
      expect(() => checkHeaders({ [h]: 'x' }), h).toThrow(/may not be sent/);
    expect(() => checkHeaders({ 'X-A': 'a\r\nHost: evil' })).toThrow(/not allowed in a header value/);
    expect(() => checkHeaders({ 'X-A': 'a\nb' })).toThrow(/not allowed in a header value/);
    expect(() => checkHeaders({ 'X A': 'a' })).toThrow(/not a header name/);
    expect(() => checkHeaders({ 'X-A\r\nHost': 'a' })).toThrow(/not a header name/);
    const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-${i}`, 'v']));
    expect(() => checkHeaders(many)).toThrow(/more than 100/);
    expect(() => checkHeaders({ 'x-big': 'v'.repeat(40_000) })).toThrow(/larger than/);
  });
});
