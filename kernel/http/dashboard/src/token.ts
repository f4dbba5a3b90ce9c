/**
 * The bearer token: taken once from the URL fragment (`#token=…`, what the kernel prints at start) and
 * then removed from the address bar and history, or typed into the prompt; kept in sessionStorage so a
 * reload in the same tab keeps it and closing the tab forgets it.
 */
const KEY = 'clove.token';

export function takeTokenFromUrl(): string | null {
  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = frag.get('token');
  if (token === null) return null;
  frag.delete('token');
  const rest = frag.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  return token.trim() || null;
}

export function loadToken(): string | null {
  const fromUrl = takeTokenFromUrl();
  if (fromUrl) {
    saveToken(fromUrl);
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function saveToken(token: string): void {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // storage disabled: the token lives as long as the page
  }
}

export function forgetToken(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}
