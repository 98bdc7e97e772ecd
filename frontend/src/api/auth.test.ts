import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { auth, base64url } from "./auth";

beforeEach(() => {
  auth.signIn("x"); // a known state: not asking for sign-in ...
  localStorage.clear(); // ... and no token stored
});
afterEach(() => vi.unstubAllGlobals());

describe("auth", () => {
  it("signs in once from #token= and removes it from the address, keeping the rest", () => {
    const replace = vi.fn();
    const ok = auth.consumeFragment({ hash: "#token=s3cr%2Bt&tab=charts", pathname: "/runs/a", search: "?x=1" },
                                    { replaceState: replace, state: null });
    expect(ok).toBe(true);
    expect(auth.token()).toBe("s3cr+t");
    expect(localStorage.getItem("rlhfkit.apiToken")).toBe("s3cr+t");
    expect(replace).toHaveBeenCalledWith(null, "", "/runs/a?x=1#tab=charts");
    expect(auth.consumeFragment({ hash: "", pathname: "/", search: "" }, { replaceState: replace, state: null })).toBe(false);
    expect(replace).toHaveBeenCalledTimes(1);
  });

  it("offers the token to WebSockets as a base64url subprotocol next to 'rlhfkit'", () => {
    expect(auth.wsProtocols()).toEqual(["rlhfkit"]);
    auth.signIn("tök/+?=");
    const [ours, carrier] = auth.wsProtocols();
    expect(ours).toBe("rlhfkit");
    expect(carrier).toMatch(/^rlhfkit\.bearer\.[A-Za-z0-9_-]+$/); // a valid subprotocol token
    expect(carrier).toBe(`rlhfkit.bearer.${base64url("tök/+?=")}`);
    const b64 = carrier!.slice("rlhfkit.bearer.".length).replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    expect(new TextDecoder().decode(bytes)).toBe("tök/+?=");
  });

  it("a 401 asks for sign-in, and says when the stored token was refused", () => {
    const seen: boolean[] = [];
    const off = auth.subscribe(() => seen.push(auth.snapshot().needed));
    auth.unauthorized();
    expect(auth.snapshot()).toMatchObject({ needed: true, rejected: false });
    const epoch = auth.snapshot().epoch;
    auth.signIn("t1");
    expect(auth.snapshot()).toMatchObject({ needed: false, epoch: epoch + 1 });
    auth.unauthorized();
    expect(auth.snapshot()).toMatchObject({ needed: true, rejected: true });
    off();
    expect(seen).toEqual([true, false, true]);
  });
});

describe("the generated client with a token", () => {
  it("sends Authorization: Bearer on every request and turns a 401 into a sign-in request", async () => {
    const seen: (string | null)[] = [];
    vi.stubGlobal("fetch", vi.fn(async (req: Request) => {
      seen.push(req.headers.get("Authorization"));
      return new Response(JSON.stringify({ detail: "missing or invalid bearer token" }), {
        status: seen.length === 1 ? 200 : 401, headers: { "Content-Type": "application/json" } });
    }));
    // Node's Request cannot resolve the client's same-origin paths without a page: give it one
    const NodeRequest = globalThis.Request;
    vi.stubGlobal("Request", class extends NodeRequest {
      constructor(input: RequestInfo | URL, init?: RequestInit) {
        super(typeof input === "string" ? new URL(input, "http://localhost").href : input, init);
      }
    });
    vi.resetModules();
    const { api, unwrap, ApiError } = await import("./client");
    const { auth: fresh } = await import("./auth"); // the module instance the client uses
    fresh.signIn("abc");
    await api.GET("/api/metrics/contract");
    expect(fresh.snapshot().needed).toBe(false);
    await expect(unwrap(api.GET("/api/runs", { params: { query: {} } }))).rejects.toBeInstanceOf(ApiError);
    expect(seen).toEqual(["Bearer abc", "Bearer abc"]);
    expect(fresh.snapshot()).toMatchObject({ needed: true, rejected: true });
  });
});
