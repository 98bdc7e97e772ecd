/** The API token, for servers started with RLHFKIT_API_TOKENS.
 *
 * The browser keeps it in localStorage. The HTTP client (client.ts) sends it as
 * `Authorization: Bearer`; WebSockets, which cannot carry headers from a browser, offer it as the
 * subprotocol `rlhfkit.bearer.<base64url(token)>` next to `rlhfkit` (the server echoes `rlhfkit`),
 * which keeps it out of URLs and logs. A 401 anywhere flips `needed`, and the app shows its sign-in
 * form instead of pages that cannot load; signing in bumps `epoch` so every query and socket
 * starts over with the token. A link ending in `#token=<t>` signs in once (see `consumeFragment`). */

const STORAGE_KEY = "rlhfkit.apiToken";
export const WS_PROTOCOL = "rlhfkit";
export const WS_TOKEN_PREFIX = "rlhfkit.bearer.";

export interface AuthState {
  /** The server answered 401 (or closed a socket for its token): show the sign-in form. */
  needed: boolean;
  /** That happened although a token was stored: it was refused. */
  rejected: boolean;
  /** Bumped on every sign-in: everything keyed on it starts over. */
  epoch: number;
}

let state: AuthState = { needed: false, rejected: false, epoch: 0 };
const listeners = new Set<() => void>();

function set(next: AuthState): void {
  state = next;
  listeners.forEach((fn) => fn());
}

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the token lives as long as the page
  }
}

let memoryToken: string | null = null;

/** base64url without padding, of the token's UTF-8 bytes: a valid subprotocol name for any token. */
export function base64url(text: string): string {
  let bin = "";
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export const auth = {
  token(): string | null {
    const s = storage();
    return s ? s.getItem(STORAGE_KEY) : memoryToken;
  },
  signIn(token: string): void {
    const t = token.trim();
    if (!t) return;
    memoryToken = t;
    storage()?.setItem(STORAGE_KEY, t);
    set({ needed: false, rejected: false, epoch: state.epoch + 1 });
  },
  signOut(): void {
    memoryToken = null;
    storage()?.removeItem(STORAGE_KEY);
    set({ needed: true, rejected: false, epoch: state.epoch + 1 });
  },
  /** The server refused us (401, or a socket closed 1008 for its token). */
  unauthorized(): void {
    if (!state.needed) set({ needed: true, rejected: auth.token() !== null, epoch: state.epoch });
  },
  snapshot(): AuthState {
    return state;
  },
  subscribe(fn: () => void): () => void {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
  /** Headers for a request made outside the generated client (artifact downloads). */
  headers(): Record<string, string> {
    const t = auth.token();
    return t ? { Authorization: `Bearer ${t}` } : {};
  },
  /** Subprotocols to offer on a WebSocket: ours, plus the token when there is one. */
  wsProtocols(): string[] {
    const t = auth.token();
    return t ? [WS_PROTOCOL, WS_TOKEN_PREFIX + base64url(t)] : [WS_PROTOCOL];
  },
  /** `#token=<t>` in the address: sign in with it, then remove it from the address bar (and from
   * history) so it is neither bookmarked nor shared by accident. Returns whether it signed in. */
  consumeFragment(loc: Pick<Location, "hash" | "pathname" | "search"> = window.location,
                  history: Pick<History, "replaceState" | "state"> = window.history): boolean {
    const params = new URLSearchParams(loc.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token === null) return false;
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", `${loc.pathname}${loc.search}${rest ? `#${rest}` : ""}`);
    if (!token.trim()) return false;
    auth.signIn(token);
    return true;
  },
};
